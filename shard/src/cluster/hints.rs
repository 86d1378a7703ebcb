//! Durable hinted handoff on one core: the [`HintStore`] state machine, its
//! bytes in a small engine of their own (`<data_dir>/hints-<core>`), and the
//! loop that replays hints to replicas gossip sees up.
//!
//! A hint is synced (the engine's WAL group commit) before the write that
//! produced it finishes, and deleted only after its target acknowledged the
//! replay durably, so a crash at any point replays a hint at worst twice, and
//! replays merge idempotently. A separate engine keeps hints out of the key
//! space: user scans never see them, and streaming a range never ships them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::{Engine, ScanOptions};

use super::Cluster;
use crate::config::Config;
use crate::coordinator::Mutation;
use crate::error::{Error, Result};
use crate::replication::hints::{Hint, HintConfig, HintId, HintMetrics, HintStore};
use crate::runtime::Shard;
use crate::store::{now_ms, Failure, FailureKind};
use crate::topology::{NodeId, NodeStatus};
use crate::versioning::Record;

/// How often the replay loop looks for targets that came back.
const REPLAY_EVERY: Duration = Duration::from_millis(250);

/// One core's hints.
#[derive(Debug)]
pub struct Hints {
    engine: Engine,
    store: RefCell<HintStore<Record>>,
    enabled: bool,
}

fn hint_key(id: HintId) -> [u8; 8] {
    id.0.to_be_bytes()
}

