//! The write path's coordinator state machine.
//!
//! A [`WriteOp`] sends the mutation to every replica believed alive (and, in
//! a sloppy quorum, a down replica's copy to a fallback node with a hint for
//! it), answers the client after the level's acknowledgements, and keeps
//! listening until every replica acknowledged (or refused) or the deadline
//! passed. Then it asks for a hint for each replica that has no copy: down,
//! timed out, refused (a full disk, a fenced node), or whose fallback did
//! not acknowledge either. A refusal counts at once: it ends the wait for
//! that replica (its hint comes as soon as the others answered), and when
//! the level can no longer be met the client is told then, not at the
//! deadline.
//!
//! A replica acknowledges only once the write is durable on it (the driver's
//! job), so `W` acknowledgements mean `W` durable copies. A sloppy-quorum
//! fallback acknowledges once its hint is durable, so a hint that makes `W`
//! is synced before the client hears of it; the coordinator's own
//! [`WriteOutput::StoreHint`]s never count toward `W`.
//!
//! During a move, each pending replica adds one to the acknowledgements
//! required (Cassandra's rule): with `P` pending replicas at most `P` of the
//! `W + P` acks come from nodes about to lose the range, so `W` of them are
//! on its future replicas.

use super::consistency::Consistency;
use super::mutation::Mutation;
use super::plan::{Replica, ReplicaPlan};
use super::{Millis, RequestId};
use crate::error::{Error, Result};
use crate::topology::NodeId;

/// Everything a write needs to start.
#[derive(Debug, Clone)]
pub struct WriteRequest<R> {
    /// Unique among the coordinator's requests in flight (acks carry it).
    pub id: RequestId,
    /// The key's new state, already updated by the coordinator.
    pub mutation: Mutation<R>,
    /// How many acknowledgements the client waits for.
    pub consistency: Consistency,
    /// The coordinator's data center (for LOCAL_QUORUM).
    pub local_dc: String,
    /// The replicas and fallbacks.
    pub plan: ReplicaPlan,
    /// Whether a down replica's write may go to a fallback node and count.
    pub sloppy: bool,
    /// When the request times out.
    pub deadline: Millis,
}

/// A successful write's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAck {
    /// Acknowledgements counted when the client was answered.
    pub acked: usize,
    /// Acknowledgements the level required.
    pub required: usize,
}

/// What a [`WriteOp`] asks its driver to do.
#[derive(Debug)]
pub enum WriteOutput<R> {
    /// Send the mutation to `to`, which acknowledges once it is durable.
    /// With `hint_for`, `to` is a sloppy-quorum fallback: it keeps the
    /// mutation as a durable hint for that node (synced before its ack)
    /// instead of applying it.
    Send {
        /// The node.
        to: NodeId,
        /// The mutation.
        mutation: Mutation<R>,
        /// The down replica `to` stands in for.
        hint_for: Option<NodeId>,
    },
    /// Answer the client (exactly once per op).
    Reply(Result<WriteAck>),
    /// Keep a durable hint of the mutation for `target`, which has no copy.
    StoreHint {
        /// The replica that missed the write.
        target: NodeId,
        /// The mutation to replay.
        mutation: Mutation<R>,
    },
}

/// One node the mutation went to.
#[derive(Debug, Clone)]
struct Sent {
    node: NodeId,
    /// Index in `replicas` of the replica this copy is for.
    replica: usize,
    /// Whether its ack counts toward the level.
    counts: bool,
    acked: bool,
    /// It refused the mutation or could not be reached: no ack will come.
    failed: bool,
}

/// One write in flight on its coordinator.
#[derive(Debug)]
pub struct WriteOp<R> {
    id: RequestId,
    consistency: Consistency,
    mutation: Mutation<R>,
    replicas: Vec<Replica>,
    sent: Vec<Sent>,
    required: usize,
    deadline: Millis,
    replied: bool,
    done: bool,
}

