//! What one test measured, and its three renderings: the text line (closed
//! loop, unchanged), the redis-benchmark CSV line, and the JSON object that
//! `--json` writes for both modes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::Test;

/// The figures only an open-loop run has.
pub struct OpenStats {
    /// `--rate`.
    pub target_rps: f64,
    /// Successful answers per second over the same interval as `Report::rps`.
    pub ok_rps: f64,
    /// Length of the measured schedule (`--duration-s`), s.
    pub duration_s: f64,
    /// Unmeasured schedule before it (`--warmup-s`), s.
    pub warmup_s: f64,
    /// `--max-inflight`.
    pub max_inflight: usize,
    /// Requests the measured schedule holds (rate x duration).
    pub planned: u64,
    /// Of those, how many were sent.
    pub issued: u64,
    /// Of those, how many were due while the generator waited for one of the
    /// `max_inflight` slots, so were sent late because of the bound (their
    /// latency still counts from the intended start).
    pub held_back: u64,
    /// Measured requests never sent: the generator was still behind one second
    /// after the schedule ended. Non-zero means the target rate was not
    /// sustained and the percentiles are a lower bound.
    pub never_issued: u64,
    /// Requests whose send started more than 1 ms after their intended start
    /// (a stalled server holding the in-flight bound, or a saturated generator).
    pub late_1ms: u64,
    /// Answer minus actual send: what a closed-loop tool would report.
    pub service: Histogram<u64>,
    /// Actual send minus intended start.
    pub lag: Histogram<u64>,
}

/// The result of one test.
pub struct Report {
    pub test: Test,
    /// Answers (successful or not) per second.
    pub rps: f64,
    /// Latency, µs: from the send in closed loop, from the intended start in
    /// open loop.
    pub hist: Histogram<u64>,
    /// Failed requests by [`error_kind`].
    pub errors: BTreeMap<String, u64>,
    /// Open-loop figures; `None` in closed loop.
    pub open: Option<OpenStats>,
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    ms(h.value_at_quantile(quantile) as f64)
}

/// A float as JSON (`null` for NaN and infinities, which JSON lacks).
fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "null".to_owned()
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Percentiles of a histogram as a JSON object, ms.
fn json_latency(h: &Histogram<u64>) -> String {
    format!(
        "{{\"mean\":{},\"min\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p99_9\":{},\"p99_99\":{},\"max\":{}}}",
        num(ms(h.mean()), 3),
        num(ms(h.min() as f64), 3),
        num(q(h, 0.50), 3),
        num(q(h, 0.90), 3),
        num(q(h, 0.99), 3),
        num(q(h, 0.999), 3),
        num(q(h, 0.9999), 3),
        num(ms(h.max() as f64), 3),
    )
}

impl Report {
    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// `kind: n, kind: n`, or `none`.
    pub fn errors_by_kind(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_owned();
        }
        self.errors
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn csv_line(&self) -> String {
        let h = &self.hist;
        format!(
            "\"{}\",\"{:.2}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\"",
            self.test.name(),
            self.rps,
            ms(h.mean()),
            ms(h.min() as f64),
            q(h, 0.50),
            q(h, 0.95),
            q(h, 0.99),
            ms(h.max() as f64),
        )
    }

    /// The closed-loop line, or the open-loop block (several lines).
    pub fn text(&self) -> String {
        let h = &self.hist;
        let Some(o) = &self.open else {
            let mut s = format!(
                "{}: {:.2} requests per second, avg={:.3} p50={:.3} p99={:.3} p999={:.3} max={:.3} msec",
                self.test.name(),
                self.rps,
                ms(h.mean()),
                q(h, 0.50),
                q(h, 0.99),
                q(h, 0.999),
                ms(h.max() as f64),
            );
            if !self.errors.is_empty() {
                let _ = write!(s, " ({} errors: {})", self.error_count(), self.errors_by_kind());
            }
            return s;
        };
        let pct = |h: &Histogram<u64>| {
            format!(
                "p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} p99.99={:.3} max={:.3}",
                q(h, 0.50),
                q(h, 0.90),
                q(h, 0.99),
                q(h, 0.999),
                q(h, 0.9999),
                ms(h.max() as f64)
            )
        };
        let mut s = format!(
            "{}: open loop, target {:.0}/s, achieved {:.2}/s (ok {:.2}/s); {} requests measured over {} s after {} s of warm-up\n",
            self.test.name(),
            o.target_rps,
            self.rps,
            o.ok_rps,
            h.len(),
            o.duration_s,
            o.warmup_s,
        );
        let _ = writeln!(s, "  latency from intended start, msec: {}", pct(h));
        let _ = writeln!(
            s,
            "  service time from actual send, msec (closed-loop view): {}",
            pct(&o.service)
        );
        let _ = writeln!(
            s,
            "  send lag: p99={:.3} max={:.3} msec; {} sent > 1 ms late; {} held back by --max-inflight {}; {} of {} never sent",
            q(&o.lag, 0.99),
            ms(o.lag.max() as f64),
            o.late_1ms,
            o.held_back,
            o.max_inflight,
            o.never_issued,
            o.planned,
        );
        let _ = write!(s, "  errors: {} ({})", self.error_count(), self.errors_by_kind());
        if o.never_issued > 0 {
            let _ = write!(
                s,
                "\n  WARNING: the target rate was not sustained ({} requests never sent): the percentiles are a lower bound",
                o.never_issued
            );
        }
        s
    }

    /// One element of the JSON `tests` array.
    pub fn json(&self) -> String {
        let h = &self.hist;
        let errors = self
            .errors
            .iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect::<Vec<_>>()
            .join(",");
        let mut s = format!(
            "{{\"test\":{},\"requests\":{},\"achieved_rps\":{},\"latency_from\":{},\"latency_ms\":{},\"errors\":{},\"errors_by_kind\":{{{errors}}}",
            json_str(self.test.name()),
            h.len(),
            num(self.rps, 2),
            json_str(if self.open.is_some() { "intended_start" } else { "send" }),
            json_latency(h),
            self.error_count(),
        );
        if let Some(o) = &self.open {
            let _ = write!(
                s,
                ",\"target_rps\":{},\"ok_rps\":{},\"duration_s\":{},\"warmup_s\":{},\"max_inflight\":{},\"planned\":{},\"issued\":{},\"held_back_by_max_inflight\":{},\"never_issued\":{},\"sent_over_1ms_late\":{},\"service_time_ms\":{},\"send_lag_ms\":{}",
                num(o.target_rps, 2),
                num(o.ok_rps, 2),
                num(o.duration_s, 3),
                num(o.warmup_s, 3),
                o.max_inflight,
                o.planned,
                o.issued,
                o.held_back,
                o.never_issued,
                o.late_1ms,
                json_latency(&o.service),
                json_latency(&o.lag),
            );
        }
        s.push('}');
        s
    }
}
