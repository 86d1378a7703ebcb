//! The open-loop pacer shared by `sdk-bench --rate` and `corekv-bench run
//! --rate`: a fixed schedule of requests, each to be measured from the moment
//! it was due, whatever the server did before it.
//!
//! A closed-loop client sends its next request only after the previous answer,
//! so when the server stalls for a second the clients stop sending: the few
//! requests in flight record one slow sample each and the requests that
//! *should* have been sent during the stall are never measured. The
//! percentiles then describe a load that adapted itself to the server, not the
//! load users would have put on it (Gil Tene's "coordinated omission"). wrk2's
//! answer, copied here: request `i` is due at `t0 + i / R`; it is sent then (or
//! at once if the generator is behind), never waits for an earlier answer, and
//! its latency is counted from that intended start. A one-second stall at rate
//! R therefore shows up in the R requests due during it, with latencies from
//! one second down to zero, and moves p99.9 and beyond, not only the max.
//!
//! The schedule is kept by one OS thread (the pacer), not a tokio timer: tokio
//! timers tick in whole milliseconds, which would bunch requests into 1 ms
//! bursts and add up to 1 ms to latencies that are often below that. The
//! pacer sleeps with a 1 µs timer slack and hands each request to the caller
//! (which spawns it as a task). A bound on requests outstanding
//! (`max_inflight`) is a limit on memory and sockets, not on rate: when a due
//! request finds it reached, the pacer waits for a slot; that request and
//! every one that fell due during the wait are counted as held back, and
//! their latency still runs from their intended start. If the generator is
//! still behind one second after the schedule ends it stops; the requests it
//! never sent are reported, because then the target rate was not sustained.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The schedule of one open-loop test.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests per second, over all connections.
    pub rate: f64,
    /// Unmeasured start of the schedule.
    pub warmup: Duration,
    /// Measured part of the schedule, after the warm-up.
    pub duration: Duration,
    /// Most requests outstanding at once.
    pub max_inflight: usize,
}

impl Plan {
    /// Requests in the warm-up; request `i` is measured iff `i >= warmup_requests`.
    pub fn warmup_requests(&self) -> u64 {
        (self.warmup.as_secs_f64() * self.rate).round() as u64
    }

    /// Requests in the measured part.
    pub fn measured_requests(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate).round() as u64
    }

    /// Offset of request `i`'s intended start from `t0`.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// How long the pacer keeps sending late requests after the schedule's end.
pub const GRACE: Duration = Duration::from_secs(1);
/// How often the pacer retries for an in-flight slot while the bound is reached.
const SLOT_POLL: Duration = Duration::from_micros(100);
/// A send this much later than its intended start counts as late.
pub const LATE: Duration = Duration::from_millis(1);

/// One request the pacer hands out.
pub struct Due {
    /// Its own random generator (seeded from the pacer's), so requests are
    /// independent of the order tasks run in.
    pub rng: SmallRng,
    /// When it was due: its latency counts from here.
    pub intended: Instant,
    /// Whether it is after the warm-up.
    pub measured: bool,
    /// Its in-flight slot: release it after recording, so holding every
    /// permit means every measured request is recorded.
    pub permit: OwnedSemaphorePermit,
}

/// What the pacer counted.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    /// The schedule's origin: request `i` was due at `t0 + plan.due(i)`.
    pub t0: Instant,
    /// Measured requests handed out.
    pub issued: u64,
    /// Measured requests sent late because the in-flight bound was reached.
    pub held_back: u64,
}

/// Asks the kernel to wake this thread's sleeps within 1 µs of their deadline
/// instead of the default 50 µs, so requests leave close to their due time.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches only the calling
    // thread's timer slack; no pointers are passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

/// The pacer: walks the schedule on the calling (blocking) thread and calls
/// `start` for each request when it is due, with an in-flight slot from
/// `slots` (which should hold `plan.max_inflight` permits). `start` must not
/// block: it spawns the request.
pub fn pace(plan: Plan, slots: &Arc<Semaphore>, seed: u64, mut start: impl FnMut(Due)) -> Paced {
    tight_timer_slack();
    let warm = plan.warmup_requests();
    let total = warm + plan.measured_requests();
    let t0 = Instant::now();
    let give_up = t0 + plan.due(total) + GRACE;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut paced = Paced {
        t0,
        issued: 0,
        held_back: 0,
    };
    // The end of the last wait for an in-flight slot: requests due before it
    // were sent late because of the bound, even if a slot was free by the
    // time their turn came.
    let mut bound_until: Option<Instant> = None;
    for i in 0..total {
        let intended = t0 + plan.due(i);
        let now = Instant::now();
        if now < intended {
            std::thread::sleep(intended - now);
        } else if now > give_up {
            break;
        }
        let measured = i >= warm;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                paced.held_back += u64::from(measured && bound_until.is_some_and(|b| intended < b));
                p
            }
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                paced.held_back += u64::from(measured);
                let mut got = None;
                while Instant::now() <= give_up {
                    std::thread::sleep(SLOT_POLL);
                    if let Ok(p) = slots.clone().try_acquire_owned() {
                        got = Some(p);
                        break;
                    }
                }
                bound_until = Some(Instant::now());
                match got {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        start(Due {
            rng: SmallRng::seed_from_u64(rng.gen()),
            intended,
            measured,
            permit,
        });
        paced.issued += u64::from(measured);
    }
    paced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_splits_warmup_and_measured_requests() {
        let plan = Plan {
            rate: 20_000.0,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            max_inflight: 4096,
        };
        assert_eq!(plan.warmup_requests(), 40_000);
        assert_eq!(plan.measured_requests(), 200_000);
        assert_eq!(plan.due(0), Duration::ZERO);
        assert_eq!(plan.due(20_000), Duration::from_secs(1));
        assert_eq!(plan.due(1), Duration::from_micros(50));
    }

    #[test]
    fn pacer_hands_out_every_request_on_schedule() {
        let plan = Plan {
            rate: 1000.0,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
            max_inflight: 8,
        };
        let slots = Arc::new(Semaphore::new(plan.max_inflight));
        let mut seen = Vec::new();
        let paced = pace(plan, &slots, 7, |d| seen.push((d.intended, d.measured)));
        assert_eq!(seen.len(), 250);
        assert_eq!(seen.iter().filter(|(_, m)| *m).count(), 200);
        assert_eq!(paced.issued, 200);
        assert_eq!(paced.held_back, 0);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
