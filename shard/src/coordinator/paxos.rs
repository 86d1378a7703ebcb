//! Cluster-wide compare-and-set: one Paxos register per key among its replicas.
//!
//! The message flow is Cassandra's lightweight transactions (prepare/promise
//! with a ballot, read, propose/accept, commit); the rules are CASPaxos
//! (Rystsov, 2018), which make every round a complete read-modify-write of
//! the register:
//!
//! 1. Prepare: the proposer picks a ballot above any it has seen and asks the
//!    replicas to promise to ignore lower ones. Each promise carries the
//!    replica's accepted `(ballot, value)`.
//! 2. Read: with a majority of promises, the register's current value is the
//!    accepted value with the highest ballot (none: the register is empty).
//! 3. Propose: the proposer applies the command to that value and asks the
//!    replicas to accept the result. A condition that fails still proposes the
//!    value it read, unchanged: that value may have been accepted by a
//!    minority only, and re-proposing it is what makes the failed CAS (and a
//!    read) linearizable rather than a look at a value that may yet vanish.
//! 4. Commit: once a majority accepted, the value is chosen; the client gets
//!    its answer and every replica hears the outcome (only an optimisation:
//!    it lets replicas that missed the proposal catch up).
//!
//! Safety needs two things of the driver: ballots are never reused (a
//! [`BallotClock`] per process, whose node tag is unique per process start),
//! and a replica's [`Acceptor`] state is durable before it replies.
//!
//! A proposal rejected before a majority accepted it may still be chosen
//! later by another proposer that reads it, so the op does not retry after
//! proposing: it answers with a timeout (outcome unknown), as Cassandra does.
//! Rejected prepares are retried with a higher ballot after a backoff.
//!
//! A refused proposal is answered only after a backoff too (per proposer,
//! like the prepare's). The usual refusal is a duel: another proposer
//! prepared between this one's prepare and its propose. Answered at once,
//! the client's next operation prepared again at once, with a ballot above
//! the rival's (ballots follow the clock), and refused the rival's proposal
//! in turn: three clients on one key could stay in that cycle, every
//! operation refused, for as long as they kept sending (seen on a loaded
//! machine, where the window between prepare and propose is a few fsyncs
//! wide). Stepping back lets the rival finish its round.
//!
//! Changing a key's replica set while a CAS is in flight is not handled
//! (Cassandra has the same limit before its Paxos v2): moves should drain CAS.

use super::consistency::Consistency;
use super::plan::Replica;
use super::{Millis, RequestId};
use crate::error::{Error, Result};
use crate::topology::NodeId;

/// A register's value: `None` when empty (never written, or deleted).
pub type CasValue = Option<Vec<u8>>;

/// The most bytes a CAS value may have (a bound on the Paxos state).
pub const MAX_CAS_VALUE: usize = 1 << 20;

/// A Paxos ballot. Ordered by counter, then by the proposer's node tag, so
/// two proposers never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    /// Time-derived counter.
    pub counter: u64,
    /// The proposer's tag (unique per node and process start).
    pub node: u64,
}

/// Issues one node's ballots: above the current time, above every ballot
/// this clock issued and above every ballot it was told of.
#[derive(Debug, Clone)]
pub struct BallotClock {
    node: u64,
    last: u64,
}

impl BallotClock {
    /// Ballots per millisecond before the counter runs ahead of the clock.
    /// Tying the counter to time keeps a restarted node's ballots above the
    /// ones it issued before, without storing the last one.
    const PER_MS: u64 = 1 << 10;

    /// A clock for the node (process start) tagged `node`.
    pub fn new(node: u64) -> Self {
        BallotClock { node, last: 0 }
    }

    /// A new ballot, higher than `at_least`.
    pub fn next(&mut self, now: Millis, at_least: Ballot) -> Ballot {
        let counter = now
            .saturating_mul(Self::PER_MS)
            .max(self.last.saturating_add(1))
            .max(at_least.counter.saturating_add(1));
        self.last = counter;
        Ballot {
            counter,
            node: self.node,
        }
    }
}

/// A proposer's message to a replica's acceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaxosMsg {
    /// Promise to ignore ballots below this one, and say what you accepted.
    Prepare {
        /// The ballot.
        ballot: Ballot,
    },
    /// Accept this value at this ballot.
    Propose {
        /// The ballot.
        ballot: Ballot,
        /// The register's new value.
        value: CasValue,
    },
    /// This value was chosen at this ballot.
    Commit {
        /// The ballot.
        ballot: Ballot,
        /// The chosen value.
        value: CasValue,
    },
}

