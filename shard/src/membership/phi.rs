//! The phi-accrual failure detector (Hayashibara et al., 2004), pure: time is
//! passed in as milliseconds, nothing reads a clock.
//!
//! Per peer it keeps a bounded window of heartbeat inter-arrival times. phi is
//! `-log10(P(a heartbeat arrives later than now))` under a distribution fitted
//! to the window: phi = 8 means "if the peer were alive, a gap this long would
//! happen once in 10^8". A peer is convicted when phi exceeds the threshold.
//!
//! Two distributions:
//! - [`Distribution::Exponential`] (Cassandra's): `phi = t / (mean * ln 10)`.
//!   Heartbeats that travel by gossip arrive in irregular bursts; the
//!   exponential tail is wide enough not to flap on them. With threshold 8 it
//!   convicts after about `18.4 x mean` of silence.
//! - [`Distribution::Normal`] (the paper's, as Akka implements it): mean and
//!   standard deviation of the window, the deviation floored at
//!   `min_std_dev_ms`. It convicts far sooner (a few deviations past the mean)
//!   but needs regular arrivals: direct heartbeats, not gossip.
//!
//! Like Cassandra, a window starts with one `initial_interval_ms` sample (err
//! high until real samples come in) and never records a gap longer than
//! `max_interval_ms`: a peer that is often unreachable that long should be
//! convicted quickly, not learned as normal.

use std::collections::{HashMap, VecDeque};

use crate::topology::NodeId;

/// The inter-arrival distribution phi is computed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Cassandra's: only the mean matters.
    Exponential,
    /// The paper's and Akka's: mean and standard deviation.
    Normal,
}

/// Detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PhiConfig {
    /// Convict when phi exceeds this (Cassandra's and the default: 8).
    pub threshold: f64,
    /// Inter-arrival samples kept per peer (a limit on memory: 1000, as Cassandra).
    pub window: usize,
    /// The first sample of a new window: 2 gossip intervals.
    pub initial_interval_ms: u32,
    /// Longer gaps are not recorded (see the module docs): 2 gossip intervals.
    pub max_interval_ms: u32,
    /// Floor of the standard deviation ([`Distribution::Normal`] only).
    pub min_std_dev_ms: f64,
    /// The distribution.
    pub distribution: Distribution,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            window: 1000,
            initial_interval_ms: 2000,
            max_interval_ms: 2000,
            min_std_dev_ms: 100.0,
            distribution: Distribution::Exponential,
        }
    }
}

/// Inter-arrival statistics of one peer.
#[derive(Debug, Clone)]
pub struct ArrivalWindow {
    /// Last arrival, ms.
    last_ms: u64,
    /// Samples in ms: u32 holds 49 days, and the window of a big cluster holds
    /// millions of them, so half the size of u64 matters.
    samples: VecDeque<u32>,
    /// Running sums over `samples`, exact (integers), so they never drift.
    sum: u64,
    sum_sq: u128,
}

impl ArrivalWindow {
    /// A window whose first heartbeat arrived at `now_ms`.
    pub fn new(now_ms: u64, config: &PhiConfig) -> Self {
        let mut w = ArrivalWindow {
            last_ms: now_ms,
            samples: VecDeque::new(),
            sum: 0,
            sum_sq: 0,
        };
        w.push(config.initial_interval_ms, config.window);
        w
    }

    fn push(&mut self, sample: u32, window: usize) {
        // A zero window would leave no mean; one sample is the least.
        while self.samples.len() >= window.max(1) {
            if let Some(old) = self.samples.pop_front() {
                self.sum -= u64::from(old);
                self.sum_sq -= u128::from(old) * u128::from(old);
            }
        }
        self.samples.push_back(sample);
        self.sum += u64::from(sample);
        self.sum_sq += u128::from(sample) * u128::from(sample);
    }

