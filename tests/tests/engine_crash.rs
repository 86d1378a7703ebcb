//! Real-process crash test: a child writes with sync durability and reports
//! each acknowledged key on a pipe; the test kills it with SIGKILL at random
//! times, reopens the engine and reads every acknowledged key back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corekv_engine::{Engine, Fs, Options};
use corekv_tests::{crash_key, crash_value, token};
use rand::{Rng, SeedableRng};

const CYCLES: usize = 20;
const WRITERS: u64 = 8;

fn verify(dir: PathBuf, acked: BTreeSet<u64>) -> usize {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let mut o = Options::new(Fs::real(), dir);
            o.memtable_bytes = 1 << 20;
            o.wal.segment_bytes = 1 << 20;
            let e = Engine::open(o).await.expect("reopen after SIGKILL");
            for &i in &acked {
                let k = crash_key(i);
                let got = e.get(token(&k), &k).await.expect("read");
                let got = got.unwrap_or_else(|| panic!("acknowledged key {i} lost"));
                assert_eq!(got.value, crash_value(i), "key {i} has a wrong value");
            }
            e.close().await.unwrap();
            acked.len()
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(std::process::id() as u64);
    let mut acked_all = BTreeSet::new();
    let mut next = 0u64;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(&dir)
            .arg(next.to_string())
            .arg(WRITERS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                // A line without its newline was torn by the kill: not reported.
                if let Some(n) = line.strip_suffix('\n').and_then(|s| s.parse::<u64>().ok()) {
                    l2.lock().unwrap().push(n);
                }
                line.clear();
            }
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..600)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(err.is_empty(), "cycle {cycle}: writer reported: {err}");
        assert!(!status.success());
        let got = lines.lock().unwrap().clone();
        let max = got.iter().copied().max().unwrap_or(next);
        acked_all.extend(got.iter().copied());
        next = max + WRITERS + 1;
        let n = verify(dir.clone(), acked_all.clone());
        eprintln!(
            "cycle {cycle}: {} keys acknowledged this cycle, {n} verified in all",
            got.len()
        );
    }
    assert!(
        acked_all.len() > CYCLES * 10,
        "the writer made too little progress to test anything"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
