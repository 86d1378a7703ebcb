//! Unit tests: the file format and the derivation, without a disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use crate::derive::{self, derive, device_concurrency};
use crate::props::{self, *};
use crate::Error;

/// Figures shaped like the fio anchors of our 2-core VM (shared/ANCHORS.md).
fn sample() -> IoProperties {
    IoProperties {
        format_version: FORMAT_VERSION,
        measured: Measured {
            at: "2026-11-23T07:00:00Z".to_owned(),
            unix_time: 1_795_417_200,
            data_dir: PathBuf::from("/var/lib/corekv"),
            tool_version: "0.1.0".to_owned(),
            quick: false,
            scratch_bytes: 256 << 20,
        },
        disk: Disk {
            fs_type: "ext4".to_owned(),
            device: "254:0".to_owned(),
            device_name: Some("vda".to_owned()),
            logical_block_size: Some(512),
            physical_block_size: Some(4096),
            dio_offset_align: Some(512),
            dio_mem_align: Some(4),
            direct_io_align: 512,
            rotational: Some(true),
            scheduler: Some("mq-deadline".to_owned()),
            read_ahead_kb: None,
        },
        sequential: Sequential {
            block_bytes: 1 << 20,
            depth: 8,
            write_bytes_per_sec: 2_300_000_000,
            read_bytes_per_sec: 2_900_000_000,
        },
        random_read: RandomRead {
            block_bytes: 4096,
            qd1: DepthFigures {
                depth: 1,
                ops: 26_800,
                iops: 13_400,
                p50_us: 46.0,
                p99_us: 123.0,
            },
            qd32: DepthFigures {
                depth: 32,
                ops: 192_000,
                iops: 96_000,
                p50_us: 310.5,
                p99_us: 850.0,
            },
        },
        fdatasync: Fdatasync {
            write_bytes: 4096,
            samples: 2000,
            per_sec: 7500,
            p50_us: 130.0,
            p99_us: 214.0,
            max_us: 1210.25,
        },
        io_uring: IoUringInfo {
            supported_opcodes: vec!["READ".to_owned(), "WRITE".to_owned()],
            missing_opcodes: vec![],
            features: vec!["NODROP".to_owned(), "FAST_POLL".to_owned()],
            setup_sqpoll: true,
            setup_coop_taskrun: true,
            setup_single_issuer: true,
            setup_defer_taskrun: true,
            iopoll_data_dir: false,
        },
        system: System {
            kernel: "6.18.0".to_owned(),
            cores: 2,
            online_cpus: 2,
            numa_nodes: 1,
            numa_cpus: vec!["0-1".to_owned()],
            memlock_soft_bytes: Some(8 << 20),
            memlock_hard_bytes: None,
            memlock_exempt: false,
            transparent_hugepages: Some("madvise".to_owned()),
            cpu_governor: None,
        },
    }
}

fn p() -> &'static Path {
    Path::new("io-properties.toml")
}

#[test]
fn the_file_round_trips() {
    let props = sample();
    let text = props.to_toml().unwrap();
    assert!(text.starts_with("# corekv io-properties"), "{text}");
    assert!(text.contains("format_version = 1"), "{text}");
    assert!(text.contains("[random_read.qd32]"), "{text}");
    let back = IoProperties::from_toml(&text, p()).unwrap();
    assert_eq!(back, props);

    // Unknown sections and absent optional facts read fine.
    let mut lean = sample();
    lean.disk.logical_block_size = None;
    lean.system.memlock_soft_bytes = None;
    let text = format!("{}\n[future_section]\nx = 1\n", lean.to_toml().unwrap());
    assert!(!text.contains("memlock_soft_bytes"), "unlimited is written as absent");
    assert_eq!(IoProperties::from_toml(&text, p()).unwrap(), lean);
}

