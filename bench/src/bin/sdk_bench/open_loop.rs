//! Open-loop load (`--rate R`): a fixed schedule of requests, each measured
//! from the moment it was due, whatever the server did before it.
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
//! pacer sleeps with a 1 µs timer slack and hands each request to the runtime
//! as a task. A bound on requests outstanding (`--max-inflight`) is a limit on
//! memory and sockets, not on rate: when a due request finds it reached, the
//! pacer waits for a slot; that request and every one that fell due during
//! the wait are counted as held back, and their latency still runs from their
//! intended start. If the generator is still behind one second after the
//! schedule ends it stops; the requests it never sent are reported, because
//! then the target rate was not sustained.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corekv_net::client::{Client, ClientError};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::report::{error_kind, histogram, record, OpenStats, Report};
use crate::{one, Args, Test};

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
    fn warmup_requests(&self) -> u64 {
        (self.warmup.as_secs_f64() * self.rate).round() as u64
    }

    /// Requests in the measured part.
    fn measured_requests(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate).round() as u64
    }

    /// Offset of request `i`'s intended start from `t0`.
    fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// How long the pacer keeps sending late requests after the schedule's end.
const GRACE: Duration = Duration::from_secs(1);
/// How often the pacer retries for an in-flight slot while the bound is reached.
const SLOT_POLL: Duration = Duration::from_micros(100);
/// A send this much later than its intended start counts as late.
const LATE: Duration = Duration::from_millis(1);

/// What the measured requests' tasks record.
struct Recorder {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    lag: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<ClientError>,
    ok: u64,
    late: u64,
    last_done: Option<Instant>,
}

impl Recorder {
    fn new() -> Result<Recorder, String> {
        Ok(Recorder {
            latency: histogram()?,
            service: histogram()?,
            lag: histogram()?,
            errors: BTreeMap::new(),
            first_error: None,
            ok: 0,
            late: 0,
            last_done: None,
        })
    }

    fn record(&mut self, intended: Instant, sent: Instant, done: Instant, result: Result<(), ClientError>) {
        record(&mut self.latency, done.saturating_duration_since(intended));
        record(&mut self.service, done.saturating_duration_since(sent));
        let lag = sent.saturating_duration_since(intended);
        record(&mut self.lag, lag);
        self.late += u64::from(lag > LATE);
        match result {
            Ok(()) => self.ok += 1,
            Err(e) => {
                *self.errors.entry(error_kind(&e)).or_default() += 1;
                self.first_error.get_or_insert(e);
            }
        }
        if self.last_done.is_none_or(|t| done > t) {
            self.last_done = Some(done);
        }
    }
}

fn lock(m: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    // A task that panicked while recording left at worst one sample half
    // counted; the figures are still worth printing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a request task needs, shared.
#[derive(Clone)]
struct Shared {
    client: Client,
    test: Test,
    args: Arc<Args>,
    value: Arc<Vec<u8>>,
    recorder: Arc<Mutex<Recorder>>,
}

/// One request: sent when the task first runs, recorded if measured. The
/// permit is released after recording, so holding every permit means every
/// measured request is recorded.
async fn request(s: Shared, mut rng: SmallRng, intended: Instant, measured: bool, permit: OwnedSemaphorePermit) {
    let sent = Instant::now();
    let result = one(&s.client, s.test, &mut rng, &s.args, &s.value).await;
    let done = Instant::now();
    if measured {
        lock(&s.recorder).record(intended, sent, done, result);
    }
    drop(permit);
}

/// What the pacer counted.
struct Paced {
    t0: Instant,
    issued: u64,
    held_back: u64,
}

/// Asks the kernel to wake this thread's sleeps within 1 µs of their deadline
/// instead of the default 50 µs, so requests leave close to their due time.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches only the calling
    // thread's timer slack; no pointers are passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

/// The pacer: walks the schedule on a blocking thread and spawns one task per
/// request on `rt`.
fn pace(plan: Plan, shared: Shared, slots: Arc<Semaphore>, rt: tokio::runtime::Handle, seed: u64) -> Paced {
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
        let req_rng = SmallRng::seed_from_u64(rng.gen());
        rt.spawn(request(shared.clone(), req_rng, intended, measured, permit));
        paced.issued += u64::from(measured);
    }
    paced
}