    /// Records a heartbeat arrival at `now_ms`.
    pub fn arrived(&mut self, now_ms: u64, config: &PhiConfig) {
        let gap = now_ms.saturating_sub(self.last_ms);
        if gap <= u64::from(config.max_interval_ms) {
            // gap <= max_interval_ms, a u32.
            self.push(gap as u32, config.window);
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Mean inter-arrival time, ms.
    pub fn mean(&self) -> f64 {
        // Never empty: `new` pushes a sample and `push` keeps at least one.
        self.sum as f64 / self.samples.len().max(1) as f64
    }

    /// Standard deviation of the inter-arrival times, ms.
    pub fn std_dev(&self) -> f64 {
        let n = self.samples.len().max(1) as f64;
        let mean = self.mean();
        (self.sum_sq as f64 / n - mean * mean).max(0.0).sqrt()
    }

    /// The last arrival, ms.
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the window holds no sample (never, once built).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// phi at `now_ms`.
    pub fn phi(&self, now_ms: u64, config: &PhiConfig) -> f64 {
        let t = now_ms.saturating_sub(self.last_ms) as f64;
        // A zero mean (all samples 0 ms) would make every gap infinitely
        // suspicious; 1 ms is the clock's resolution.
        let mean = self.mean().max(1.0);
        match config.distribution {
            Distribution::Exponential => t / (mean * std::f64::consts::LN_10),
            Distribution::Normal => {
                let sd = self.std_dev().max(config.min_std_dev_ms).max(1e-3);
                normal_phi(t, mean, sd)
            }
        }
    }
}

/// `-log10(1 - F(t))` for a normal `F`, by the logistic approximation of the
/// normal CDF that Akka uses, `1 - F = 1 / (1 + exp(z))` with
/// `z = y (1.5976 + 0.070566 y^2)`, `y = (t - mean) / sd` (error below 1e-4).
/// Written as `log10(1 + exp(z))`, split on the sign of `z` so that neither
/// `exp` overflows nor `1 - F` underflows: phi stays finite however long the
/// silence.
fn normal_phi(t: f64, mean: f64, sd: f64) -> f64 {
    let y = (t - mean) / sd;
    let z = y * (1.5976 + 0.070566 * y * y);
    let softplus = if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    };
    softplus / std::f64::consts::LN_10
}

/// The detector: one [`ArrivalWindow`] per peer.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    peers: HashMap<NodeId, ArrivalWindow>,
}

