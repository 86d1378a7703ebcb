//! The read path's coordinator state machine.
//!
//! A [`ReadOp`] asks every replica believed alive for its data (not digests:
//! values are small next to a round trip, and full answers make the merge and
//! the repair one step), merges the answers with the version join, answers
//! the client after the level's number of answers, and keeps listening until
//! every replica answered or the deadline passed. Then every replica whose
//! answer differed from the final merge, late ones included, gets the merge
//! back (read repair). Siblings survive the merge, so a read never drops a
//! concurrent write.

use super::consistency::Consistency;
use super::mutation::{Mutation, Versioned};
use super::plan::ReplicaPlan;
use super::{Millis, RequestId};
use crate::error::{Error, Result};
use crate::topology::{NodeId, Token};

/// Everything a read needs to start.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Unique among the coordinator's requests in flight (answers carry it).
    pub id: RequestId,
    /// The key.
    pub key: Vec<u8>,
    /// Its token.
    pub token: Token,
    /// How many answers the client waits for.
    pub consistency: Consistency,
    /// The coordinator's data center (for LOCAL_QUORUM).
    pub local_dc: String,
    /// The replicas; pending ones (not streamed yet) are not asked, and
    /// fallbacks are ignored (a hint is not a replica's data).
    pub plan: ReplicaPlan,
    /// When the request times out.
    pub deadline: Millis,
}

/// A successful read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReply<R> {
    /// The merge of the answers (`None`: no replica has the key).
    pub record: Option<R>,
    /// Counted answers when the client was answered.
    pub answered: usize,
}

/// What a [`ReadOp`] asks its driver to do.
#[derive(Debug)]
pub enum ReadOutput<R> {
    /// Ask `to` for its state of the key ([`ReadOp::key`]).
    Send {
        /// The replica.
        to: NodeId,
    },
    /// Answer the client (exactly once per op).
    Reply(Result<ReadReply<R>>),
    /// Send the merged state to a replica whose answer differed (no ack needed:
    /// anti-entropy catches a lost repair).
    ReadRepair {
        /// The stale replica.
        to: NodeId,
        /// The merged state.
        mutation: Mutation<R>,
    },
}

#[derive(Debug, Clone)]
struct Asked {
    node: NodeId,
    counts: bool,
    /// `Some(digest of the answer)` once answered; the inner `None` is "no record".
    answer: Option<Option<u64>>,
}

/// One read in flight on its coordinator.
#[derive(Debug)]
pub struct ReadOp<R> {
    id: RequestId,
    key: Vec<u8>,
    token: Token,
    consistency: Consistency,
    asked: Vec<Asked>,
    merged: Option<R>,
    required: usize,
    deadline: Millis,
    replied: bool,
    done: bool,
}

impl<R: Versioned> ReadOp<R> {
    /// Starts a read: the op and its first outputs (the requests, or an
    /// immediate `Unavailable` reply, in which case the op is already done).
    pub fn start(req: ReadRequest) -> (Self, Vec<ReadOutput<R>>) {
        let consistency = req.consistency;
        let natural = req.plan.replicas.iter().filter(|r| !r.pending);
        let n = natural.clone().count();
        let local = natural.clone().filter(|r| r.dc == req.local_dc).count();
        let required = consistency.required(n, local);
        let asked: Vec<Asked> = natural
            .filter(|r| !r.believed_down)
            .map(|r| Asked {
                node: r.node.clone(),
                counts: consistency.counts(&r.dc, &req.local_dc),
                answer: None,
            })
            .collect();
        let alive = asked.iter().filter(|a| a.counts).count();
        let mut op = ReadOp {
            id: req.id,
            key: req.key,
            token: req.token,
            consistency,
            asked,
            merged: None,
            required,
            deadline: req.deadline,
            replied: false,
            done: false,
        };
        if alive < required {
            op.replied = true;
            op.done = true;
            let err = Error::Unavailable {
                op: "read",
                consistency,
                alive,
                required,
            };
            return (op, vec![ReadOutput::Reply(Err(err))]);
        }
        let out = op
            .asked
            .iter()
            .map(|a| ReadOutput::Send { to: a.node.clone() })
            .collect();
        (op, out)
    }

    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The key read.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// When the op gives up waiting.
    pub fn deadline(&self) -> Millis {
        self.deadline
    }

