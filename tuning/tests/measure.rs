//! The measurement on the real disk (quick mode), and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use corekv_tuning::{measure, Error, IoProperties, MeasureOptions, Step};

fn dir(name: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is on the real disk; /tmp may be tmpfs.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quick_measurement_on_the_real_disk() {
    let d = dir("measure");
    let mut steps = Vec::new();
    let p = measure(&d, &MeasureOptions::quick(), |s| steps.push(s)).unwrap();
    assert_eq!(
        steps,
        [Step::Probe, Step::Fdatasync, Step::Sequential, Step::RandomRead]
    );
    // The scratch file is gone, and nothing else was written.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    assert!(p.measured.data_dir.is_absolute());
    assert!(p.sequential.write_bytes_per_sec > 0 && p.sequential.read_bytes_per_sec > 0);
    assert!(p.random_read.qd32.ops > 0 && p.random_read.qd1.ops > 0);
    assert!(p.fdatasync.samples >= 10);
    assert!(p.disk.logical_block_size.is_none_or(|b| b <= 4096), "{:?}", p.disk);
    // What was measured survives the file.
    let back = IoProperties::from_toml(&p.to_toml().unwrap(), Path::new("x")).unwrap();
    assert_eq!(back, p);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn tmpfs_is_refused_with_the_engines_reason() {
    let d = Path::new("/dev/shm").join(format!("corekv-tuning-test-{}", std::process::id()));
    let r = measure(&d, &MeasureOptions::quick(), |_| {});
    let _ = std::fs::remove_dir_all(&d);
    let err = r.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::UnsuitableDirectory {
                source: corekv_engine::Error::VolatileStorage { fs_type: "tmpfs", .. },
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("tmpfs") && msg.contains("--data-dir"), "{msg}");
}

#[test]
fn bad_options_fail_before_any_file_is_made() {
    let d = dir("bad-options");
    let mut o = MeasureOptions::quick();
    o.scratch_bytes = 1 << 20;
    assert!(matches!(measure(&d, &o, |_| {}), Err(Error::InvalidOption(_))));
    assert!(!d.exists());
}

#[test]
fn numa_from_a_fake_sysfs() {
    let root = dir("numa");
    for (n, cpus) in [(1, "2-3"), (0, "0-1")] {
        let node = root.join(format!("node{n}"));
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join("cpulist"), format!("{cpus}\n")).unwrap();
    }
    std::fs::create_dir_all(root.join("power")).unwrap();
    assert_eq!(
        corekv_tuning::system::numa(&root, "0-3"),
        (2, vec!["0-1".to_owned(), "2-3".to_owned()])
    );
    assert_eq!(
        corekv_tuning::system::numa(&root.join("absent"), "0-3"),
        (1, vec!["0-3".to_owned()])
    );
    std::fs::remove_dir_all(&root).unwrap();
}