/// Runs `test` on the schedule `plan` and reports it.
pub async fn run_test(client: &Client, test: Test, args: &Arc<Args>, plan: Plan) -> Result<Report, String> {
    let bound = u32::try_from(plan.max_inflight).map_err(|_| "--max-inflight is too large".to_owned())?;
    let recorder = Arc::new(Mutex::new(Recorder::new()?));
    let shared = Shared {
        client: client.clone(),
        test,
        args: args.clone(),
        value: Arc::new(vec![b'x'; args.data_size]),
        recorder: recorder.clone(),
    };
    let slots = Arc::new(Semaphore::new(plan.max_inflight));
    let rt = tokio::runtime::Handle::current();
    let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(test as u64);
    let pacer_slots = slots.clone();
    let paced = tokio::task::spawn_blocking(move || pace(plan, shared, pacer_slots, rt, seed))
        .await
        .map_err(|e| format!("the pacer failed: {e}"))?;
    // Every request still out ends within its timeout; all permits back means
    // all of them are recorded.
    let _all = slots
        .acquire_many(bound)
        .await
        .map_err(|e| format!("in-flight bound closed: {e}"))?;

    let mut r = lock(&recorder);
    let planned = plan.measured_requests();
    let measure_start = paced.t0 + plan.due(plan.warmup_requests());
    // Answers per second from the first measured intended start to the last
    // measured answer: a server that falls behind drains its backlog after the
    // schedule ends, which lengthens the interval and lowers the rate.
    let secs = r
        .last_done
        .map_or(0.0, |t| t.saturating_duration_since(measure_start).as_secs_f64())
        .max(plan.duration.as_secs_f64())
        .max(1e-9);
    if let Some(e) = r.first_error.take() {
        eprintln!(
            "{}: {} request(s) failed; first error: {e}",
            test.name(),
            r.errors.values().sum::<u64>()
        );
    }
    let latency = std::mem::replace(&mut r.latency, histogram()?);
    let service = std::mem::replace(&mut r.service, histogram()?);
    let lag = std::mem::replace(&mut r.lag, histogram()?);
    Ok(Report {
        test,
        rps: latency.len() as f64 / secs,
        errors: std::mem::take(&mut r.errors),
        open: Some(OpenStats {
            target_rps: plan.rate,
            ok_rps: r.ok as f64 / secs,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            max_inflight: plan.max_inflight,
            planned,
            issued: paced.issued,
            held_back: paced.held_back,
            never_issued: planned.saturating_sub(paced.issued),
            late_1ms: r.late,
            service,
            lag,
        }),
        hist: latency,
    })
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
    fn latency_counts_from_the_intended_start() {
        let mut r = Recorder::new().unwrap_or_else(|e| unreachable!("{e}"));
        let t = Instant::now();
        // Due at t, sent 1 s late (a stalled server held the in-flight bound),
        // answered 1 ms after the send.
        r.record(t, t + Duration::from_secs(1), t + Duration::from_millis(1001), Ok(()));
        assert!(r.latency.max() >= 1_000_000, "latency {}", r.latency.max());
        assert!(r.service.max() <= 1_001, "service {}", r.service.max());
        assert_eq!(r.late, 1);
        r.record(
            t,
            t,
            t + Duration::from_millis(3),
            Err(ClientError::Timeout {
                after: Duration::from_millis(2),
            }),
        );
        assert_eq!(r.errors.get("timeout"), Some(&1));
        assert_eq!((r.ok, r.latency.len()), (1, 2));
    }
}
