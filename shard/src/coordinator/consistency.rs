//! Consistency levels: how many replicas must answer a request.

use std::fmt;

/// How many replicas must acknowledge a write or answer a read before the
/// coordinator answers the client. Chosen per request.
///
/// With `N` replicas, a write at level `W` and a read at level `R` overlap in
/// at least one replica when `W + R > N` (QUORUM + QUORUM, ONE + ALL): that is
/// what makes a read see an acknowledged write. Lower levels trade that for
/// latency and availability; anti-entropy still converges the replicas.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// A majority of the key's replicas: `N / 2 + 1`.
    Quorum,
    /// Every replica.
    All,
    /// A majority of the key's replicas in the coordinator's data center,
    /// counting only answers from that data center, so a request never waits
    /// on a WAN round trip.
    LocalQuorum,
}

impl Consistency {
    /// Every level, for tests and simulations that cycle through them.
    pub const ALL_LEVELS: [Consistency; 5] = [
        Consistency::One,
        Consistency::Two,
        Consistency::Quorum,
        Consistency::All,
        Consistency::LocalQuorum,
    ];

    /// Answers required with `replicas` replicas of which `local` are in the
    /// coordinator's data center.
    ///
    /// The result may exceed the replicas there are (TWO with one replica,
    /// LOCAL_QUORUM with no local replica): such a request is unavailable,
    /// which is the honest answer, rather than silently weaker.
    pub fn required(self, replicas: usize, local: usize) -> usize {
        debug_assert!(local <= replicas);
        match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Quorum => replicas / 2 + 1,
            Consistency::All => replicas.max(1),
            Consistency::LocalQuorum => local / 2 + 1,
        }
    }

    /// Whether an answer from a replica in data center `dc` counts toward the
    /// level, for a coordinator in `local_dc`.
    pub fn counts(self, dc: &str, local_dc: &str) -> bool {
        self != Consistency::LocalQuorum || dc == local_dc
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::One => "ONE",
            Consistency::Two => "TWO",
            Consistency::Quorum => "QUORUM",
            Consistency::All => "ALL",
            Consistency::LocalQuorum => "LOCAL_QUORUM",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_answers() {
        use Consistency::*;
        let table = [
            // (level, N, local, required)
            (One, 3, 3, 1),
            (Two, 3, 3, 2),
            (Quorum, 3, 3, 2),
            (Quorum, 5, 5, 3),
            (Quorum, 4, 4, 3),
            (All, 3, 3, 3),
            (LocalQuorum, 6, 3, 2),
            (LocalQuorum, 3, 1, 1),
            // No local replica: one is still required, so the request is unavailable.
            (LocalQuorum, 3, 0, 1),
            (Two, 1, 1, 2),
        ];
        for (level, n, local, want) in table {
            assert_eq!(level.required(n, local), want, "{level} with N={n}, local={local}");
        }
        assert!(LocalQuorum.counts("dc1", "dc1"));
        assert!(!LocalQuorum.counts("dc2", "dc1"));
        assert!(Quorum.counts("dc2", "dc1"));
        assert_eq!(LocalQuorum.to_string(), "LOCAL_QUORUM");
    }

    /// W + R > N for the pairs that promise read-your-writes.
    #[test]
    fn overlapping_pairs() {
        for n in 1..=7 {
            let q = Consistency::Quorum.required(n, n);
            assert!(2 * q > n);
            assert!(Consistency::One.required(n, n) + Consistency::All.required(n, n) > n);
        }
    }
}
