//! Driving a target: the load phase (insert the initial records), then a
//! workload's run phase in closed loop (N clients, each sending its next
//! operation when the previous one answered) or open loop (operations due on
//! a fixed schedule, latency counted from when each was due: see
//! [`crate::open_loop`]).
//!
//! Operations started in the warm-up are executed but not recorded. Each
//! measured operation goes into its kind's HDR histogram, the workload's
//! overall histogram and the one-second timeline slot in which it completed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use super::generator::{record_key, KeyChooser, SizeChooser, ValueSize};
use super::report::{Interval, Latency, LoadReport, OpReport, WorkloadReport};
use super::target::Target;
use super::workload::{OpKind, Workload};
use super::{Error, Result};
use crate::latency::{histogram, record};
use crate::open_loop::{pace, Plan};

/// How a run phase is driven.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// This many client tasks, each with one operation outstanding.
    Closed {
        /// Client tasks.
        clients: usize,
    },
    /// Operations due at `rate` per second, at most `max_inflight` outstanding.
    Open {
        /// Operations per second.
        rate: f64,
        /// Bound on outstanding operations (memory and sockets, not rate).
        max_inflight: usize,
    },
}

/// The settings of a run phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Closed or open loop.
    pub mode: Mode,
    /// Unmeasured time at the start.
    pub warmup: Duration,
    /// Measured time after it.
    pub duration: Duration,
    /// Records the load phase inserted.
    pub records: u64,
    /// Sizes of the values written.
    pub value_size: ValueSize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Show a progress bar (current throughput and p99) on stderr.
    pub progress: bool,
}

/// Random printable bytes that values are sliced from (a value is `len`
/// bytes at a random offset): enough variety that values do not compress to
/// nothing, without generating bytes per operation.
struct ValuePool(Vec<u8>);

impl ValuePool {
    fn new(max: usize, seed: u64) -> ValuePool {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
        ValuePool((0..(max + 4096)).map(|_| rng.gen_range(b' '..b'~')).collect())
    }

    fn value(&self, rng: &mut impl Rng, len: usize) -> &[u8] {
        let spare = self.0.len().saturating_sub(len);
        let at = rng.gen_range(0..=spare);
        &self.0[at..(at + len).min(self.0.len())]
    }
}

/// The per-record state shared by every operation of a target: how many
/// records exist (reads choose among them) and the next record to insert.
#[derive(Debug)]
pub struct Records {
    /// Highest acknowledged insert + 1: records `< existing` may be read.
    existing: AtomicU64,
    /// The next record number an insert takes.
    next_insert: AtomicU64,
}

impl Records {
    /// After a load of `n` records.
    pub fn new(n: u64) -> Records {
        Records {
            existing: AtomicU64::new(n),
            next_insert: AtomicU64::new(n),
        }
    }

    /// Records that may be read now.
    pub fn existing(&self) -> u64 {
        self.existing.load(Ordering::Relaxed)
    }
}

/// One client's choosers (the zipfian state is extended as records grow, so
/// it is kept per client, not rebuilt per operation).
#[derive(Clone)]
struct Choosers {
    keys: KeyChooser,
    sizes: SizeChooser,
}

/// One operation of `w` on `target`.
async fn one_op(
    target: &Target,
    w: &Workload,
    records: &Records,
    ch: &mut Choosers,
    values: &ValuePool,
    rng: &mut SmallRng,
) -> (OpKind, Result<()>) {
    let op = w.next_op(rng);
    let n = records.existing();
    let r = match op {
        OpKind::Read => target.read(&record_key(ch.keys.next(rng, n))).await.map(drop),
        OpKind::Update => {
            let key = record_key(ch.keys.next(rng, n));
            let len = ch.sizes.next(rng);
            target.write(op, &key, values.value(rng, len)).await
        }
        OpKind::Insert => {
            let k = records.next_insert.fetch_add(1, Ordering::Relaxed);
            let len = ch.sizes.next(rng);
            let r = target.write(op, &record_key(k), values.value(rng, len)).await;
            if r.is_ok() {
                records.existing.fetch_max(k + 1, Ordering::Relaxed);
            }
            r
        }
        OpKind::Scan => {
            let start = ch.keys.next(rng, n);
            let len = rng.gen_range(1..=w.max_scan.max(1));
            target.scan(start, len).await.map(drop)
        }
        OpKind::ReadModifyWrite => {
            let key = record_key(ch.keys.next(rng, n));
            let len = ch.sizes.next(rng);
            target.read_modify_write(&key, values.value(rng, len)).await
        }
    };
    (op, r)
}

