//! Hinted handoff: writes a replica missed, kept by another node and replayed
//! when the replica is seen up again.
//!
//! The [`HintStore`] is a state machine without I/O. The driver persists each
//! hint's bytes ([`Hint::encode`]) when it is added, deletes them when the
//! store says the hint was delivered or expired, and rebuilds the store from
//! the surviving bytes after a restart ([`HintStore::restore`]). A hint is
//! removed only once its target acknowledged the replayed mutation, durably:
//! a replay lost on the way, or a target that crashes before syncing it, just
//! means another replay. Replays are idempotent (mutations merge by join), so
//! a hint replayed twice after a crash forgot its delivery is harmless.
//!
//! Hints older than the window (default 3 hours) expire: a replica down that
//! long is brought back by anti-entropy repair instead, and hints cannot pile
//! up without bound behind a node that never returns. The count of pending
//! hints is bounded too ([`HintConfig::max_pending`]); past it a hint is
//! refused and counted as dropped.
//!
//! ## Format
//!
//! ```text
//! version u8 = 1 | id u64 LE | created_ms u64 LE
//! | target_len u16 LE (<= 1024) | target bytes (UTF-8 node id)
//! | token u64 LE | key_len u32 LE (<= MAX_KEY) | key
//! | record_len u32 LE (<= MAX_RECORD) | record (the Versioned encoding)
//! ```

use std::collections::BTreeMap;

use crate::codec::Reader;
use crate::coordinator::{Millis, Mutation, Versioned};
use crate::error::{Error, Result};
use crate::topology::NodeId;

/// A hint's identity in its store (ascending in creation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HintId(pub u64);

/// A mutation kept for a replica that missed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint<R> {
    /// Its identity; the target's ack names it.
    pub id: HintId,
    /// The replica it is for.
    pub target: NodeId,
    /// What to replay.
    pub mutation: Mutation<R>,
    /// When it was stored (ms, the clock the store's `now` uses).
    pub created: Millis,
}

impl<R: Versioned> Hint<R> {
    const FORMAT_VERSION: u8 = 1;
    /// The longest node id a hint may name.
    pub const MAX_TARGET: usize = 1024;
    /// The longest key a hint may hold.
    pub const MAX_KEY: usize = 1 << 20;
    /// The largest encoded record a hint may hold.
    pub const MAX_RECORD: usize = 64 << 20;

    /// Appends the encoding to `out`. Fails (writing nothing) if a part is
    /// over its limit, so every hint written can be read back.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let target = self.target.0.as_bytes();
        let key = &self.mutation.key;
        let check = |what, len: usize, max: usize| {
            if len > max {
                Err(Error::TooLarge { what, len, max })
            } else {
                Ok(())
            }
        };
        check("hint target", target.len(), Self::MAX_TARGET)?;
        check("hint key", key.len(), Self::MAX_KEY)?;
        out.push(Self::FORMAT_VERSION);
        out.extend_from_slice(&self.id.0.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        // Checked above: at most MAX_TARGET, which fits a u16.
        out.extend_from_slice(&(target.len() as u16).to_le_bytes());
        out.extend_from_slice(target);
        out.extend_from_slice(&self.mutation.token.to_le_bytes());
        // Checked above: at most MAX_KEY, which fits a u32.
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.mutation.record.encode(out);
        let record_len = out.len() - len_at - 4;
        if let Err(e) = check("hint record", record_len, Self::MAX_RECORD) {
            out.truncate(start);
            return Err(e);
        }
        // Checked just above: at most MAX_RECORD, which fits a u32.
        out[len_at..len_at + 4].copy_from_slice(&(record_len as u32).to_le_bytes());
        Ok(())
    }

    /// Decodes all of `buf` (untrusted; never panics).
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf, "hint");
        r.version(Self::FORMAT_VERSION)?;
        let id = HintId(r.u64()?);
        let created = r.u64()?;
        let target = std::str::from_utf8(r.bytes_u16(Self::MAX_TARGET)?).map_err(|_| r.error("target is not UTF-8"))?;
        let target = NodeId(target.to_owned());
        let token = r.u64()?;
        let key = r.bytes_u32(Self::MAX_KEY)?.to_vec();
        let record = R::decode(r.bytes_u32(Self::MAX_RECORD)?)?;
        r.finish()?;
        Ok(Hint {
            id,
            target,
            mutation: Mutation { key, token, record },
            created,
        })
    }
}