impl<R: Clone> WriteOp<R> {
    /// Starts a write: the op and its first outputs (the sends, or an
    /// immediate `Unavailable` reply when too few replicas are believed alive,
    /// in which case nothing is sent and the op is already done).
    pub fn start(req: WriteRequest<R>) -> (Self, Vec<WriteOutput<R>>) {
        let WriteRequest {
            id,
            mutation,
            consistency,
            local_dc,
            plan,
            sloppy,
            deadline,
        } = req;
        let in_scope = |r: &Replica| consistency.counts(&r.dc, &local_dc);
        let natural = plan.replicas.iter().filter(|r| !r.pending);
        let n = natural.clone().count();
        let local = natural.filter(|r| r.dc == local_dc).count();
        let pending = plan.replicas.iter().filter(|r| r.pending && in_scope(r)).count();
        let required = consistency.required(n, local) + pending;

        let mut sent = Vec::with_capacity(plan.replicas.len());
        let mut used = vec![false; plan.fallbacks.len()];
        for (i, r) in plan.replicas.iter().enumerate() {
            if !r.believed_down {
                sent.push(Sent {
                    node: r.node.clone(),
                    replica: i,
                    counts: in_scope(r),
                    acked: false,
                    failed: false,
                });
                continue;
            }
            if !sloppy {
                continue;
            }
            // The first unused fallback in the replica's own data center, so a
            // stand-in never moves a copy (or a LOCAL_QUORUM ack) across DCs.
            if let Some(f) = (0..plan.fallbacks.len()).find(|&f| !used[f] && plan.fallbacks[f].dc == r.dc) {
                used[f] = true;
                sent.push(Sent {
                    node: plan.fallbacks[f].node.clone(),
                    replica: i,
                    counts: in_scope(r),
                    acked: false,
                    failed: false,
                });
            }
        }
        let alive = sent.iter().filter(|s| s.counts).count();
        let mut op = WriteOp {
            id,
            consistency,
            mutation,
            replicas: plan.replicas,
            sent,
            required,
            deadline,
            replied: false,
            done: false,
        };
        if alive < required {
            op.replied = true;
            op.done = true;
            let err = Error::Unavailable {
                op: "write",
                consistency,
                alive,
                required,
            };
            return (op, vec![WriteOutput::Reply(Err(err))]);
        }
        let out = op
            .sent
            .iter()
            .map(|s| {
                let target = &op.replicas[s.replica];
                WriteOutput::Send {
                    to: s.node.clone(),
                    mutation: op.mutation.clone(),
                    hint_for: (s.node != target.node).then(|| target.node.clone()),
                }
            })
            .collect();
        (op, out)
    }

    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// When the op gives up waiting.
    pub fn deadline(&self) -> Millis {
        self.deadline
    }

    /// Whether the op has nothing left to do (the driver drops it).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Acknowledgements required by the level (plus pending replicas).
    pub fn required(&self) -> usize {
        self.required
    }

    /// Counted acknowledgements so far.
    pub fn acked(&self) -> usize {
        self.sent.iter().filter(|s| s.counts && s.acked).count()
    }