/// What one kind of operation recorded.
struct OpRec {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// One second of the timeline (by completion time).
struct Slot {
    ops: u64,
    errors: u64,
    hist: Histogram<u64>,
}

/// Everything measured in one run phase.
pub struct Recorder {
    /// Start of the measured window (end of the warm-up).
    measure_from: Instant,
    per_op: BTreeMap<OpKind, OpRec>,
    overall: Histogram<u64>,
    /// Open loop: answer minus actual send (what a closed-loop tool reports).
    service: Histogram<u64>,
    timeline: Vec<Slot>,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

/// Most timeline slots kept (seconds): a bound on memory.
const MAX_SLOTS: usize = 24 * 3600;

impl Recorder {
    /// An empty recorder whose measured window starts at `measure_from`.
    pub fn new(measure_from: Instant) -> Result<Recorder> {
        Ok(Recorder {
            measure_from,
            per_op: BTreeMap::new(),
            overall: histogram().map_err(Error::Internal)?,
            service: histogram().map_err(Error::Internal)?,
            timeline: Vec::new(),
            first_error: None,
            last_done: None,
        })
    }

    /// Records one measured operation: latency from `from` (the send in
    /// closed loop, the intended start in open loop) to `done`; `sent` is the
    /// actual send.
    pub fn record(
        &mut self,
        op: OpKind,
        from: Instant,
        sent: Instant,
        done: Instant,
        result: &Result<()>,
    ) -> Result<()> {
        let latency = done.saturating_duration_since(from);
        let rec = match self.per_op.entry(op) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(OpRec {
                hist: histogram().map_err(Error::Internal)?,
                errors: BTreeMap::new(),
            }),
        };
        record(&mut rec.hist, latency);
        record(&mut self.overall, latency);
        record(&mut self.service, done.saturating_duration_since(sent));
        let slot = done.saturating_duration_since(self.measure_from).as_secs() as usize;
        if slot < MAX_SLOTS {
            while self.timeline.len() <= slot {
                self.timeline.push(Slot {
                    ops: 0,
                    errors: 0,
                    hist: histogram().map_err(Error::Internal)?,
                });
            }
            let s = &mut self.timeline[slot];
            s.ops += 1;
            record(&mut s.hist, latency);
            s.errors += u64::from(result.is_err());
        }
        if let Err(e) = result {
            *rec.errors.entry(e.kind()).or_default() += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("{op}: {e}"));
            }
        }
        if self.last_done.is_none_or(|t| done > t) {
            self.last_done = Some(done);
        }
        Ok(())
    }

    /// Operations recorded so far, and the throughput and p99 (ms) of the
    /// last complete second (`None` in the first second).
    fn progress(&self, now: Instant) -> (u64, Option<(f64, f64)>) {
        let current = now.saturating_duration_since(self.measure_from).as_secs() as usize;
        let last = current.checked_sub(1).and_then(|i| self.timeline.get(i));
        (
            self.overall.len(),
            last.map(|s| (s.ops as f64, s.hist.value_at_quantile(0.99) as f64 / 1000.0)),
        )
    }
}

