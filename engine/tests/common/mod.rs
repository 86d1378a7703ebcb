//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;

use corekv_engine::options::Clock;

/// Runs a future on a fresh glommio executor.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

/// A fresh directory on the real disk (tmpfs has no O_DIRECT), under target/.
pub fn test_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("engine-tests");
    let d = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The token of a key, as the layer above computes it.
pub fn token(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A clock the test moves by hand.
pub fn manual_clock(start: u64) -> (Clock, Rc<Cell<u64>>) {
    let c = Rc::new(Cell::new(start));
    let c2 = c.clone();
    (Rc::new(move || c2.get()), c)
}
