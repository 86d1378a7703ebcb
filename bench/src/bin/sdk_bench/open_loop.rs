//! Open-loop load (`--rate R`): the shared pacer
//! ([`corekv_bench::open_loop`], which explains why latency is counted from
//! each request's intended start) driving sdk-bench's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use corekv_bench::latency::{error_kind, histogram, record};
pub use corekv_bench::open_loop::Plan;
use corekv_bench::open_loop::{pace, LATE};
use corekv_net::client::{Client, ClientError};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::report::{OpenStats, Report};
use crate::{one, Args, Test};

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
    /// (intended start, latency in us, ok) of every measured request, with `--trace`.
    trace: Option<Vec<(Instant, u64, bool)>>,
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
            trace: None,
        })
    }

    fn record(&mut self, intended: Instant, sent: Instant, done: Instant, result: Result<(), ClientError>) {
        record(&mut self.latency, done.saturating_duration_since(intended));
        record(&mut self.service, done.saturating_duration_since(sent));
        let lag = sent.saturating_duration_since(intended);
        record(&mut self.lag, lag);
        self.late += u64::from(lag > LATE);
        if let Some(t) = &mut self.trace {
            let us = u64::try_from(done.saturating_duration_since(intended).as_micros()).unwrap_or(u64::MAX);
            t.push((intended, us, result.is_ok()));
        }
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

/// Runs `test` on the schedule `plan` and reports it.
pub async fn run_test(client: &Client, test: Test, args: &Arc<Args>, plan: Plan) -> Result<Report, String> {
    let bound = u32::try_from(plan.max_inflight).map_err(|_| "--max-inflight is too large".to_owned())?;
    let mut rec = Recorder::new()?;
    if args.trace.is_some() {
        rec.trace = Some(Vec::with_capacity(
            usize::try_from(plan.measured_requests()).unwrap_or(0),
        ));
    }
    let recorder = Arc::new(Mutex::new(rec));
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
    let paced = tokio::task::spawn_blocking(move || {
        pace(plan, &pacer_slots, seed, |d| {
            rt.spawn(request(shared.clone(), d.rng, d.intended, d.measured, d.permit));
        })
    })
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
    if let (Some(path), Some(trace)) = (&args.trace, r.trace.take()) {
        write_trace(path, test, measure_start, &trace)?;
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

/// Appends the `--trace` lines of one test, in intended-start order.
fn write_trace(
    path: &std::path::Path,
    test: Test,
    start: Instant,
    trace: &[(Instant, u64, bool)],
) -> Result<(), String> {
    use std::io::Write;
    let mut sorted: Vec<_> = trace.to_vec();
    sorted.sort_by_key(|t| t.0);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    // The wall-clock time of offset 0, to line the trace up with server logs.
    let wall = std::time::SystemTime::now()
        .checked_sub(start.elapsed())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros());
    writeln!(out, "# {} starts at unix time {wall} us", test.name())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    for (intended, us, ok) in sorted {
        let at = intended.saturating_duration_since(start).as_micros();
        writeln!(out, "{} {at} {us} {}", test.name(), u8::from(ok))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    out.flush().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