#[test]
fn write_then_read_on_disk() {
    // Under the crate's target directory, not /tmp (which may be tmpfs).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp")
        .join(format!("tuning-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(FILE_NAME);
    let props = sample();
    props.write(&path).unwrap();
    assert_eq!(IoProperties::read(&path).unwrap(), props);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    assert!(!Path::new(&tmp).exists(), "the temporary file is renamed away");
    std::fs::remove_dir_all(&dir).unwrap();
    let err = IoProperties::read(&path).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
}

#[test]
fn a_newer_version_is_refused_naming_both_versions() {
    let text = sample()
        .to_toml()
        .unwrap()
        .replace("format_version = 1", "format_version = 2");
    let err = IoProperties::from_toml(&text, p()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NewerFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("format_version 2") && msg.contains("io-properties.toml") && msg.contains("corekv tune"),
        "{msg}"
    );
    // Even when the rest would not parse: the version is checked first.
    let err = IoProperties::from_toml(
        "format_version = 7\n[sequential]\nwrite_bytes_per_sec = \"fast\"\n",
        p(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NewerFormat { found: 7, .. }), "{err:?}");
}

#[test]
fn malformed_files_say_what_is_wrong() {
    let cases: [(String, &str); 6] = [
        ("format_version = \n".to_owned(), ""),
        ("[measured]\nat = \"x\"\n".to_owned(), "format_version is missing"),
        ("format_version = \"1\"\n".to_owned(), "not an integer"),
        ("format_version = 0\n".to_owned(), "not a version"),
        (
            sample()
                .to_toml()
                .unwrap()
                .replace("[fdatasync]\n", "[fdatasync]\nxx = 1\n")
                .replace("p50_us = 130.0\n", ""),
            "p50_us",
        ),
        (
            sample()
                .to_toml()
                .unwrap()
                .replace("write_bytes_per_sec = 2300000000", "write_bytes_per_sec = 0"),
            "sequential.write_bytes_per_sec is 0",
        ),
    ];
    for (text, want) in cases {
        let err = IoProperties::from_toml(&text, p()).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{err} should mention {want}");
    }
}

#[test]
fn derivation_arithmetic() {
    let d = derive(&sample());
    // 2.3 GB/s: half and a quarter, rounded down to whole MiB.
    assert_eq!(d.flush_bytes_per_sec.value, (2_300_000_000u64 / 2) >> 20 << 20);
    assert_eq!(d.flush_bytes_per_sec.value, 1096 << 20);
    assert_eq!(d.compaction_bytes_per_sec.value, 548 << 20);
    assert!(
        d.flush_bytes_per_sec.reason.contains("2.30 GB/s"),
        "{}",
        d.flush_bytes_per_sec.reason
    );
    // 96k / 13.4k = 7.2 -> 8 useful slots -> 8 * 16 = 128 entries.
    assert_eq!(device_concurrency(&sample()), 8);
    assert_eq!(d.io_depth.value, 128);
    // 2.3 GB/s * 214 us = 492 kB per fdatasync, x4 = 1.97 MB -> 2 MiB.
    assert_eq!(d.wal_max_unsynced_bytes.value, 2 << 20);
    assert!(
        d.wal_max_unsynced_bytes.reason.contains("214"),
        "{}",
        d.wal_max_unsynced_bytes.reason
    );

    // A fast NVMe that scales past depth 32: the ring grows, within the cap.
    let mut nvme = sample();
    nvme.random_read.qd1.iops = 12_000;
    nvme.random_read.qd32.iops = 600_000;
    nvme.sequential.write_bytes_per_sec = 6_000_000_000;
    nvme.fdatasync.p99_us = 30.0;
    let d = derive(&nvme);
    assert_eq!(device_concurrency(&nvme), 32);
    assert_eq!(d.io_depth.value, 512);
    // 6 GB/s * 30 us = 180 kB, x4 = 720 kB -> 1 MiB.
    assert_eq!(d.wal_max_unsynced_bytes.value, 1 << 20);

    // A slow disk that does not scale: floors apply.
    let mut slow = sample();
    slow.random_read.qd1.iops = 150;
    slow.random_read.qd32.iops = 140;
    slow.sequential.write_bytes_per_sec = 1_500_000;
    slow.fdatasync.p99_us = 20.0;
    let d = derive(&slow);
    assert_eq!(device_concurrency(&slow), 1);
    assert_eq!(d.io_depth.value, derive::MIN_IO_DEPTH);
    assert_eq!(d.flush_bytes_per_sec.value, 1 << 20, "at least 1 MiB/s");
    assert_eq!(d.compaction_bytes_per_sec.value, 1 << 20);
    assert_eq!(d.wal_max_unsynced_bytes.value, derive::MIN_GROUP_COMMIT_BYTES);

    // A disk whose fdatasync is very slow: the batch is capped.
    let mut laggy = sample();
    laggy.fdatasync.p99_us = 80_000.0;
    assert_eq!(
        derive(&laggy).wal_max_unsynced_bytes.value,
        derive::MAX_GROUP_COMMIT_BYTES
    );
}

#[test]
fn dates_and_quantiles() {
    assert_eq!(props::rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(props::rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(props::rfc3339_utc(1_795_417_262), "2026-11-23T07:01:02Z");
    let ns: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
    assert_eq!(crate::disk::quantile_us(&ns, 0.5), 51.0);
    assert_eq!(crate::disk::quantile_us(&ns, 0.99), 99.0);
    assert_eq!(crate::disk::quantile_us(&ns, 1.0), 100.0);
    assert_eq!(crate::disk::quantile_us(&[], 0.5), 0.0);
}

#[test]
fn options_are_checked() {
    let mut o = crate::MeasureOptions::quick();
    o.scratch_bytes = 3 << 20;
    assert!(matches!(crate::disk::check_options(&o), Err(Error::InvalidOption(_))));
    o.scratch_bytes = (8 << 20) + 4096;
    assert!(matches!(crate::disk::check_options(&o), Err(Error::InvalidOption(_))));
    assert!(crate::disk::check_options(&crate::MeasureOptions::full()).is_ok());
}

#[test]
fn an_o_direct_refusal_gets_the_engines_error() {
    let dir = Path::new("/data");
    let e = corekv_engine::io::direct_open_error(dir, &dir.join("f"), std::io::Error::from_raw_os_error(libc::EINVAL));
    let err = Error::UnsuitableDirectory {
        path: dir.to_path_buf(),
        source: e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("does not support O_DIRECT") && msg.contains("--data-dir"),
        "{msg}"
    );
    let other =
        corekv_engine::io::direct_open_error(dir, &dir.join("f"), std::io::Error::from_raw_os_error(libc::EACCES));
    assert!(!matches!(other, corekv_engine::Error::NoDirectIo { .. }));
}