/// An acceptor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaxosReply {
    /// The promise, with the highest-ballot proposal this acceptor accepted.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// What it accepted before, if anything.
        accepted: Option<(Ballot, CasValue)>,
    },
    /// The proposal was accepted.
    Accepted {
        /// Its ballot.
        ballot: Ballot,
    },
    /// Refused: the acceptor promised a higher ballot.
    Nack {
        /// The ballot refused.
        ballot: Ballot,
        /// The ballot it promised instead.
        promised: Ballot,
    },
}

impl PaxosReply {
    /// The ballot the reply is about.
    pub fn ballot(&self) -> Ballot {
        match self {
            PaxosReply::Promise { ballot, .. } | PaxosReply::Accepted { ballot } | PaxosReply::Nack { ballot, .. } => {
                *ballot
            }
        }
    }
}

/// One replica's Paxos state for one key. The driver must make it durable
/// before sending the reply a call returns.
///
/// ## Format
///
/// ```text
/// version u8 = 1 | promised (counter u64 LE, node u64 LE)
/// | accepted u8 (0 | 1) [ ballot (counter u64 LE, node u64 LE) | value ]
/// value: present u8 (0 | 1) [ len u32 LE (<= MAX_CAS_VALUE) | bytes ]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acceptor {
    promised: Ballot,
    accepted: Option<(Ballot, CasValue)>,
}

impl Acceptor {
    const FORMAT_VERSION: u8 = 1;

    /// The ballot promised (default: none).
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// The highest-ballot proposal accepted.
    pub fn accepted(&self) -> Option<&(Ballot, CasValue)> {
        self.accepted.as_ref()
    }

    /// Handles a proposer's message. `None` for a commit (no reply needed).
    pub fn handle(&mut self, msg: PaxosMsg) -> Option<PaxosReply> {
        match msg {
            PaxosMsg::Prepare { ballot } => Some(self.on_prepare(ballot)),
            PaxosMsg::Propose { ballot, value } => Some(self.on_propose(ballot, value)),
            PaxosMsg::Commit { ballot, value } => {
                self.on_commit(ballot, value);
                None
            }
        }
    }

    /// Promise `ballot` if it is above every ballot promised.
    pub fn on_prepare(&mut self, ballot: Ballot) -> PaxosReply {
        if ballot > self.promised {
            self.promised = ballot;
            PaxosReply::Promise {
                ballot,
                accepted: self.accepted.clone(),
            }
        } else {
            PaxosReply::Nack {
                ballot,
                promised: self.promised,
            }
        }
    }

    /// Accept `value` at `ballot` unless a higher ballot was promised.
    pub fn on_propose(&mut self, ballot: Ballot, value: CasValue) -> PaxosReply {
        if ballot >= self.promised {
            self.promised = ballot;
            self.accepted = Some((ballot, value));
            PaxosReply::Accepted { ballot }
        } else {
            PaxosReply::Nack {
                ballot,
                promised: self.promised,
            }
        }
    }

