//! Degraded links between the nodes of a test cluster: a share of packets
//! dropped, and every packet held back for a delay, in both directions
//! between two sets of IPs, until the guard is healed or dropped.
//!
//! The kernel here has no `netem` queueing discipline, so the delay is made
//! in user space: iptables sends the link's packets to an NFQUEUE, a thread
//! of this process receives each one (netlink, the `nfq` crate) and gives
//! the verdict ACCEPT once it has waited its delay, in arrival order, so the
//! link is slow but does not reorder. Drops are iptables `statistic`
//! matches: TCP retransmits what is lost, so a lossy link between nodes is
//! also a link with stalls of a retransmission timeout (200 ms and up).
//! Rules live in a chain of their own, jumped to first in INPUT (loopback
//! traffic crosses INPUT), named like the partition chains so that a test
//! process that died without healing has its rules removed by the next one
//! ([`crate::cluster::remove_stale_chains`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::{iptables, remove_chain, remove_stale_chains, CHAIN_PREFIX};

/// How a link is degraded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// The share of packets dropped, in each direction, in `[0, 1)`.
    pub drop: f64,
    /// How long every packet that is not dropped is held back.
    pub delay: Duration,
}

/// Packets the delay queue may hold before the kernel lets further ones
/// through undelayed (fail-open) rather than dropping them.
const QUEUE_MAX: u32 = 65_536;

/// A degraded link between two sets of IPs; restored by [`LinkFault::heal`]
/// or on drop, also when the test panics.
#[derive(Debug)]
pub struct LinkFault {
    chain: String,
    stop: Arc<AtomicBool>,
    delayer: Option<JoinHandle<Result<u64, String>>>,
    active: bool,
}

impl LinkFault {
    /// Degrades every link between an IP of `side_a` and one of `side_b`
    /// as `spec` says. Fails if iptables or the netfilter queue refuse.
    pub fn new(side_a: &[&str], side_b: &[&str], spec: LinkSpec) -> Result<LinkFault, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if side_a.is_empty() || side_b.is_empty() {
            return Err("a degraded link needs two sides".to_owned());
        }
        if !(0.0..1.0).contains(&spec.drop) {
            return Err(format!("drop share {} is outside [0, 1)", spec.drop));
        }
        remove_stale_chains();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Queue numbers are global to the machine: spread them by pid so
        // that test processes running side by side do not share one.
        let queue = 1000 + ((std::process::id().wrapping_mul(64) + n) % 60_000) as u16;
        let chain = format!("{CHAIN_PREFIX}{}-link{n}", std::process::id());
        let stop = Arc::new(AtomicBool::new(false));
        let mut fault = LinkFault {
            chain,
            stop: stop.clone(),
            delayer: None,
            active: true,
        };
        if !spec.delay.is_zero() {
            // Bind the queue before any rule sends packets to it: without a
            // listener, --queue-bypass would let them through undelayed.
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let delay = spec.delay;
            fault.delayer = Some(std::thread::spawn(move || {
                delay_packets(queue, delay, &stop, &ready_tx)
            }));
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("the delay thread did not start".to_owned()),
            }
        }
        let chain = fault.chain.clone();
        iptables(&["-N", &chain])?;
        let p = format!("{:.4}", spec.drop);
        let q = queue.to_string();
        for a in side_a {
            for b in side_b {
                for (from, to) in [(a, b), (b, a)] {
                    if spec.drop > 0.0 {
                        iptables(&[
                            "-A",
                            &chain,
                            "-s",
                            from,
                            "-d",
                            to,
                            "-m",
                            "statistic",
                            "--mode",
                            "random",
                            "--probability",
                            &p,
                            "-j",
                            "DROP",
                        ])?;
                    }
                    if !spec.delay.is_zero() {
                        iptables(&[
                            "-A",
                            &chain,
                            "-s",
                            from,
                            "-d",
                            to,
                            "-j",
                            "NFQUEUE",
                            "--queue-num",
                            &q,
                            "--queue-bypass",
                        ])?;
                    }
                }
            }
        }
        iptables(&["-I", "INPUT", "1", "-j", &chain])?;
        Ok(fault)
    }

    /// Restores the links: removes the rules, then lets every held packet
    /// go. Returns how many packets were delayed. Healing twice does nothing.
    pub fn heal(&mut self) -> Result<u64, String> {
        if !self.active {
            return Ok(0);
        }
        self.active = false;
        let removed = remove_chain(&self.chain);
        self.stop.store(true, Ordering::Release);
        let delayed = match self.delayer.take() {
            Some(t) => t.join().map_err(|_| "the delay thread panicked".to_owned())??,
            None => 0,
        };
        removed.map(|()| delayed)
    }
}

impl Drop for LinkFault {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            eprintln!("could not restore degraded link {}: {e}", self.chain);
        }
    }
}

/// The delay thread: holds each packet of `queue` for `delay`, then accepts
/// it; after `stop`, accepts what it holds and what is still queued, then
/// unbinds. Returns the number of packets it delayed.
fn delay_packets(
    queue: u16,
    delay: Duration,
    stop: &AtomicBool,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<u64, String> {
    let open = || -> std::io::Result<nfq::Queue> {
        let mut q = nfq::Queue::open()?;
        q.bind(queue)?;
        q.set_fail_open(queue, true)?;
        q.set_queue_max_len(queue, QUEUE_MAX)?;
        q.set_nonblocking(true);
        Ok(q)
    };
    let mut q = match open() {
        Ok(q) => q,
        Err(e) => {
            let msg = format!("netfilter queue {queue}: {e} (needs root and NFQUEUE support)");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let _ = ready.send(Ok(()));
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut delayed = 0u64;
    let release = |q: &mut nfq::Queue, mut m: nfq::Message| {
        m.set_verdict(nfq::Verdict::Accept);
        q.verdict(m)
            .map_err(|e| format!("netfilter queue {queue}: verdict: {e}"))
    };
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut got = false;
        loop {
            match q.recv() {
                Ok(m) => {
                    got = true;
                    delayed += 1;
                    if stopping {
                        release(&mut q, m)?;
                    } else {
                        held.push_back((Instant::now() + delay, m));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // A burst can overflow the socket's buffer; fail-open lets
                // the kernel pass those packets, so nothing is stuck.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                Err(e) => return Err(format!("netfilter queue {queue}: receive: {e}")),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| stopping || *due <= now) {
            if let Some((_, m)) = held.pop_front() {
                release(&mut q, m)?;
            }
        }
        if stopping && held.is_empty() && !got {
            let _ = q.unbind(queue);
            return Ok(delayed);
        }
        let next = held
            .front()
            .map_or(Duration::from_millis(1), |(due, _)| due.saturating_duration_since(now));
        std::thread::sleep(next.min(Duration::from_millis(1)));
    }
}