    /// `from` acknowledged a durable copy. Duplicates and unknown senders are
    /// ignored (the network may duplicate; a late ack may follow a crash).
    pub fn on_ack(&mut self, from: &NodeId) -> Vec<WriteOutput<R>> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Some(s) = self.sent.iter_mut().find(|s| &s.node == from && !s.acked) else {
            return out;
        };
        s.acked = true;
        let acked = self.acked();
        if !self.replied && acked >= self.required {
            self.replied = true;
            out.push(WriteOutput::Reply(Ok(WriteAck {
                acked,
                required: self.required,
            })));
        }
        if self.sent.iter().all(|s| s.acked || s.failed) {
            self.finish(&mut out);
        }
        out
    }

    /// `from` refused the mutation (a full disk, a fenced node) or could not
    /// be reached: it has no copy and no ack will come. Its hint is asked
    /// for as soon as every other node answered, and a client that can no
    /// longer get the level's acknowledgements is told now. Duplicates,
    /// unknown senders and nodes that already acked are ignored.
    pub fn on_failure(&mut self, from: &NodeId) -> Vec<WriteOutput<R>> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Some(s) = self.sent.iter_mut().find(|s| &s.node == from && !s.acked && !s.failed) else {
            return out;
        };
        s.failed = true;
        let possible = self.sent.iter().filter(|s| s.counts && !s.failed).count();
        if !self.replied && possible < self.required {
            self.replied = true;
            out.push(WriteOutput::Reply(Err(Error::Refused {
                op: "write",
                consistency: self.consistency,
                acked: self.acked(),
                refused: self.sent.iter().filter(|s| s.counts && s.failed).count(),
                required: self.required,
            })));
        }
        if self.sent.iter().all(|s| s.acked || s.failed) {
            self.finish(&mut out);
        }
        out
    }

    /// Time passed: at the deadline, a client not yet answered gets a
    /// timeout, and the replicas without a copy get hints.
    pub fn on_tick(&mut self, now: Millis) -> Vec<WriteOutput<R>> {
        let mut out = Vec::new();
        if self.done || now < self.deadline {
            return out;
        }
        if !self.replied {
            self.replied = true;
            out.push(WriteOutput::Reply(Err(Error::Timeout {
                op: "write",
                consistency: self.consistency,
                acked: self.acked(),
                required: self.required,
            })));
        }
        self.finish(&mut out);
        out
    }

    fn finish(&mut self, out: &mut Vec<WriteOutput<R>>) {
        debug_assert!(self.replied, "a write finishes only after its client was answered");
        self.done = true;
        for (i, r) in self.replicas.iter().enumerate() {
            let has_copy = self.sent.iter().any(|s| s.replica == i && s.acked);
            if !has_copy {
                out.push(WriteOutput::StoreHint {
                    target: r.node.clone(),
                    mutation: self.mutation.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, dc: &str, down: bool) -> Replica {
        Replica {
            node: NodeId::from(id),
            dc: dc.into(),
            believed_down: down,
            pending: false,
        }
    }

    fn request(
        consistency: Consistency,
        replicas: Vec<Replica>,
        fallbacks: Vec<Replica>,
        sloppy: bool,
    ) -> WriteRequest<u32> {
        WriteRequest {
            id: 7,
            mutation: Mutation {
                key: b"k".to_vec(),
                token: 1,
                record: 42,
            },
            consistency,
            local_dc: "dc1".into(),
            plan: ReplicaPlan { replicas, fallbacks },
            sloppy,
            deadline: 100,
        }
    }

    fn three(down: &[&str]) -> Vec<Replica> {
        ["a", "b", "c"]
            .iter()
            .map(|id| replica(id, "dc1", down.contains(id)))
            .collect()
    }

    fn sends(out: &[WriteOutput<u32>]) -> Vec<(String, Option<String>)> {
        out.iter()
            .filter_map(|o| match o {
                WriteOutput::Send { to, hint_for, .. } => Some((to.0.clone(), hint_for.as_ref().map(|h| h.0.clone()))),
                _ => None,
            })
            .collect()
    }

    fn hints(out: &[WriteOutput<u32>]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                WriteOutput::StoreHint { target, .. } => Some(target.0.clone()),
                _ => None,
            })
            .collect()
    }

    fn reply(out: &[WriteOutput<u32>]) -> Option<&Result<WriteAck>> {
        out.iter().find_map(|o| match o {
            WriteOutput::Reply(r) => Some(r),
            _ => None,
        })
    }

    #[test]
    fn quorum_answers_at_two_and_finishes_at_three() {
        let (mut op, out) = WriteOp::start(request(Consistency::Quorum, three(&[]), vec![], false));
        assert_eq!(sends(&out).len(), 3);
        assert!(op.on_ack(&NodeId::from("a")).is_empty());
        assert!(op.on_ack(&NodeId::from("a")).is_empty(), "a duplicate ack counts once");
        let out = op.on_ack(&NodeId::from("c"));
        assert_eq!(
            reply(&out).unwrap().as_ref().unwrap(),
            &WriteAck { acked: 2, required: 2 }
        );
        assert!(!op.is_done());
        let out = op.on_ack(&NodeId::from("b"));
        assert!(
            out.is_empty() && op.is_done(),
            "all three acked: no hint, no second reply"
        );
    }

    #[test]
    fn unavailable_sends_nothing() {
        let (op, out) = WriteOp::start(request(Consistency::Quorum, three(&["a", "b"]), vec![], false));
        assert!(op.is_done());
        assert_eq!(out.len(), 1);
        let err = reply(&out).unwrap().as_ref().unwrap_err();
        assert!(matches!(
            err,
            Error::Unavailable {
                alive: 1,
                required: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "write at QUORUM unavailable: 1 replica(s) believed alive, 2 required"
        );
    }

    #[test]
    fn timeout_says_how_many_answered_and_hints_the_rest() {
        let (mut op, _) = WriteOp::start(request(Consistency::All, three(&[]), vec![], false));
        op.on_ack(&NodeId::from("b"));
        assert!(op.on_tick(99).is_empty());
        let out = op.on_tick(100);
        let err = reply(&out).unwrap().as_ref().unwrap_err();
        assert_eq!(
            err.to_string(),
            "write at ALL timed out: 1 replica(s) answered, 3 required"
        );
        assert_eq!(hints(&out), ["a", "c"]);
        assert!(op.is_done());
        assert!(
            op.on_ack(&NodeId::from("a")).is_empty(),
            "a late ack after the end is ignored"
        );
    }

    #[test]
    fn a_refusing_replica_is_hinted_at_once_and_quorum_still_answers() {
        let (mut op, _) = WriteOp::start(request(Consistency::Quorum, three(&[]), vec![], false));
        assert!(op.on_failure(&NodeId::from("c")).is_empty(), "two can still ack");
        assert!(op.on_ack(&NodeId::from("a")).is_empty());
        let out = op.on_ack(&NodeId::from("b"));
        assert_eq!(
            reply(&out).unwrap().as_ref().unwrap(),
            &WriteAck { acked: 2, required: 2 }
        );
        assert_eq!(
            hints(&out),
            ["c"],
            "every node answered: c's hint now, not at the deadline"
        );
        assert!(op.is_done());
    }

    #[test]
    fn refusals_that_make_the_level_impossible_answer_before_the_deadline() {
        let (mut op, _) = WriteOp::start(request(Consistency::All, three(&[]), vec![], false));
        op.on_ack(&NodeId::from("a"));
        let out = op.on_failure(&NodeId::from("b"));
        let err = reply(&out).unwrap().as_ref().unwrap_err();
        assert_eq!(
            err.to_string(),
            "write at ALL failed: 1 replica(s) refused it or could not be reached, 1 acknowledged, 3 required (it may still apply)"
        );
        assert!(!op.is_done(), "c may still ack");
        assert!(
            op.on_failure(&NodeId::from("b")).is_empty(),
            "a duplicate refusal counts once"
        );
        let out = op.on_ack(&NodeId::from("c"));
        assert!(reply(&out).is_none(), "one answer per op");
        assert_eq!(hints(&out), ["b"]);
        assert!(op.is_done());
        assert!(op.on_failure(&NodeId::from("a")).is_empty(), "after the end: ignored");
    }

    #[test]
    fn down_replica_gets_a_hint_without_sloppy() {
        let fallbacks = vec![replica("d", "dc1", false)];
        let (mut op, out) = WriteOp::start(request(Consistency::Two, three(&["b"]), fallbacks, false));
        assert_eq!(sends(&out), [("a".into(), None), ("c".into(), None)]);
        op.on_ack(&NodeId::from("a"));
        let out = op.on_ack(&NodeId::from("c"));
        assert!(reply(&out).unwrap().is_ok());
        assert_eq!(
            hints(&out),
            ["b"],
            "all sends acked: the down replica's hint right away"
        );
        assert!(op.is_done());
    }

    #[test]
    fn sloppy_quorum_counts_the_fallback() {
        let fallbacks = vec![
            replica("x", "dc2", false),
            replica("d", "dc1", false),
            replica("e", "dc1", false),
        ];
        let (mut op, out) = WriteOp::start(request(Consistency::All, three(&["a", "c"]), fallbacks.clone(), true));
        // In replica order; fallbacks in the replica's DC, in ring order, one per down replica.
        assert_eq!(
            sends(&out),
            [
                ("d".into(), Some("a".into())),
                ("b".into(), None),
                ("e".into(), Some("c".into()))
            ]
        );
        op.on_ack(&NodeId::from("b"));
        op.on_ack(&NodeId::from("d"));
        let out = op.on_tick(100);
        assert!(matches!(
            reply(&out).unwrap(),
            Err(Error::Timeout {
                acked: 2,
                required: 3,
                ..
            })
        ));
        assert_eq!(hints(&out), ["c"], "a's fallback holds a's hint; c's did not ack");

        // Without sloppy the same request is unavailable.
        let (_, out) = WriteOp::start(request(Consistency::All, three(&["a", "c"]), fallbacks, false));
        assert!(matches!(
            reply(&out).unwrap(),
            Err(Error::Unavailable {
                alive: 1,
                required: 3,
                ..
            })
        ));
    }

    #[test]
    fn local_quorum_counts_local_acks_only() {
        let replicas = vec![
            replica("a", "dc1", false),
            replica("b", "dc2", false),
            replica("c", "dc1", false),
        ];
        let (mut op, out) = WriteOp::start(request(Consistency::LocalQuorum, replicas, vec![], false));
        assert_eq!(sends(&out).len(), 3, "every replica gets the write");
        assert_eq!(op.required(), 2);
        assert!(reply(&op.on_ack(&NodeId::from("b"))).is_none());
        assert!(reply(&op.on_ack(&NodeId::from("a"))).is_none());
        assert!(reply(&op.on_ack(&NodeId::from("c"))).unwrap().is_ok());
    }

    #[test]
    fn pending_replica_raises_the_bar() {
        let mut replicas = three(&[]);
        replicas.push(Replica {
            pending: true,
            ..replica("new", "dc1", false)
        });
        let (mut op, out) = WriteOp::start(request(Consistency::One, replicas, vec![], false));
        assert_eq!(sends(&out).len(), 4);
        assert_eq!(op.required(), 2);
        assert!(reply(&op.on_ack(&NodeId::from("a"))).is_none());
        assert!(reply(&op.on_ack(&NodeId::from("new"))).unwrap().is_ok());
        let out = op.on_tick(100);
        assert_eq!(hints(&out), ["b", "c"]);
    }
}