    /// Learn that `value` was chosen at `ballot`. Taking it as accepted is
    /// safe even past a higher promise: a majority accepted it, so every
    /// later prepare quorum already reports it or something newer. The
    /// promise rises to the ballot if below, as accepting implies promising
    /// (and the decoder holds the state to that).
    pub fn on_commit(&mut self, ballot: Ballot, value: CasValue) {
        if self.accepted.as_ref().is_none_or(|(b, _)| ballot > *b) {
            self.accepted = Some((ballot, value));
            self.promised = self.promised.max(ballot);
        }
        debug_assert!(self.accepted.as_ref().is_none_or(|(b, _)| *b <= self.promised));
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn ballot(out: &mut Vec<u8>, b: Ballot) {
            out.extend_from_slice(&b.counter.to_le_bytes());
            out.extend_from_slice(&b.node.to_le_bytes());
        }
        out.push(Self::FORMAT_VERSION);
        ballot(out, self.promised);
        match &self.accepted {
            None => out.push(0),
            Some((b, value)) => {
                out.push(1);
                ballot(out, *b);
                match value {
                    None => out.push(0),
                    Some(v) => {
                        debug_assert!(v.len() <= MAX_CAS_VALUE, "checked by CasOp::start");
                        out.push(1);
                        // Bounded by MAX_CAS_VALUE, which fits a u32.
                        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
    }

    /// Decodes all of `buf` (untrusted; never panics).
    pub fn decode(buf: &[u8]) -> Result<Acceptor> {
        let mut r = crate::codec::Reader::new(buf, "paxos state");
        r.version(Self::FORMAT_VERSION)?;
        let promised = Ballot {
            counter: r.u64()?,
            node: r.u64()?,
        };
        let accepted = match r.u8()? {
            0 => None,
            1 => {
                let b = Ballot {
                    counter: r.u64()?,
                    node: r.u64()?,
                };
                let value = match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes_u32(MAX_CAS_VALUE)?.to_vec()),
                    _ => return Err(r.error("bad value flag")),
                };
                if b > promised {
                    return Err(r.error("accepted ballot above the promise"));
                }
                Some((b, value))
            }
            _ => return Err(r.error("bad accepted flag")),
        };
        r.finish()?;
        Ok(Acceptor { promised, accepted })
    }
}

/// What a CAS does with the register's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasCommand {
    /// A linearizable read (the value read is re-proposed, then returned).
    Read,
    /// Set `new` if the current value is `expected` (`None`: empty).
    Cas {
        /// The value the register must hold.
        expected: CasValue,
        /// The value to set (`None` deletes).
        new: CasValue,
    },
    /// Add `delta` to the decimal i64 the register holds (empty counts as
    /// 0). Not applied, with the current value, if the register holds
    /// something else or the sum overflows.
    Add {
        /// The amount.
        delta: i64,
    },
}

impl CasCommand {
    /// Whether the command may change the register.
    pub fn writes(&self) -> bool {
        !matches!(self, CasCommand::Read)
    }
}

/// `current + delta` as the register's decimal bytes, if `current` is empty
/// or a decimal i64 and the sum does not overflow.
fn add(current: &CasValue, delta: i64) -> Option<Vec<u8>> {
    let n = match current {
        None => 0,
        Some(b) => std::str::from_utf8(b).ok()?.parse::<i64>().ok()?,
    };
    Some(n.checked_add(delta)?.to_string().into_bytes())
}

/// A CAS's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the condition held (always true for a read).
    pub applied: bool,
    /// The register's value after the op: the new value if applied, else
    /// the value that failed the condition.
    pub value: CasValue,
}

/// Everything a CAS needs to start.
#[derive(Debug, Clone)]
pub struct CasRequest {
    /// Unique among the coordinator's requests in flight.
    pub id: RequestId,
    /// The key.
    pub key: Vec<u8>,
    /// The key's replicas (pending ones are ignored).
    pub replicas: Vec<Replica>,
    /// What to do.
    pub command: CasCommand,
    /// How long a prepare round may wait before it is retried.
    pub round_timeout: Millis,
    /// When the request times out.
    pub deadline: Millis,
}

/// What a [`CasOp`] asks its driver to do.
#[derive(Debug)]
pub enum CasOutput {
    /// Send `msg` (about [`CasOp::key`]) to `to`.
    Send {
        /// The replica.
        to: NodeId,
        /// The message.
        msg: PaxosMsg,
    },
    /// Answer the client (exactly once). An error other than `Unavailable`
    /// means the outcome is unknown.
    Reply(Result<CasOutcome>),
}

#[derive(Debug, Clone)]
enum Phase {
    Preparing {
        since: Millis,
        promises: Vec<(NodeId, Option<(Ballot, CasValue)>)>,
        nacks: Vec<NodeId>,
    },
    Proposing {
        outcome: CasOutcome,
        accepted: Vec<NodeId>,
        nacks: Vec<NodeId>,
    },
    Backoff {
        until: Millis,
    },
    /// A majority refused the proposal: the op answers TIMEOUT (outcome
    /// unknown) at `until`, not before, so that the rival that refused it
    /// can finish (see the module docs).
    Refused {
        until: Millis,
        acked: usize,
    },
    Done,
}

/// One CAS in flight on its coordinator.
#[derive(Debug)]
pub struct CasOp {
    id: RequestId,
    key: Vec<u8>,
    /// The replicas asked (believed alive).
    asked: Vec<NodeId>,
    /// All replicas (the quorum is a majority of them).
    replicas: usize,
    command: CasCommand,
    ballot: Ballot,
    /// The highest ballot any nack reported.
    seen: Ballot,
    attempts: u32,
    round_timeout: Millis,
    deadline: Millis,
    phase: Phase,
}