impl PhiAccrual {
    /// A detector with no peers.
    pub fn new(config: PhiConfig) -> Self {
        PhiAccrual {
            config,
            peers: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// Records a heartbeat from `peer` at `now_ms` (the first one opens its window).
    pub fn heartbeat(&mut self, peer: &NodeId, now_ms: u64) {
        match self.peers.get_mut(peer) {
            Some(w) => w.arrived(now_ms, &self.config),
            None => {
                self.peers
                    .insert(peer.clone(), ArrivalWindow::new(now_ms, &self.config));
            }
        }
    }

    /// phi of `peer` at `now_ms`; 0 for a peer never heard from.
    pub fn phi(&self, peer: &NodeId, now_ms: u64) -> f64 {
        self.peers.get(peer).map_or(0.0, |w| w.phi(now_ms, &self.config))
    }

    /// Whether `peer` is above the threshold at `now_ms`.
    pub fn convicts(&self, peer: &NodeId, now_ms: u64) -> bool {
        self.phi(peer, now_ms) > self.config.threshold
    }

    /// Every peer above the threshold at `now_ms`, in no particular order.
    /// One pass over the windows, no lookups: the gossiper checks the whole
    /// cluster on every tick.
    pub fn convicted(&self, now_ms: u64) -> impl Iterator<Item = &NodeId> {
        self.peers
            .iter()
            .filter(move |(_, w)| w.phi(now_ms, &self.config) > self.config.threshold)
            .map(|(id, _)| id)
    }

    /// Forgets `peer` (it restarted, so its old rhythm means nothing, or left).
    pub fn remove(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// The window of `peer`.
    pub fn window(&self, peer: &NodeId) -> Option<&ArrivalWindow> {
        self.peers.get(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> NodeId {
        NodeId::from("p")
    }

    #[test]
    fn exponential_matches_cassandra() {
        let mut d = PhiAccrual::new(PhiConfig::default());
        assert_eq!(d.phi(&id(), 5), 0.0, "unknown peer");
        // Arrivals every 1000 ms: window = [2000 (initial), 1000 x 9], mean 1100.
        for i in 0..10 {
            d.heartbeat(&id(), i * 1000);
        }
        let w = d.window(&id()).unwrap();
        assert_eq!((w.len(), w.mean()), (10, 1100.0));
        let last = 9000;
        assert_eq!(d.phi(&id(), last), 0.0);
        let phi = d.phi(&id(), last + 1100);
        assert!((phi - 1.0 / std::f64::consts::LN_10).abs() < 1e-12, "{phi}");
        // Threshold 8: convicted after 8 * ln 10 * mean = 20.26 s of silence.
        let silence = 8.0 * std::f64::consts::LN_10 * 1100.0;
        assert!(!d.convicts(&id(), last + silence as u64 - 1));
        assert!(d.convicts(&id(), last + silence as u64 + 1));
    }

    #[test]
    fn window_is_bounded_and_long_gaps_are_skipped() {
        let config = PhiConfig {
            window: 4,
            ..PhiConfig::default()
        };
        let mut w = ArrivalWindow::new(0, &config);
        for t in [100, 200, 300, 400, 500] {
            w.arrived(t, &config);
        }
        assert_eq!((w.len(), w.mean()), (4, 100.0), "the initial 2000 aged out");
        w.arrived(60_500, &config);
        assert_eq!((w.len(), w.mean()), (4, 100.0), "a 60 s gap is not learned");
        assert_eq!(w.phi(60_500, &config), 0.0, "but it does count as an arrival");
    }

    #[test]
    fn normal_is_sharper() {
        let config = PhiConfig {
            distribution: Distribution::Normal,
            ..PhiConfig::default()
        };
        let mut d = PhiAccrual::new(config);
        for i in 0..200u64 {
            // 1000 ms +- 50: the deviation floor (100 ms) applies.
            d.heartbeat(&id(), i * 1000 + (i % 3) * 50);
        }
        let last = 199 * 1000 + 50;
        let at = |ms: u64| d.phi(&id(), last + ms);
        assert!(at(500) < 0.5);
        assert!((at(1000) - 0.30).abs() < 0.05, "{}", at(1000));
        assert!(!d.convicts(&id(), last + 1500));
        assert!(d.convicts(&id(), last + 2000), "{}", at(2000));
        assert_eq!(d.convicted(last + 1500).count(), 0);
        assert_eq!(d.convicted(last + 2000).collect::<Vec<_>>(), vec![&id()]);
        d.remove(&id());
        assert_eq!(d.phi(&id(), last + 9000), 0.0);
    }

    proptest! {
        /// phi never decreases while the peer is silent, for both distributions;
        /// the running sums agree with a recomputation.
        #[test]
        fn phi_grows_with_silence(
            gaps in proptest::collection::vec(0u64..3000, 1..50),
            normal: bool,
            window in 1usize..20,
        ) {
            let config = PhiConfig {
                window,
                distribution: if normal { Distribution::Normal } else { Distribution::Exponential },
                ..PhiConfig::default()
            };
            let mut w = ArrivalWindow::new(0, &config);
            let mut now = 0;
            for g in &gaps {
                now += g;
                w.arrived(now, &config);
            }
            prop_assert!(w.len() <= window && !w.is_empty());
            let mean = w.samples.iter().map(|&s| f64::from(s)).sum::<f64>() / w.len() as f64;
            prop_assert!((w.mean() - mean).abs() < 1e-9);
            let mut prev = w.phi(now, &config);
            prop_assert!(prev >= 0.0 && prev.is_finite());
            for step in 1..100u64 {
                let phi = w.phi(now + step * 397, &config);
                prop_assert!(phi >= prev - 1e-9 && phi.is_finite(), "{} then {}", prev, phi);
                prev = phi;
            }
        }
    }
}
