//! Histories of client operations, written as JSON lines so that any checker
//! (ours, Knossos, Elle, a script) can read them.
//!
//! One line per operation:
//! `{"client":"reg-1","op":"cas","key":"reg:0:3","value":"1:2","start_us":1200,"end_us":1450,"result":"ok"}`
//! - `start_us`, `end_us`: microseconds since the run began; `end_us` is
//!   `null` when the client never got an answer (the outcome is unknown).
//! - `result`: `ok`, `fail` (the operation answered that it did nothing, e.g.
//!   a CAS whose condition failed), `unknown` (no answer, a timeout or an
//!   error that does not say whether it took effect), or `read:<value>` /
//!   `read:nil` for reads.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it took effect.
    Ok,
    /// Answered that it did nothing (condition failed, refused).
    Fail,
    /// No answer, or an error that leaves the effect open.
    Unknown,
    /// A read's answer (`None`: the key was absent).
    Read(Option<String>),
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Which client ran it (`reg-1`, `set-0`, ...).
    pub client: String,
    /// What it was: `get`, `put`, `cas`, `serial_get`, `incr`.
    pub op: &'static str,
    /// The key.
    pub key: String,
    /// The argument (the value written, `expected:new` for a CAS, the
    /// delta of an INCR); empty for reads.
    pub value: String,
    /// When the client sent it, µs since the run began.
    pub start_us: u64,
    /// When the client got the answer (`None`: never).
    pub end_us: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Event {
    /// The event as one JSON object (no newline).
    pub fn to_json(&self) -> String {
        let end = self.end_us.map_or("null".to_owned(), |e| e.to_string());
        let result = match &self.outcome {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Fail => "fail".to_owned(),
            Outcome::Unknown => "unknown".to_owned(),
            Outcome::Read(None) => "read:nil".to_owned(),
            Outcome::Read(Some(v)) => format!("read:{v}"),
        };
        format!(
            "{{\"client\":{},\"op\":{},\"key\":{},\"value\":{},\"start_us\":{},\"end_us\":{end},\"result\":{}}}",
            json_str(&self.client),
            json_str(self.op),
            json_str(&self.key),
            json_str(&self.value),
            self.start_us,
            json_str(&result),
        )
    }
}

/// Writes `events`, ordered by start time, to `path` as JSON lines.
pub fn write(path: &Path, events: &mut [Event]) -> std::io::Result<()> {
    events.sort_by_key(|e| e.start_us);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events.iter() {
        writeln!(f, "{}", e.to_json())?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_json_object_with_escaped_strings() {
        let e = Event {
            client: "set-\"0\"".into(),
            op: "put",
            key: "k\n1".into(),
            value: "\u{1}".into(),
            start_us: 5,
            end_us: None,
            outcome: Outcome::Read(Some("x".into())),
        };
        assert_eq!(
            e.to_json(),
            r#"{"client":"set-\"0\"","op":"put","key":"k\n1","value":"\u0001","start_us":5,"end_us":null,"result":"read:x"}"#
        );
    }
}
