//! Latency histograms shared by the load generators (`sdk-bench`,
//! `corekv-bench`): µs, 3 significant digits, clamped to one minute, and the
//! short names of client failures used as "errors by kind" keys.

use corekv_net::client::error::error_code_name;
use corekv_net::client::ClientError;
use hdrhistogram::Histogram;

/// Longest latency the histograms track (µs); longer samples are clamped.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty latency histogram in µs, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())
}

/// Records a duration in µs, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US);
    h.saturating_record(us);
}

/// A short, stable name for the kind of a failure, the key of
/// "errors by kind" (server errors carry their protocol code name).
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Timeout { .. } => "timeout".to_owned(),
        ClientError::Connect { .. } => "connect".to_owned(),
        ClientError::ConnectTimeout { .. } => "connect_timeout".to_owned(),
        ClientError::ConnectionClosed { .. } => "connection_closed".to_owned(),
        ClientError::Server { code, .. } => format!("server_{}", error_code_name(*code)),
        ClientError::NotAnInteger { .. } => "not_an_integer".to_owned(),
        ClientError::Protocol(_) => "protocol".to_owned(),
        ClientError::UnexpectedResponse { .. }
        | ClientError::UnexpectedInteger { .. }
        | ClientError::SlotCountMismatch { .. } => "unexpected_response".to_owned(),
        ClientError::Unavailable { .. } => "unavailable".to_owned(),
        ClientError::Ring(_) => "bad_ring".to_owned(),
        _ => "other".to_owned(),
    }
}
