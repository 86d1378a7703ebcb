//! Manifest bytes: `VersionEdit::decode` and `ManifestState::apply`, inside
//! the record framing (`log::scan`) and directly.
//!
//! Input: `log_no u64 LE | manifest file bytes`; the file is replayed the way
//! `manifest::read_latest` does. The whole input is also decoded as one edit
//! (past the record checksum) and applied to a fresh state.
#![no_main]

use corekv_engine::log;
use corekv_engine::manifest::{FileRecord, ManifestState, VersionEdit};
use libfuzzer_sys::fuzz_target;

fn files(st: &ManifestState) -> Vec<(usize, &FileRecord)> {
    st.levels
        .iter()
        .enumerate()
        .flat_map(|(l, m)| m.values().map(move |f| (l, f)))
        .collect()
}

/// A state survives its own snapshot edit (what a manifest rewrite stores).
fn check_snapshot(st: &ManifestState) {
    let snap = st.snapshot_edit();
    let enc = snap.encode();
    let back = VersionEdit::decode(&enc).expect("a snapshot edit decodes");
    assert_eq!(back, snap);
    let mut again = ManifestState::default();
    again.apply(&back).expect("a snapshot applies to an empty state");
    assert_eq!(files(&again), files(st));
    assert_eq!(again.next_file_no, st.next_file_no);
    assert_eq!(again.last_seq, st.last_seq);
    assert_eq!(again.min_log_no, st.min_log_no);
}

fn decode_and_apply(st: &mut ManifestState, payload: &[u8]) -> bool {
    let Ok(e) = VersionEdit::decode(payload) else {
        return false;
    };
    let enc = e.encode();
    assert_eq!(VersionEdit::decode(&enc).as_ref(), Ok(&e), "edit does not round-trip");
    if st.apply(&e).is_err() {
        return false;
    }
    check_snapshot(st);
    true
}

fuzz_target!(|data: &[u8]| {
    // Directly, past the record checksum.
    let mut st = ManifestState::default();
    decode_and_apply(&mut st, data);

    if data.len() < 8 {
        return;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[..8]);
    let log_no = u64::from_le_bytes(n);
    let file = &data[8..];
    let _ = log::first_log_no(file);
    let sc = log::scan(file, log_no);
    let mut st = ManifestState::default();
    for (_, payload) in &sc.records {
        if !decode_and_apply(&mut st, payload) {
            break;
        }
    }
});