    /// Whether the op has nothing left to do.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn answered(&self) -> usize {
        self.asked.iter().filter(|a| a.counts && a.answer.is_some()).count()
    }

    /// `from` answered with its state of the key (`None`: it has none).
    /// Duplicates and unknown senders are ignored.
    pub fn on_response(&mut self, from: &NodeId, record: Option<R>) -> Vec<ReadOutput<R>> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Some(i) = self.asked.iter().position(|a| &a.node == from && a.answer.is_none()) else {
            return out;
        };
        self.asked[i].answer = Some(record.as_ref().map(R::digest));
        if let Some(record) = record {
            let merged = match &self.merged {
                None => Ok(record),
                Some(m) => m.merge(&record),
            };
            match merged {
                Ok(m) => self.merged = Some(m),
                Err(e) => {
                    // Unmergeable states are corruption: answer with the error
                    // and repair nothing rather than guess.
                    self.done = true;
                    if !self.replied {
                        self.replied = true;
                        out.push(ReadOutput::Reply(Err(e)));
                    }
                    return out;
                }
            }
        }
        let answered = self.answered();
        if !self.replied && answered >= self.required {
            self.replied = true;
            out.push(ReadOutput::Reply(Ok(ReadReply {
                record: self.merged.clone(),
                answered,
            })));
        }
        if self.asked.iter().all(|a| a.answer.is_some()) {
            self.finish(&mut out);
        }
        out
    }

    /// Time passed: at the deadline, a client not yet answered gets a
    /// timeout, and whoever answered stale gets repaired.
    pub fn on_tick(&mut self, now: Millis) -> Vec<ReadOutput<R>> {
        let mut out = Vec::new();
        if self.done || now < self.deadline {
            return out;
        }
        if !self.replied {
            self.replied = true;
            out.push(ReadOutput::Reply(Err(Error::Timeout {
                op: "read",
                consistency: self.consistency,
                acked: self.answered(),
                required: self.required,
            })));
        }
        self.finish(&mut out);
        out
    }

    fn finish(&mut self, out: &mut Vec<ReadOutput<R>>) {
        self.done = true;
        let Some(merged) = &self.merged else {
            return;
        };
        let digest = merged.digest();
        for a in &self.asked {
            if matches!(a.answer, Some(d) if d != Some(digest)) {
                out.push(ReadOutput::ReadRepair {
                    to: a.node.clone(),
                    mutation: Mutation {
                        key: self.key.clone(),
                        token: self.token,
                        record: merged.clone(),
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::Replica;
    use super::*;
    use std::collections::BTreeSet;

    /// A grow-only set: the simplest lattice.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Set(BTreeSet<u32>);

    impl Versioned for Set {
        fn merge(&self, other: &Self) -> Result<Self> {
            Ok(Set(self.0.union(&other.0).copied().collect()))
        }
        fn digest(&self) -> u64 {
            self.0
                .iter()
                .fold(0, |h, v| h.wrapping_mul(31).wrapping_add(u64::from(*v) + 1))
        }
        fn encode(&self, _: &mut Vec<u8>) {}
        fn decode(_: &[u8]) -> Result<Self> {
            Ok(Set(BTreeSet::new()))
        }
    }

    fn set(v: &[u32]) -> Option<Set> {
        Some(Set(v.iter().copied().collect()))
    }

    fn req(consistency: Consistency, down: &[&str]) -> ReadRequest {
        ReadRequest {
            id: 1,
            key: b"k".to_vec(),
            token: 9,
            consistency,
            local_dc: "dc1".into(),
            plan: ReplicaPlan {
                replicas: ["a", "b", "c"]
                    .iter()
                    .map(|id| Replica {
                        node: NodeId::from(*id),
                        dc: "dc1".into(),
                        believed_down: down.contains(id),
                        pending: false,
                    })
                    .collect(),
                fallbacks: vec![],
            },
            deadline: 50,
        }
    }

    fn repairs(out: &[ReadOutput<Set>]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                ReadOutput::ReadRepair { to, mutation } => {
                    assert_eq!(mutation.key, b"k");
                    Some(to.0.clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn quorum_merges_and_repairs_late_answers_too() {
        let (mut op, out) = ReadOp::<Set>::start(req(Consistency::Quorum, &[]));
        assert_eq!(out.len(), 3);
        assert!(op.on_response(&NodeId::from("a"), set(&[1])).is_empty());
        let out = op.on_response(&NodeId::from("b"), set(&[1, 2]));
        match &out[..] {
            [ReadOutput::Reply(Ok(r))] => assert_eq!((r.record.clone(), r.answered), (set(&[1, 2]), 2)),
            other => unreachable!("unexpected outputs: {other:?}"),
        }
        // c answers late with something new: the merge grows, a and b are repaired.
        let out = op.on_response(&NodeId::from("c"), set(&[3]));
        assert_eq!(repairs(&out), ["a", "b", "c"]);
        assert!(op.is_done());
    }

    #[test]
    fn missing_key_is_repaired_and_equal_answers_are_not() {
        let (mut op, _) = ReadOp::<Set>::start(req(Consistency::One, &[]));
        op.on_response(&NodeId::from("a"), set(&[1]));
        op.on_response(&NodeId::from("b"), None);
        let out = op.on_response(&NodeId::from("c"), set(&[1]));
        assert_eq!(repairs(&out), ["b"]);
    }

    #[test]
    fn timeout_and_unavailable_say_how_many() {
        let (mut op, _) = ReadOp::<Set>::start(req(Consistency::All, &[]));
        op.on_response(&NodeId::from("a"), set(&[1]));
        op.on_response(&NodeId::from("c"), None);
        let out = op.on_tick(50);
        match &out[0] {
            ReadOutput::Reply(Err(e)) => {
                assert_eq!(
                    e.to_string(),
                    "read at ALL timed out: 2 replica(s) answered, 3 required"
                )
            }
            other => unreachable!("unexpected outputs: {other:?}"),
        }
        assert_eq!(repairs(&out), ["c"]);

        let (op, out) = ReadOp::<Set>::start(req(Consistency::Two, &["a", "c"]));
        assert!(op.is_done());
        assert!(matches!(
            &out[..],
            [ReadOutput::Reply(Err(Error::Unavailable {
                alive: 1,
                required: 2,
                ..
            }))]
        ));
    }
}