impl CasOp {
    /// Starts a CAS: the op and its prepares (or an immediate error, in
    /// which case the op is already done).
    pub fn start(req: CasRequest, now: Millis, clock: &mut BallotClock) -> (Self, Vec<CasOutput>) {
        let natural: Vec<&Replica> = req.replicas.iter().filter(|r| !r.pending).collect();
        let asked: Vec<NodeId> = natural
            .iter()
            .filter(|r| !r.believed_down)
            .map(|r| r.node.clone())
            .collect();
        let mut op = CasOp {
            id: req.id,
            key: req.key,
            asked,
            replicas: natural.len(),
            command: req.command,
            ballot: Ballot::default(),
            seen: Ballot::default(),
            attempts: 0,
            round_timeout: req.round_timeout.max(1),
            deadline: req.deadline,
            phase: Phase::Done,
        };
        let too_large = match &op.command {
            CasCommand::Cas { expected, new } => [expected, new]
                .into_iter()
                .flatten()
                .map(Vec::len)
                .find(|&len| len > MAX_CAS_VALUE),
            CasCommand::Read | CasCommand::Add { .. } => None,
        };
        if let Some(len) = too_large {
            let err = Error::TooLarge {
                what: "CAS value",
                len,
                max: MAX_CAS_VALUE,
            };
            return (op, vec![CasOutput::Reply(Err(err))]);
        }
        if op.asked.len() < op.quorum() {
            let err = Error::Unavailable {
                op: "cas",
                consistency: Consistency::Quorum,
                alive: op.asked.len(),
                required: op.quorum(),
            };
            return (op, vec![CasOutput::Reply(Err(err))]);
        }
        let out = op.prepare(now, clock);
        (op, out)
    }

    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the op has nothing left to do.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The ballot of the current round.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    fn quorum(&self) -> usize {
        self.replicas / 2 + 1
    }

    fn prepare(&mut self, now: Millis, clock: &mut BallotClock) -> Vec<CasOutput> {
        self.attempts += 1;
        self.ballot = clock.next(now, self.seen.max(self.ballot));
        self.phase = Phase::Preparing {
            since: now,
            promises: Vec::new(),
            nacks: Vec::new(),
        };
        let ballot = self.ballot;
        self.asked
            .iter()
            .map(|to| CasOutput::Send {
                to: to.clone(),
                msg: PaxosMsg::Prepare { ballot },
            })
            .collect()
    }

    /// Waits before the next round, longer after each rejected one, with a
    /// per-proposer offset so that duelling proposers stop colliding.
    fn back_off(&mut self, now: Millis) {
        self.phase = Phase::Backoff {
            until: self.backoff_end(now),
        };
    }

    /// The end of a backoff starting at `now`.
    fn backoff_end(&self, now: Millis) -> Millis {
        let base = self.round_timeout / 4 + 1;
        let exp = base.saturating_mul(1 << self.attempts.min(4));
        let jitter = xxhash_rust::xxh3::xxh3_64(
            &[self.ballot.node.to_le_bytes(), u64::from(self.attempts).to_le_bytes()].concat(),
        ) % base;
        now + exp / 2 + jitter
    }