fn lock(m: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    // A task that panicked while recording left at worst one sample half
    // counted; the figures are still worth reporting.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared by every task of a run phase.
struct Ctx {
    target: Arc<Target>,
    workload: Workload,
    records: Arc<Records>,
    values: ValuePool,
    recorder: Mutex<Recorder>,
    /// Idle choosers for open-loop tasks (a task takes one, puts it back).
    spare: Mutex<Vec<Choosers>>,
    template: Choosers,
    /// First failure of the recorder itself (cannot happen once histograms
    /// exist: they are created with valid bounds).
    internal: Mutex<Option<Error>>,
}

impl Ctx {
    fn record(&self, op: OpKind, from: Instant, sent: Instant, done: Instant, r: &Result<()>) {
        if let Err(e) = lock(&self.recorder).record(op, from, sent, done, r) {
            self.internal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
    }

    fn take_choosers(&self) -> Choosers {
        let got = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        got.unwrap_or_else(|| self.template.clone())
    }

    fn put_choosers(&self, c: Choosers) {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

fn progress_bar(enabled: bool, label: &str, total: Duration) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total.as_millis() as u64);
    let style = ProgressStyle::with_template("{prefix:>20} [{bar:16}] {elapsed:>3} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(label.to_owned());
    pb
}

/// Runs the progress bar until `done` is set.
async fn tick_progress(
    pb: ProgressBar,
    ctx: Arc<Ctx>,
    start: Instant,
    warmup: Duration,
    done: Arc<std::sync::atomic::AtomicBool>,
) {
    while !done.load(Ordering::Relaxed) {
        let now = Instant::now();
        pb.set_position(now.saturating_duration_since(start).as_millis() as u64);
        if now < start + warmup {
            pb.set_message("warm-up");
        } else {
            let (n, last) = lock(&ctx.recorder).progress(now);
            pb.set_message(match last {
                Some((rate, p99)) => format!("{rate:>8.0} ops/s p99 {p99:>8.3} ms, {n} ops"),
                None => format!("first second, {n} ops"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pb.finish_and_clear();
}

/// Inserts records `0..phase.records` with `clients` concurrent writers.
pub async fn load(target: &Arc<Target>, phase: &Phase, clients: usize) -> Result<LoadReport> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let values = Arc::new(ValuePool::new(phase.value_size.max(), phase.seed));
    let start = Instant::now();
    let pb = progress_bar(phase.progress, &format!("{} load", target.spec.label), Duration::ZERO);
    pb.set_length(phase.records);
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (target, next, errors, first_error, values, pb) = (
                target.clone(),
                next.clone(),
                errors.clone(),
                first_error.clone(),
                values.clone(),
                pb.clone(),
            );
            let records = phase.records;
            let mut sizes = SizeChooser::new(phase.value_size);
            let mut rng = SmallRng::seed_from_u64(phase.seed.wrapping_mul(31).wrapping_add(c as u64));
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= records {
                        break;
                    }
                    let len = sizes.next(&mut rng);
                    if let Err(e) = target
                        .write(OpKind::Insert, &record_key(k), values.value(&mut rng, len))
                        .await
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert_with(|| e.to_string());
                    }
                    pb.inc(1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| Error::Internal(format!("a load task failed: {e}")))?;
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let errors = errors.load(Ordering::Relaxed);
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(LoadReport {
        records: phase.records,
        seconds: secs,
        ops_per_s: phase.records as f64 / secs,
        errors,
        first_error,
    })
}

/// Runs workload `w` against `target` (already loaded; `records` tracks the
/// records that exist) and reports it.
pub async fn run(target: &Arc<Target>, w: &Workload, records: &Arc<Records>, phase: &Phase) -> Result<WorkloadReport> {
    let template = Choosers {
        keys: KeyChooser::new(w.request, records.existing()),
        sizes: SizeChooser::new(phase.value_size),
    };
    let start = Instant::now();
    let measure_from = start + phase.warmup;
    let ctx = Arc::new(Ctx {
        target: target.clone(),
        workload: w.clone(),
        records: records.clone(),
        values: ValuePool::new(phase.value_size.max(), phase.seed),
        recorder: Mutex::new(Recorder::new(measure_from)?),
        spare: Mutex::new(Vec::new()),
        template,
        internal: Mutex::new(None),
    });
    let pb = progress_bar(
        phase.progress,
        &format!("{} {}", target.spec.label, w.name),
        phase.warmup + phase.duration,
    );
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = tokio::spawn(tick_progress(pb, ctx.clone(), start, phase.warmup, done.clone()));
    let seed = phase.seed.wrapping_mul(1_000_003)
        ^ u64::from(
            w.name
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b))),
        );
    let mut open = None;
    match phase.mode {
        Mode::Closed { clients } => {
            let stop_at = measure_from + phase.duration;
            let tasks: Vec<_> = (0..clients.max(1))
                .map(|c| {
                    let ctx = ctx.clone();
                    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(c as u64));
                    tokio::spawn(async move {
                        let mut ch = ctx.take_choosers();
                        while Instant::now() < stop_at {
                            let sent = Instant::now();
                            let (op, r) =
                                one_op(&ctx.target, &ctx.workload, &ctx.records, &mut ch, &ctx.values, &mut rng).await;
                            if sent >= measure_from {
                                ctx.record(op, sent, sent, Instant::now(), &r);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await
                    .map_err(|e| Error::Internal(format!("a client task failed: {e}")))?;
            }
        }
        Mode::Open { rate, max_inflight } => {
            let plan = Plan {
                rate,
                warmup: phase.warmup,
                duration: phase.duration,
                max_inflight,
            };
            let bound = u32::try_from(max_inflight).map_err(|_| Error::Config("--max-inflight is too large".into()))?;
            let slots = Arc::new(Semaphore::new(max_inflight));
            let rt = tokio::runtime::Handle::current();
            let pacer_ctx = ctx.clone();
            let pacer_slots = slots.clone();
            let paced = tokio::task::spawn_blocking(move || {
                pace(plan, &pacer_slots, seed, |d| {
                    let ctx = pacer_ctx.clone();
                    rt.spawn(async move {
                        let mut rng = d.rng;
                        let mut ch = ctx.take_choosers();
                        let sent = Instant::now();
                        let (op, r) =
                            one_op(&ctx.target, &ctx.workload, &ctx.records, &mut ch, &ctx.values, &mut rng).await;
                        if d.measured {
                            ctx.record(op, d.intended, sent, Instant::now(), &r);
                        }
                        ctx.put_choosers(ch);
                        drop(d.permit);
                    });
                })
            })
            .await
            .map_err(|e| Error::Internal(format!("the pacer failed: {e}")))?;
            // Every operation still out ends within its timeout; all permits
            // back means all of them are recorded.
            let _all = slots
                .acquire_many(bound)
                .await
                .map_err(|e| Error::Internal(format!("in-flight bound closed: {e}")))?;
            open = Some((plan, paced));
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    if let Some(e) = ctx.internal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(e);
    }
    let r = lock(&ctx.recorder);
    // Closed loop: operations per second over the measured window. Open
    // loop: from the first measured intended start to the last answer, so a
    // backlog drained after the schedule lowers the rate.
    let secs = match open {
        Some(_) => r
            .last_done
            .map_or(0.0, |t| t.saturating_duration_since(measure_from).as_secs_f64())
            .max(phase.duration.as_secs_f64()),
        None => phase.duration.as_secs_f64(),
    }
    .max(1e-9);
    let ops_by_kind: Vec<OpReport> = r
        .per_op
        .iter()
        .map(|(op, rec)| OpReport {
            op: op.name().to_owned(),
            count: rec.hist.len(),
            ops_per_s: rec.hist.len() as f64 / secs,
            errors: rec.errors.values().sum(),
            errors_by_kind: rec.errors.clone(),
            latency: Latency::of(&rec.hist),
            spectrum: super::report::spectrum(&rec.hist),
        })
        .collect();
    let errors = ops_by_kind.iter().map(|o| o.errors).sum();
    let measured_slots = phase.duration.as_secs_f64().ceil() as usize;
    let timeline: Vec<Interval> = r
        .timeline
        .iter()
        .enumerate()
        .take(measured_slots.max(1))
        .map(|(i, s)| Interval {
            t_s: i as f64 + 1.0,
            ops_per_s: s.ops as f64,
            errors: s.errors,
            p50_ms: s.hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: s.hist.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: s.hist.max() as f64 / 1000.0,
        })
        .collect();
    let (mode, target_rate, never_issued, held_back) = match (phase.mode, open) {
        (Mode::Open { rate, .. }, Some((plan, paced))) => (
            "open".to_owned(),
            Some(rate),
            plan.measured_requests().saturating_sub(paced.issued),
            paced.held_back,
        ),
        (Mode::Closed { clients }, _) => (format!("closed, {clients} clients"), None, 0, 0),
        (Mode::Open { rate, .. }, None) => (format!("open at {rate}/s"), Some(rate), 0, 0),
    };
    Ok(WorkloadReport {
        workload: w.name.clone(),
        description: w.description.clone(),
        distribution: w.request.describe(),
        mode,
        latency_from: if open.is_some() { "intended_start" } else { "send" }.to_owned(),
        warmup_s: phase.warmup.as_secs_f64(),
        duration_s: phase.duration.as_secs_f64(),
        ops: r.overall.len(),
        ops_per_s: r.overall.len() as f64 / secs,
        errors,
        target_rate,
        never_issued,
        held_back,
        latency: Latency::of(&r.overall),
        service: open.map(|_| Latency::of(&r.service)),
        spectrum: super::report::spectrum(&r.overall),
        ops_by_kind,
        timeline,
        scan_method: w.mix[3].gt(&0.0).then(|| target.scan_method().to_owned()),
        first_error: r.first_error.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_keeps_kinds_slots_and_errors_apart() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0).unwrap();
        let ms = Duration::from_millis;
        r.record(OpKind::Read, t0, t0, t0 + ms(2), &Ok(())).unwrap();
        r.record(OpKind::Read, t0 + ms(1500), t0 + ms(1500), t0 + ms(1501), &Ok(()))
            .unwrap();
        r.record(
            OpKind::Update,
            t0,
            t0 + ms(900),
            t0 + ms(1000),
            &Err(Error::Timeout { after: ms(100) }),
        )
        .unwrap();
        assert_eq!(r.overall.len(), 3);
        assert_eq!(r.per_op[&OpKind::Read].hist.len(), 2);
        assert_eq!(r.per_op[&OpKind::Update].errors.get("timeout"), Some(&1));
        // Latency from `from` (1 s), service time from the send (100 ms).
        assert!(r.per_op[&OpKind::Update].hist.max() >= 999_000);
        assert!(r.service.max() <= 101_000);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!((r.timeline[0].ops, r.timeline[0].errors), (1, 0));
        assert_eq!((r.timeline[1].ops, r.timeline[1].errors), (2, 1));
        assert!(r.first_error.as_deref().is_some_and(|e| e.starts_with("UPDATE")));
    }
}