/// The hint store's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintConfig {
    /// How long a hint is kept (default 3 hours).
    pub window: Millis,
    /// The most hints pending at once.
    pub max_pending: usize,
    /// How long a replay waits for its ack before it is sent again.
    pub retry: Millis,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            window: 3 * 60 * 60 * 1000,
            max_pending: 1_000_000,
            retry: 10_000,
        }
    }
}

/// The hint store's counters since it was built, and what is pending now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintMetrics {
    /// Hints added.
    pub stored: u64,
    /// Hints whose target acknowledged the replay.
    pub delivered: u64,
    /// Hints dropped at the end of the window, undelivered.
    pub expired: u64,
    /// Hints refused because the store was full.
    pub dropped: u64,
    /// Hints pending now.
    pub pending: usize,
}

#[derive(Debug, Clone)]
struct Entry<R> {
    hint: Hint<R>,
    /// When the last replay went out, if one is awaiting its ack.
    sent: Option<Millis>,
}

/// What a tick of the store did.
#[derive(Debug, Clone)]
pub struct HintTick<R> {
    /// Hints dropped at the end of their window (the driver deletes their bytes).
    pub expired: Vec<HintId>,
    /// Replays whose ack is overdue, to send again.
    pub resend: Vec<Hint<R>>,
}

/// One node's hints for other nodes.
#[derive(Debug, Clone)]
pub struct HintStore<R> {
    config: HintConfig,
    hints: BTreeMap<HintId, Entry<R>>,
    next_id: u64,
    metrics: HintMetrics,
}

impl<R: Versioned> HintStore<R> {
    /// An empty store.
    pub fn new(config: HintConfig) -> Self {
        HintStore {
            config,
            hints: BTreeMap::new(),
            next_id: 1,
            metrics: HintMetrics::default(),
        }
    }

    /// A store holding the hints that survived a restart (decoded from the
    /// bytes the driver kept). None of them is taken as sent.
    pub fn restore(config: HintConfig, hints: impl IntoIterator<Item = Hint<R>>) -> Self {
        let mut store = Self::new(config);
        for hint in hints {
            store.next_id = store.next_id.max(hint.id.0 + 1);
            store.hints.insert(hint.id, Entry { hint, sent: None });
        }
        store
    }

    /// Keeps `mutation` for `target`; the caller persists the returned hint.
    pub fn add(&mut self, target: NodeId, mutation: Mutation<R>, now: Millis) -> Result<&Hint<R>> {
        if self.hints.len() >= self.config.max_pending {
            self.metrics.dropped += 1;
            return Err(Error::HintsFull {
                target,
                pending: self.hints.len(),
                max: self.config.max_pending,
            });
        }
        let id = HintId(self.next_id);
        self.next_id += 1;
        self.metrics.stored += 1;
        let entry = self.hints.entry(id).or_insert(Entry {
            hint: Hint {
                id,
                target,
                mutation,
                created: now,
            },
            sent: None,
        });
        Ok(&entry.hint)
    }

    /// `target` is up (gossip says so): its hints not already awaiting an
    /// ack, to replay now.
    pub fn on_node_up(&mut self, target: &NodeId, now: Millis) -> Vec<Hint<R>> {
        let mut out = Vec::new();
        for e in self.hints.values_mut() {
            if &e.hint.target == target && e.sent.is_none() {
                e.sent = Some(now);
                out.push(e.hint.clone());
            }
        }
        out
    }

    /// `target` went down: replays in flight to it are taken as lost (they
    /// go again at the next [`HintStore::on_node_up`]).
    pub fn on_node_down(&mut self, target: &NodeId) {
        for e in self.hints.values_mut() {
            if &e.hint.target == target {
                e.sent = None;
            }
        }
    }

    /// The target acknowledged the replay of hint `id` (durably): the hint
    /// is done. Returns it (`None` for an unknown or already removed id,
    /// e.g. a duplicated ack).
    pub fn on_ack(&mut self, id: HintId) -> Option<Hint<R>> {
        let e = self.hints.remove(&id)?;
        self.metrics.delivered += 1;
        Some(e.hint)
    }