    /// `from` answered. Replies to other rounds and duplicates are ignored.
    pub fn on_reply(&mut self, from: &NodeId, reply: PaxosReply, now: Millis) -> Vec<CasOutput> {
        let mut out = Vec::new();
        if self.is_done() || reply.ballot() != self.ballot || !self.asked.contains(from) {
            return out;
        }
        let quorum = self.quorum();
        // More refusals than this and a majority can no longer answer yes
        // (`start` made sure a majority was asked).
        let max_nacks = self.asked.len().saturating_sub(quorum);
        match (&mut self.phase, reply) {
            (Phase::Preparing { promises, nacks, .. }, PaxosReply::Promise { accepted, .. }) => {
                if promises.iter().any(|(n, _)| n == from) || nacks.contains(from) {
                    return out;
                }
                promises.push((from.clone(), accepted));
                if promises.len() < quorum {
                    return out;
                }
                let current = promises
                    .iter()
                    .filter_map(|(_, a)| a.as_ref())
                    .max_by_key(|(b, _)| *b)
                    .and_then(|(_, v)| v.clone());
                let outcome = match &self.command {
                    CasCommand::Read => CasOutcome {
                        applied: true,
                        value: current,
                    },
                    CasCommand::Cas { expected, new } if *expected == current => CasOutcome {
                        applied: true,
                        value: new.clone(),
                    },
                    CasCommand::Cas { .. } => CasOutcome {
                        applied: false,
                        value: current,
                    },
                    CasCommand::Add { delta } => match add(&current, *delta) {
                        Some(sum) => CasOutcome {
                            applied: true,
                            value: Some(sum),
                        },
                        None => CasOutcome {
                            applied: false,
                            value: current,
                        },
                    },
                };
                let ballot = self.ballot;
                for to in &self.asked {
                    out.push(CasOutput::Send {
                        to: to.clone(),
                        msg: PaxosMsg::Propose {
                            ballot,
                            value: outcome.value.clone(),
                        },
                    });
                }
                self.phase = Phase::Proposing {
                    outcome,
                    accepted: Vec::new(),
                    nacks: Vec::new(),
                };
            }
            (Phase::Preparing { promises, nacks, .. }, PaxosReply::Nack { promised, .. }) => {
                if promises.iter().any(|(n, _)| n == from) || nacks.contains(from) {
                    return out;
                }
                nacks.push(from.clone());
                self.seen = self.seen.max(promised);
                if nacks.len() > max_nacks {
                    self.back_off(now);
                }
            }
            (
                Phase::Proposing {
                    outcome,
                    accepted,
                    nacks,
                },
                PaxosReply::Accepted { .. },
            ) => {
                if accepted.contains(from) || nacks.contains(from) {
                    return out;
                }
                accepted.push(from.clone());
                if accepted.len() < quorum {
                    return out;
                }
                let outcome = outcome.clone();
                let ballot = self.ballot;
                for to in &self.asked {
                    out.push(CasOutput::Send {
                        to: to.clone(),
                        msg: PaxosMsg::Commit {
                            ballot,
                            value: outcome.value.clone(),
                        },
                    });
                }
                out.push(CasOutput::Reply(Ok(outcome)));
                self.phase = Phase::Done;
            }
            (Phase::Proposing { accepted, nacks, .. }, PaxosReply::Nack { promised, .. }) => {
                if accepted.contains(from) || nacks.contains(from) {
                    return out;
                }
                nacks.push(from.clone());
                self.seen = self.seen.max(promised);
                if nacks.len() > max_nacks {
                    let acked = accepted.len();
                    self.phase = Phase::Refused {
                        until: self.backoff_end(now).min(self.deadline),
                        acked,
                    };
                }
            }
            // A promise during proposing (a late duplicate), or anything while
            // backing off or done: nothing to learn.
            _ => {}
        }
        out
    }

    fn timeout(&self, op: &'static str, acked: usize) -> Error {
        Error::Timeout {
            op,
            consistency: Consistency::Quorum,
            acked,
            required: self.quorum(),
        }
    }

