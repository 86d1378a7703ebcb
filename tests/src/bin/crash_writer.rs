//! Writes keys with sync durability and prints each key number after its write
//! is acknowledged. The crash test kills it with SIGKILL at random moments and
//! checks that every number printed reads back.
//!
//! Usage: crash_writer DIR START WRITERS

use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

use corekv_engine::{Engine, Fs, Options};
use corekv_tests::{crash_key, crash_value, token};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: crash_writer DIR START WRITERS");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let (Ok(start), Ok(writers)) = (args[2].parse::<u64>(), args[3].parse::<u64>()) else {
        eprintln!("START and WRITERS must be numbers");
        std::process::exit(2);
    };
    let ex = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make() {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("cannot start executor: {e}");
            std::process::exit(1);
        }
    };
    ex.run(async move {
        let mut o = Options::new(Fs::real(), dir);
        // Small memtables so flushes and compactions happen under the kills too.
        o.memtable_bytes = 1 << 20;
        o.wal.segment_bytes = 1 << 20;
        let e = match Engine::open(o).await {
            Ok(e) => e,
            Err(err) => {
                eprintln!("open failed: {err}");
                std::process::exit(1);
            }
        };
        let out = Rc::new(std::cell::RefCell::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let e = e.clone();
            let out = out.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut i = start + w;
                loop {
                    let k = crash_key(i);
                    if let Err(err) = e.put(token(&k), &k, &crash_value(i), &[], 0).await {
                        eprintln!("put {i} failed: {err}");
                        std::process::exit(1);
                    }
                    let mut o = out.borrow_mut();
                    // One line per acknowledged key; the parent ignores a torn last line.
                    let _ = writeln!(o, "{i}");
                    let _ = o.flush();
                    i += writers;
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}