    /// Time passed: expires old hints and resends overdue replays.
    pub fn on_tick(&mut self, now: Millis) -> HintTick<R> {
        let window = self.config.window;
        let expired: Vec<HintId> = self
            .hints
            .values()
            .filter(|e| now.saturating_sub(e.hint.created) >= window)
            .map(|e| e.hint.id)
            .collect();
        for id in &expired {
            self.hints.remove(id);
        }
        self.metrics.expired += expired.len() as u64;
        let mut resend = Vec::new();
        for e in self.hints.values_mut() {
            if e.sent.is_some_and(|at| now.saturating_sub(at) >= self.config.retry) {
                e.sent = Some(now);
                resend.push(e.hint.clone());
            }
        }
        HintTick { expired, resend }
    }

    /// Removes and returns the hints `pred` selects, e.g. to re-address
    /// them to a key's current replicas after a ring change made their
    /// target no longer one (or made it leave). Not counted as delivered or
    /// expired.
    pub fn take_where(&mut self, mut pred: impl FnMut(&Hint<R>) -> bool) -> Vec<Hint<R>> {
        let ids: Vec<HintId> = self
            .hints
            .values()
            .filter(|e| pred(&e.hint))
            .map(|e| e.hint.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.hints.remove(&id))
            .map(|e| e.hint)
            .collect()
    }