    /// Time passed: retries a stalled or rejected prepare round, and answers
    /// with a timeout at the deadline.
    pub fn on_tick(&mut self, now: Millis, clock: &mut BallotClock) -> Vec<CasOutput> {
        if self.is_done() {
            return Vec::new();
        }
        if now >= self.deadline {
            let (op, acked) = match &self.phase {
                Phase::Proposing { accepted, .. } => ("cas (propose)", accepted.len()),
                Phase::Refused { acked, .. } => ("cas (propose)", *acked),
                Phase::Preparing { promises, .. } => ("cas", promises.len()),
                _ => ("cas", 0),
            };
            let err = self.timeout(op, acked);
            self.phase = Phase::Done;
            return vec![CasOutput::Reply(Err(err))];
        }
        match self.phase {
            Phase::Backoff { until } if now >= until => self.prepare(now, clock),
            Phase::Refused { until, acked } if now >= until => {
                self.phase = Phase::Done;
                vec![CasOutput::Reply(Err(self.timeout("cas (propose)", acked)))]
            }
            Phase::Preparing { since, .. } if now >= since + self.round_timeout => {
                self.back_off(now);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(ids: &[&str]) -> Vec<Replica> {
        ids.iter()
            .map(|id| Replica {
                node: NodeId::from(*id),
                dc: "dc1".into(),
                believed_down: false,
                pending: false,
            })
            .collect()
    }

    fn req(command: CasCommand) -> CasRequest {
        CasRequest {
            id: 1,
            key: b"k".to_vec(),
            replicas: replicas(&["a", "b", "c"]),
            command,
            round_timeout: 20,
            deadline: 1_000,
        }
    }

    /// Delivers every send to the acceptors at once and every reply back.
    fn run(
        op: &mut CasOp,
        out: Vec<CasOutput>,
        acceptors: &mut [(NodeId, Acceptor)],
        now: Millis,
    ) -> Option<Result<CasOutcome>> {
        let mut queue = out;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for o in queue {
                match o {
                    CasOutput::Reply(r) => return Some(r),
                    CasOutput::Send { to, msg } => {
                        let (_, acc) = acceptors.iter_mut().find(|(n, _)| *n == to).unwrap();
                        if let Some(reply) = acc.handle(msg) {
                            next.extend(op.on_reply(&to, reply, now));
                        }
                    }
                }
            }
            queue = next;
        }
        None
    }

    fn acceptors() -> Vec<(NodeId, Acceptor)> {
        ["a", "b", "c"]
            .iter()
            .map(|id| (NodeId::from(*id), Acceptor::default()))
            .collect()
    }

    #[test]
    fn add_counts_from_empty_and_refuses_non_integers() {
        let mut accs = acceptors();
        let mut clock = BallotClock::new(1);
        let mut at = 10;
        let mut exec = |accs: &mut Vec<(NodeId, Acceptor)>, cmd| {
            at += 1;
            let (mut op, out) = CasOp::start(req(cmd), at, &mut clock);
            run(&mut op, out, accs, at).unwrap().unwrap()
        };
        let add = |delta| CasCommand::Add { delta };
        assert_eq!(exec(&mut accs, add(5)).value.as_deref(), Some(&b"5"[..]));
        let r = exec(&mut accs, add(-7));
        assert_eq!((r.applied, r.value.as_deref()), (true, Some(&b"-2"[..])));
        let big = (i64::MAX - 2).to_string().into_bytes();
        let r = exec(&mut accs, add(i64::MAX));
        assert_eq!((r.applied, r.value.as_deref()), (true, Some(&big[..])));
        let r = exec(&mut accs, add(3));
        assert_eq!(
            (r.applied, r.value.as_deref()),
            (false, Some(&big[..])),
            "overflow refused"
        );
        let set = CasCommand::Cas {
            expected: Some(big),
            new: Some(b"ten".to_vec()),
        };
        assert!(exec(&mut accs, set).applied);
        let r = exec(&mut accs, add(1));
        assert_eq!((r.applied, r.value.as_deref()), (false, Some(&b"ten"[..])));
    }

    #[test]
    fn cas_then_read() {
        let mut accs = acceptors();
        let mut clock = BallotClock::new(1);
        let cmd = CasCommand::Cas {
            expected: None,
            new: Some(b"x".to_vec()),
        };
        let (mut op, out) = CasOp::start(req(cmd.clone()), 10, &mut clock);
        let r = run(&mut op, out, &mut accs, 10).unwrap().unwrap();
        assert_eq!(
            r,
            CasOutcome {
                applied: true,
                value: Some(b"x".to_vec())
            }
        );
        // The same CAS again fails and reports the value it found.
        let (mut op, out) = CasOp::start(req(cmd), 11, &mut clock);
        let r = run(&mut op, out, &mut accs, 11).unwrap().unwrap();
        assert_eq!(
            r,
            CasOutcome {
                applied: false,
                value: Some(b"x".to_vec())
            }
        );
        let (mut op, out) = CasOp::start(req(CasCommand::Read), 12, &mut clock);
        assert_eq!(
            run(&mut op, out, &mut accs, 12).unwrap().unwrap().value,
            Some(b"x".to_vec())
        );
        assert!(op.is_done());
    }

    #[test]
    fn rejected_prepare_retries_with_a_higher_ballot() {
        let mut accs = acceptors();
        // Another proposer promised far ahead on two replicas.
        let high = Ballot {
            counter: 1 << 40,
            node: 9,
        };
        accs[0].1.on_prepare(high);
        accs[1].1.on_prepare(high);
        let mut clock = BallotClock::new(1);
        let (mut op, out) = CasOp::start(req(CasCommand::Read), 10, &mut clock);
        assert!(run(&mut op, out, &mut accs, 10).is_none(), "nacked: backing off");
        let mut now = 10;
        let reply = loop {
            now += 1;
            let out = op.on_tick(now, &mut clock);
            if !out.is_empty() {
                break run(&mut op, out, &mut accs, now);
            }
        };
        assert!(op.ballot() > high);
        assert_eq!(reply.unwrap().unwrap().value, None);
    }

    /// Runs `op`'s prepare round on every acceptor, then lets a rival
    /// proposer promise `rival` on every acceptor (it prepared between this
    /// op's prepare and its propose); returns the proposals.
    fn prepare_then_preempt(
        op: &mut CasOp,
        out: Vec<CasOutput>,
        accs: &mut [(NodeId, Acceptor)],
        rival: Ballot,
    ) -> Vec<(NodeId, PaxosMsg)> {
        let mut proposals = Vec::new();
        for o in out {
            let CasOutput::Send { to, msg } = o else {
                unreachable!("a reply before any answer: {o:?}")
            };
            let (_, acc) = accs.iter_mut().find(|(n, _)| *n == to).unwrap();
            for p in op.on_reply(&to, acc.handle(msg).unwrap(), 10) {
                match p {
                    CasOutput::Send { to, msg } => proposals.push((to, msg)),
                    CasOutput::Reply(r) => unreachable!("answered before proposing: {r:?}"),
                }
            }
        }
        assert_eq!(proposals.len(), 3, "one proposal per replica");
        for (_, acc) in accs.iter_mut() {
            assert!(matches!(acc.on_prepare(rival), PaxosReply::Promise { .. }));
        }
        proposals
    }

    /// Two proposers duel: a rival prepared between this op's prepare and
    /// its propose, so a majority refuses the proposal. The outcome is
    /// unknown (TIMEOUT), but the op says so only after a backoff, sending
    /// nothing meanwhile: the client's next operation would otherwise
    /// prepare at once above the rival and refuse its proposal in turn.
    #[test]
    fn a_refused_proposal_answers_unknown_after_a_backoff() {
        let mut accs = acceptors();
        let mut clock = BallotClock::new(1);
        let cmd = CasCommand::Cas {
            expected: None,
            new: Some(b"mine".to_vec()),
        };
        let (mut op, out) = CasOp::start(req(cmd), 10, &mut clock);
        let rival = Ballot {
            counter: op.ballot().counter + 1,
            node: 9,
        };
        for (to, msg) in prepare_then_preempt(&mut op, out, &mut accs, rival) {
            let (_, acc) = accs.iter_mut().find(|(n, _)| *n == to).unwrap();
            let reply = acc.handle(msg).unwrap();
            assert!(matches!(reply, PaxosReply::Nack { .. }));
            assert!(op.on_reply(&to, reply, 10).is_empty(), "no answer at the refusal");
        }
        assert!(!op.is_done());
        let mut now = 10;
        let answer = loop {
            now += 1;
            let out = op.on_tick(now, &mut clock);
            if !out.is_empty() {
                break out;
            }
        };
        // req() has a 20 ms round timeout: backoffs of 5 ms and more.
        assert!(now >= 10 + 5, "answered {} ms after the refusal", now - 10);
        match &answer[..] {
            [CasOutput::Reply(Err(e))] => assert_eq!(
                e.to_string(),
                "cas (propose) at QUORUM timed out: 0 replica(s) answered, 2 required"
            ),
            other => unreachable!("a new round instead of the answer: {other:?}"),
        }
        assert!(op.is_done());
        assert!(accs.iter().all(|(_, a)| a.accepted().is_none()), "nothing accepted");
    }

    /// The backoff after a refusal ends at the deadline at the latest.
    #[test]
    fn a_refused_proposal_answers_by_the_deadline() {
        let mut accs = acceptors();
        let mut clock = BallotClock::new(1);
        let mut r = req(CasCommand::Read);
        r.round_timeout = 10_000;
        r.deadline = 40;
        let (mut op, out) = CasOp::start(r, 10, &mut clock);
        let rival = Ballot {
            counter: op.ballot().counter + 1,
            node: 9,
        };
        for (to, msg) in prepare_then_preempt(&mut op, out, &mut accs, rival) {
            let (_, acc) = accs.iter_mut().find(|(n, _)| *n == to).unwrap();
            assert!(op.on_reply(&to, acc.handle(msg).unwrap(), 10).is_empty());
        }
        assert!(op.on_tick(39, &mut clock).is_empty());
        assert!(matches!(&op.on_tick(40, &mut clock)[..], [CasOutput::Reply(Err(_))]));
        assert!(op.is_done());
    }

    #[test]
    fn an_accepted_minority_value_is_finished_by_the_next_round() {
        let mut accs = acceptors();
        // A proposer died after one replica accepted its value.
        let b = Ballot { counter: 5, node: 2 };
        accs[2].1.on_prepare(b);
        accs[2].1.on_propose(b, Some(b"half".to_vec()));
        let mut clock = BallotClock::new(1);
        let (mut op, out) = CasOp::start(req(CasCommand::Read), 10, &mut clock);
        // The read sees it only if c is in its quorum; deliver c first.
        let mut out = out;
        out.reverse();
        let r = run(&mut op, out, &mut accs, 10).unwrap().unwrap();
        assert_eq!(r.value, Some(b"half".to_vec()));
        // And now it is chosen: every replica accepted it at a higher ballot.
        for (_, a) in &accs {
            assert_eq!(a.accepted().unwrap().1, Some(b"half".to_vec()));
        }
    }

    #[test]
    fn unavailable_and_timeouts() {
        let mut clock = BallotClock::new(1);
        let mut r = req(CasCommand::Read);
        r.replicas[0].believed_down = true;
        r.replicas[1].believed_down = true;
        let (op, out) = CasOp::start(r, 0, &mut clock);
        assert!(op.is_done());
        assert!(matches!(
            &out[..],
            [CasOutput::Reply(Err(Error::Unavailable {
                alive: 1,
                required: 2,
                ..
            }))]
        ));

        let (mut op, _) = CasOp::start(req(CasCommand::Read), 0, &mut clock);
        let out = op.on_tick(1_000, &mut clock);
        match &out[..] {
            [CasOutput::Reply(Err(e))] => assert_eq!(
                e.to_string(),
                "cas at QUORUM timed out: 0 replica(s) answered, 2 required"
            ),
            other => unreachable!("unexpected outputs: {other:?}"),
        }
    }

    #[test]
    fn acceptor_state_round_trips_and_rejects_garbage() {
        let mut a = Acceptor::default();
        let mut buf = Vec::new();
        a.encode(&mut buf);
        assert_eq!(Acceptor::decode(&buf).unwrap(), a);
        a.on_prepare(Ballot { counter: 3, node: 4 });
        a.on_propose(Ballot { counter: 3, node: 4 }, Some(vec![1, 2, 3]));
        buf.clear();
        a.encode(&mut buf);
        assert_eq!(Acceptor::decode(&buf).unwrap(), a);
        for cut in 0..buf.len() {
            assert!(Acceptor::decode(&buf[..cut]).is_err());
        }
        buf.push(0);
        assert!(Acceptor::decode(&buf).is_err(), "trailing bytes");
    }

    /// Found by the simulator: a commit above the promise (the acceptor
    /// missed that round's prepare and proposal) left a state whose own
    /// decoder refused it after a restart.
    #[test]
    fn commit_above_the_promise_stays_decodable() {
        let mut a = Acceptor::default();
        a.on_prepare(Ballot { counter: 1, node: 1 });
        a.on_commit(Ballot { counter: 9, node: 2 }, Some(b"v".to_vec()));
        assert_eq!(a.promised(), Ballot { counter: 9, node: 2 });
        let mut buf = Vec::new();
        a.encode(&mut buf);
        assert_eq!(Acceptor::decode(&buf).unwrap(), a);
        // A stale commit changes nothing.
        a.on_commit(Ballot { counter: 5, node: 2 }, None);
        assert_eq!(a.accepted().unwrap().1, Some(b"v".to_vec()));
    }

    #[test]
    fn ballots_grow() {
        let mut c = BallotClock::new(3);
        let a = c.next(5, Ballot::default());
        let b = c.next(5, Ballot::default());
        assert!(b > a);
        let far = Ballot {
            counter: 1 << 50,
            node: 0,
        };
        assert!(c.next(6, far) > far);
        // A restarted process with the same tag starts above what it issued,
        // as long as it issued fewer than PER_MS ballots per millisecond.
        let mut restarted = BallotClock::new(3);
        assert!(restarted.next(7, Ballot::default()) > a);
    }
}