impl Hints {
    /// Opens core `core`'s hints and restores the ones a previous run left.
    pub async fn open(config: &Config, core: usize) -> Result<Hints> {
        // Hints are few and short-lived: small budgets.
        let engine = super::SideEngine {
            name: "hints",
            what: "the hint store",
            budget: 4 << 20,
            cache: 1 << 20,
            max_key: 64,
            max_value: usize::MAX >> 1,
        }
        .open(config, core)
        .await?;
        let hint_config = HintConfig {
            window: config.cluster.hint_window_ms,
            ..HintConfig::default()
        };
        let mut restored = Vec::new();
        let mut after = None;
        loop {
            let page = engine
                .scan(&ScanOptions {
                    start_token: 0,
                    end_token: u64::MAX,
                    after: after.clone(),
                    limit: 1024,
                    ..ScanOptions::default()
                })
                .await
                .map_err(|e| Error::Runtime {
                    what: format!("reading the hints of core {core}"),
                    reason: e.to_string(),
                })?;
            for e in &page.entries {
                let Ok(Some(r)) = engine.get(e.token, &e.key).await else {
                    continue;
                };
                match Hint::<Record>::decode(&r.value) {
                    Ok(h) => restored.push(h),
                    // Written by a newer build: starting would drop it
                    // silently, and the operator must decide.
                    Err(err @ Error::UnsupportedFormat { .. }) => {
                        return Err(Error::Runtime {
                            what: format!(
                                "reading the hints of core {core} in {}",
                                config.node.data_dir.join(format!("hints-{core}")).display()
                            ),
                            reason: err.to_string(),
                        })
                    }
                    // A hint we cannot read is reported and left for an operator:
                    // anti-entropy repairs its target anyway.
                    Err(err) => tracing::error!(core, error = %err, "unreadable hint skipped"),
                }
            }
            match page.cursor {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        if !restored.is_empty() {
            tracing::info!(core, hints = restored.len(), "hints restored");
        }
        Ok(Hints {
            engine,
            store: RefCell::new(HintStore::restore(hint_config, restored)),
            enabled: config.cluster.hinted_handoff,
        })
    }

    /// Keeps `mutation` for `target`, durably: `Ok` only once the hint is
    /// synced (the hint engine's WAL acknowledges after fdatasync), which is
    /// what lets a sloppy-quorum fallback ack it. A hint that cannot be kept
    /// (hinted handoff off, store full, disk error) is logged and refused:
    /// the replica is then brought back by read repair or anti-entropy
    /// instead, and a fallback's refusal is no ack.
    pub async fn store(&self, shard: &Shard, target: NodeId, mutation: Mutation<Record>) -> Result<(), Failure> {
        if !self.enabled {
            return Err(Failure::new(
                FailureKind::Unavailable,
                format!("hinted handoff is off on this node (cluster.hinted_handoff): no hint kept for {target}"),
            ));
        }
        let (id, b) = {
            let mut s = self.store.borrow_mut();
            match s.add(target.clone(), mutation, now_ms()) {
                Ok(h) => {
                    let mut b = Vec::new();
                    match h.encode(&mut b) {
                        Ok(()) => (h.id, b),
                        Err(e) => {
                            let id = h.id;
                            // Not kept in memory either: it could never be made durable.
                            s.take_where(|h| h.id == id);
                            tracing::warn!(core = shard.id, error = %e, "hint not encodable");
                            return Err(Failure::new(FailureKind::TooLarge, format!("hint for {target}: {e}")));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(core = shard.id, %target, error = %e, "hint dropped");
                    return Err(Failure::new(FailureKind::Overloaded, format!("hint for {target}: {e}")));
                }
            }
        };
        if let Err(e) = self.engine.put(id.0, &hint_key(id), &b, &[], 0).await {
            // Left in memory: replayed while this process lives, which is
            // better than nothing, but not durable, so not a success.
            tracing::warn!(core = shard.id, %target, error = %e, "hint not persisted");
            return Err(Failure::new(
                FailureKind::Internal,
                format!("hint for {target} not persisted: {e}"),
            ));
        }
        Ok(())
    }

    async fn forget(&self, id: HintId) {
        if let Err(e) = self.engine.delete(id.0, &hint_key(id), &[]).await {
            tracing::warn!(error = %e, "a delivered hint could not be deleted; it will be replayed again");
        }
    }

    /// Checkpoints the hint engine into `dest` (snapshots: a write held
    /// here for a replica that missed it is restored like any record).
    pub async fn checkpoint(&self, dest: &std::path::Path) -> corekv_engine::Result<()> {
        self.engine.checkpoint(dest).await
    }

    /// Hints pending, per target node.
    pub fn pending_by_target(&self) -> Vec<(String, u64)> {
        let store = self.store.borrow();
        let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for h in store.iter() {
            *counts.entry(h.target.0.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Counters for INFO and metrics.
    pub fn metrics(&self) -> HintMetrics {
        self.store.borrow().metrics()
    }

    /// Closes the hint engine (syncing its WAL).
    pub async fn close(&self) -> Result<()> {
        super::close_side_engine(&self.engine, "the hint store").await
    }
}

/// Replays hints to targets gossip sees up, resends overdue replays and
/// expires old hints, until the node stops.
pub async fn replay_loop(shard: Rc<Shard>, cluster: Rc<Cluster>) {
    loop {
        let stop = shard.stop.clone();
        let tick = glommio::timer::sleep(REPLAY_EVERY);
        futures::pin_mut!(tick);
        if let futures::future::Either::Left(_) = futures::future::select(stop, tick).await {
            return;
        }
        let now = now_ms();
        let view = cluster.view();
        let mut due = Vec::new();
        // The borrow ends with this block, before any await: another task
        // borrowing the store meanwhile would panic.
        let expired = {
            let mut store = cluster.hints.store.borrow_mut();
            for target in store.targets() {
                match view.ring.node(&target) {
                    Some(n) if n.status != NodeStatus::Down => due.extend(store.on_node_up(&target, now)),
                    _ => store.on_node_down(&target),
                }
            }
            let t = store.on_tick(now);
            due.extend(t.resend);
            t.expired
        };
        for id in expired {
            cluster.hints.forget(id).await;
        }
        for hint in due {
            let (s, c) = (shard.clone(), cluster.clone());
            super::spawn_detached(&shard, async move {
                let deadline = now_ms() + 5_000;
                // A plain MUTATE: the target merges it like any replica
                // write, whether this node coordinated the write or held
                // the hint as a sloppy-quorum fallback.
                if super::send_mutation(&s, &c, &hint.target, &hint.mutation, None, deadline).await
                    == super::Delivery::Acked
                    && c.hints.store.borrow_mut().on_ack(hint.id).is_some()
                {
                    c.hints.forget(hint.id).await;
                }
            });
        }
    }
}