    /// The nodes that have hints pending.
    pub fn targets(&self) -> Vec<NodeId> {
        let mut t: Vec<NodeId> = self.hints.values().map(|e| e.hint.target.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The pending hints, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Hint<R>> {
        self.hints.values().map(|e| &e.hint)
    }

    /// Hints pending.
    pub fn pending(&self) -> usize {
        self.hints.len()
    }

    /// The counters.
    pub fn metrics(&self) -> HintMetrics {
        HintMetrics {
            pending: self.hints.len(),
            ..self.metrics
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record that is just bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Bytes(Vec<u8>);

    impl Versioned for Bytes {
        fn merge(&self, other: &Self) -> Result<Self> {
            Ok(Bytes(self.0.clone().max(other.0.clone())))
        }
        fn digest(&self) -> u64 {
            xxhash_rust::xxh3::xxh3_64(&self.0)
        }
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0);
        }
        fn decode(buf: &[u8]) -> Result<Self> {
            Ok(Bytes(buf.to_vec()))
        }
    }

    fn m(v: u8) -> Mutation<Bytes> {
        Mutation::new(vec![b'k', v], Bytes(vec![v; 3]))
    }

    fn node(id: &str) -> NodeId {
        NodeId::from(id)
    }

    #[test]
    fn replay_needs_an_ack() {
        let mut s = HintStore::new(HintConfig::default());
        let id = s.add(node("b"), m(1), 0).unwrap().id;
        s.add(node("c"), m(2), 0).unwrap();
        let replays = s.on_node_up(&node("b"), 10);
        assert_eq!(replays.len(), 1);
        assert_eq!(replays[0].mutation, m(1));
        assert!(
            s.on_node_up(&node("b"), 11).is_empty(),
            "one replay in flight at a time"
        );
        // The replay was lost: no ack; after the retry interval it goes again.
        assert!(s.on_tick(5_000).resend.is_empty());
        assert_eq!(s.on_tick(10_010).resend.len(), 1);
        // b went down and came back: replayed again.
        s.on_node_down(&node("b"));
        assert_eq!(s.on_node_up(&node("b"), 10_020).len(), 1);
        assert_eq!(s.on_ack(id).unwrap().target, node("b"));
        assert!(s.on_ack(id).is_none(), "a duplicated ack");
        let m = s.metrics();
        assert_eq!((m.stored, m.delivered, m.expired, m.pending), (2, 1, 0, 1));
        assert_eq!(s.targets(), [node("c")]);
    }

    #[test]
    fn hints_expire_after_the_window() {
        let mut s = HintStore::new(HintConfig::default());
        s.add(node("b"), m(1), 1_000).unwrap();
        s.add(node("b"), m(2), 2_000).unwrap();
        let three_hours = 3 * 3600 * 1000;
        assert!(s.on_tick(1_000 + three_hours - 1).expired.is_empty());
        assert_eq!(s.on_tick(1_000 + three_hours).expired, [HintId(1)]);
        let m = s.metrics();
        assert_eq!((m.expired, m.pending), (1, 1));
    }

    #[test]
    fn bounded() {
        let mut s = HintStore::new(HintConfig {
            max_pending: 1,
            ..HintConfig::default()
        });
        s.add(node("b"), m(1), 0).unwrap();
        let err = s.add(node("b"), m(2), 0).unwrap_err();
        assert!(matches!(err, Error::HintsFull { pending: 1, max: 1, .. }));
        assert_eq!(s.metrics().dropped, 1);
    }

    #[test]
    fn survives_a_restart_through_its_bytes() {
        let mut s = HintStore::new(HintConfig::default());
        let mut disk = Vec::new();
        for i in 0..3 {
            let hint = s.add(node("b"), m(i), u64::from(i)).unwrap();
            let mut buf = Vec::new();
            hint.encode(&mut buf).unwrap();
            disk.push(buf);
        }
        let delivered = s.on_node_up(&node("b"), 5)[0].id;
        s.on_ack(delivered);
        disk.remove(0);
        let hints: Vec<Hint<Bytes>> = disk.iter().map(|b| Hint::decode(b).unwrap()).collect();
        let mut r = HintStore::restore(HintConfig::default(), hints);
        assert_eq!(r.pending(), 2);
        assert_eq!(r.on_node_up(&node("b"), 6).len(), 2);
        assert_eq!(
            r.add(node("c"), m(9), 7).unwrap().id,
            HintId(4),
            "ids continue past the restored ones"
        );
        assert_eq!(r.take_where(|h| h.target == node("b")).len(), 2);
        assert_eq!(r.pending(), 1);
    }

    /// The node's own record type goes through a hint unchanged.
    #[test]
    fn round_trips_a_stored_record() {
        use crate::versioning::{Actor, Context, Dvv, Limits, Record, Timestamp, Value};
        let dvv = Dvv::new()
            .update(
                &Context::new(),
                Actor(7),
                Timestamp::new(1_000, 0),
                Value::put(b"v".to_vec()),
                &Limits::default(),
            )
            .unwrap();
        let hint = Hint {
            id: HintId(3),
            target: node("b"),
            mutation: Mutation::new(b"key".to_vec(), Record::Causal(dvv)),
            created: 5,
        };
        let mut buf = Vec::new();
        hint.encode(&mut buf).unwrap();
        assert_eq!(Hint::<Record>::decode(&buf).unwrap(), hint);
        // A damaged record inside an intact frame is refused too: its format
        // version byte follows the header, target "b", token, key "key" and
        // the record length.
        let record_at = 1 + 8 + 8 + 2 + 1 + 8 + 4 + 3 + 4;
        assert_eq!(buf[record_at], Record::FORMAT_VERSION);
        buf[record_at] ^= 0xff;
        assert!(Hint::<Record>::decode(&buf).is_err());
    }

    #[test]
    fn decode_rejects_every_truncation_and_bad_bytes() {
        let hint = Hint {
            id: HintId(7),
            target: node("node-3"),
            mutation: m(4),
            created: 99,
        };
        let mut buf = Vec::new();
        hint.encode(&mut buf).unwrap();
        assert_eq!(Hint::<Bytes>::decode(&buf).unwrap(), hint);
        // The record's length prefix catches a cut inside the record too.
        for cut in 0..buf.len() {
            assert!(Hint::<Bytes>::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        bad[0] = 2;
        assert!(Hint::<Bytes>::decode(&bad).is_err());
        // A length claiming more than is there.
        let mut bad = buf.clone();
        bad[17] = 0xff;
        assert!(Hint::<Bytes>::decode(&bad).is_err());

        let long = Hint {
            target: NodeId("x".repeat(2000)),
            ..hint
        };
        let mut out = vec![1, 2];
        assert!(matches!(
            long.encode(&mut out),
            Err(Error::TooLarge {
                what: "hint target",
                ..
            })
        ));
        assert_eq!(out, [1, 2], "nothing written on failure");
    }
}
