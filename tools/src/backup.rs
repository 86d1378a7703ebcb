//! `corekv snapshot`, `corekv backup` and `corekv restore` (docs/backup.md).
//!
//! - `snapshot` is an operator command the node runs (`snapshot NAME`,
//!   `snapshots`, `snapshot-delete NAME`, or their `local-` forms).
//! - `backup` reads the snapshot's description from the node given, then
//!   every member's snapshot files over the node-to-node SNAPSHOT_READ
//!   opcode, in chunks: each chunk's CRC32C is checked on arrival, each
//!   whole file's against the CRC32C the node computed when it took the
//!   snapshot, and the directory is read back and checked once more before
//!   the command says it succeeded. The CLI never reads a node's data
//!   directory itself, so nodes may be remote.
//! - `restore` checks every file of the backup against `backup.toml`, reads
//!   the tables offline (`corekv_shard::backup::read_backup`) and sends the
//!   records, in batches, to the target cluster's nodes with RESTORE; each
//!   node writes them through the replication path. Idempotent.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgGroup, ArgMatches, Command};
use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerResponse, RangeEntry, RestoreMode, MAX_SNAPSHOT_CHUNK};
use corekv_net::msg::{Limits, List};
use corekv_shard::backup::{
    human_bytes, BackupFile, BackupManifest, BackupNode, BatchSink, RestoreBatch, SnapshotMeta, BACKUP_FORMAT,
    BACKUP_MANIFEST, SNAPSHOT_META,
};

use crate::admin::{auth_args, call_with, credentials, node_arg, timeout_arg, AdminConn, CallError, Credentials};

/// The subcommands.
pub fn commands() -> Vec<Command> {
    [
        Command::new("snapshot")
            .about("Take, list or delete a named snapshot on every node of the cluster (hard links: cheap)")
            .arg(node_arg())
            .arg(timeout_arg())
            .arg(
                Arg::new("name")
                    .long("name")
                    .value_name("NAME")
                    .help("Take snapshot NAME"),
            )
            .arg(
                Arg::new("list")
                    .long("list")
                    .action(ArgAction::SetTrue)
                    .help("List the snapshots of every node"),
            )
            .arg(
                Arg::new("delete")
                    .long("delete")
                    .value_name("NAME")
                    .help("Delete snapshot NAME on every node (frees the space of tables compaction replaced)"),
            )
            .arg(
                Arg::new("local")
                    .long("local")
                    .action(ArgAction::SetTrue)
                    .help("Only on the node given, not on every member"),
            )
            .group(ArgGroup::new("action").args(["name", "list", "delete"]).required(true)),
        Command::new("backup")
            .about("Copy every node's snapshot NAME into a directory, checked end to end, with a manifest")
            .arg(node_arg())
            .arg(timeout_arg())
            .arg(
                Arg::new("name")
                    .long("name")
                    .value_name("NAME")
                    .required(true)
                    .help("The snapshot to copy (corekv snapshot --name NAME)"),
            )
            .arg(
                Arg::new("to")
                    .long("to")
                    .value_name("DIR")
                    .required(true)
                    .help("The backup directory (new, or empty)"),
            )
            .arg(
                Arg::new("cluster-name")
                    .long("cluster-name")
                    .value_name("NAME")
                    .default_value("corekv")
                    .help("A name for the cluster, recorded in the manifest"),
            ),
        Command::new("restore")
            .about(
                "Write every record of a backup into a running cluster (any size: data goes where the target's \\
                 ring puts it); idempotent",
            )
            .arg(node_arg())
            .arg(timeout_arg())
            .arg(
                Arg::new("from")
                    .long("from")
                    .value_name("DIR")
                    .required(true)
                    .help("The backup directory (corekv backup --to DIR)"),
            )
            .arg(
                Arg::new("consistency")
                    .long("consistency")
                    .value_name("LEVEL")
                    .default_value("all")
                    .value_parser(["one", "quorum", "all", "local_quorum"])
                    .help("Replicas that must hold each record before the next batch (a miss becomes a hint)"),
            )
            .arg(
                Arg::new("parallel")
                    .long("parallel")
                    .value_name("N")
                    .default_value("4")
                    .value_parser(clap::value_parser!(u16).range(1..=64))
                    .help("Batches in flight (one connection each, spread over the target's nodes)"),
            )
            .arg(
                Arg::new("batch")
                    .long("batch")
                    .value_name("RECORDS")
                    .default_value("256")
                    .value_parser(clap::value_parser!(u32).range(1..=4096))
                    .help("Records per RESTORE request"),
            ),
    ]
    .into_iter()
    .map(auth_args)
    .collect()
}

/// Whether `name` is one of these subcommands.
pub fn is_backup(name: &str) -> bool {
    matches!(name, "snapshot" | "backup" | "restore")
}

/// Runs one of the subcommands.
pub fn run(name: &str, m: &ArgMatches) -> Result<bool, String> {
    let node = m.get_one::<String>("node").map_or("127.0.0.1:7380", String::as_str);
    let timeout = Duration::from_secs(m.get_one::<u64>("timeout").copied().unwrap_or(3600));
    let creds = credentials(m)?;
    match name {
        "snapshot" => snapshot(node, timeout, &creds, m),
        "backup" => {
            let snapshot = m.get_one::<String>("name").map_or("", String::as_str);
            let to = PathBuf::from(m.get_one::<String>("to").map_or("", String::as_str));
            let cluster_name = m.get_one::<String>("cluster-name").map_or("corekv", String::as_str);
            backup(node, timeout, &creds, snapshot, &to, cluster_name).map(|()| true)
        }
        "restore" => {
            let from = PathBuf::from(m.get_one::<String>("from").map_or("", String::as_str));
            let opts = RestoreOptions {
                consistency: match m.get_one::<String>("consistency").map(String::as_str) {
                    Some("one") => 1,
                    Some("quorum") => 2,
                    Some("local_quorum") => 5,
                    _ => 3,
                },
                parallel: usize::from(m.get_one::<u16>("parallel").copied().unwrap_or(4)),
                batch: usize::try_from(m.get_one::<u32>("batch").copied().unwrap_or(256)).unwrap_or(256),
            };
            restore(node, timeout, &creds, &from, &opts).map(|()| true)
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn snapshot(node: &str, timeout: Duration, creds: &Credentials, m: &ArgMatches) -> Result<bool, String> {
    let local = m.get_flag("local");
    let prefix = if local { "local-" } else { "" };
    let command = if let Some(name) = m.get_one::<String>("name") {
        format!("{prefix}snapshot {name}")
    } else if let Some(name) = m.get_one::<String>("delete") {
        format!("{prefix}snapshot-delete {name}")
    } else {
        format!("{prefix}snapshots")
    };
    let report = call_with(node, &command, timeout, creds)?;
    print!("{report}");
    if !report.ends_with('\n') {
        println!();
    }
    Ok(true)
}

/// Fetches one whole file of a node's snapshot into `dest` (written aside,
/// synced, renamed), checking each chunk's CRC32C and, with `expect`, the
/// whole file's size and CRC32C. Returns (size, crc32c).
fn fetch_file(
    conn: &mut AdminConn,
    snapshot: &str,
    path: &str,
    dest: &Path,
    expect: Option<(u64, u32)>,
) -> Result<(u64, u32), String> {
    let node = conn.node().to_owned();
    let part = dest.with_extension("part");
    let mut out = std::fs::File::create(&part).map_err(|e| format!("creating {}: {e}", part.display()))?;
    let mut offset = 0u64;
    let mut crc = 0u32;
    loop {
        let body = conn.call(PeerOp::SnapshotRead {
            name: snapshot.as_bytes(),
            path: path.as_bytes(),
            offset,
            max_len: MAX_SNAPSHOT_CHUNK,
        })?;
        let (file_size, data, chunk_crc) =
            match PeerResponse::decode_body(PeerOpcode::SnapshotRead, &body, &Limits::default()) {
                Ok(PeerResponse::SnapshotChunk {
                    file_size,
                    data,
                    crc32c,
                }) => (file_size, data, crc32c),
                Ok(_) => return Err(format!("{node} answered SNAPSHOT_READ with something else")),
                Err(e) => return Err(format!("{node}: undecodable chunk of {path}: {e}")),
            };
        if crc32c::crc32c(data) != chunk_crc {
            return Err(format!(
                "{node}: chunk of {path} at offset {offset} arrived damaged (checksum mismatch)"
            ));
        }
        if let Some((size, _)) = expect {
            if file_size != size {
                return Err(format!(
                    "{node}: {path} of snapshot {snapshot} is {file_size} bytes, but the snapshot recorded {size}"
                ));
            }
        }
        out.write_all(data)
            .map_err(|e| format!("writing {}: {e}", part.display()))?;
        crc = crc32c::crc32c_append(crc, data);
        offset += data.len() as u64;
        if offset >= file_size || data.is_empty() {
            if offset != file_size {
                return Err(format!(
                    "{node}: {path} ended at {offset} bytes of {file_size} (the file changed under the snapshot?)"
                ));
            }
            break;
        }
    }
    if let Some((size, want)) = expect {
        if (offset, crc) != (size, want) {
            return Err(format!(
                "{node}: {path} of snapshot {snapshot} does not match what the snapshot recorded: \
                 {offset} bytes crc32c {crc:#010x}, expected {size} bytes crc32c {want:#010x} \
                 (the file is damaged on the node)"
            ));
        }
    }
    out.sync_all().map_err(|e| format!("syncing {}: {e}", part.display()))?;
    drop(out);
    std::fs::rename(&part, dest).map_err(|e| format!("renaming {}: {e}", part.display()))?;
    Ok((offset, crc))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// Size and CRC32C of a local file.
fn checksum(path: &Path) -> Result<(u64, u32), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
    Ok((size, crc))
}

/// Reads a node's `SNAPSHOT.toml` of `snapshot`.
fn fetch_meta(conn: &mut AdminConn, snapshot: &str, scratch: &Path) -> Result<SnapshotMeta, String> {
    let (size, _) = fetch_file(conn, snapshot, SNAPSHOT_META, scratch, None)
        .map_err(|e| format!("reading snapshot {snapshot} of {}: {e}", conn.node()))?;
    if size > corekv_shard::backup::MAX_META_BYTES {
        return Err(format!("{}: {SNAPSHOT_META} of {size} bytes is too large", conn.node()));
    }
    let text = std::fs::read_to_string(scratch).map_err(|e| format!("reading {}: {e}", scratch.display()))?;
    SnapshotMeta::from_toml(&text, &format!("{SNAPSHOT_META} of {}", conn.node()))
}

fn backup(
    node: &str,
    timeout: Duration,
    creds: &Credentials,
    snapshot: &str,
    to: &Path,
    cluster_name: &str,
) -> Result<(), String> {
    let started = Instant::now();
    corekv_shard::backup::check_name(snapshot).map_err(|f| f.message)?;
    if to.join(BACKUP_MANIFEST).exists() {
        return Err(format!(
            "{} already holds a backup ({BACKUP_MANIFEST}); choose a new directory",
            to.display()
        ));
    }
    std::fs::create_dir_all(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    if std::fs::read_dir(to)
        .map_err(|e| format!("{}: {e}", to.display()))?
        .next()
        .is_some()
    {
        return Err(format!(
            "{} is not empty; a backup goes into a new or empty directory",
            to.display()
        ));
    }
    let mut first = AdminConn::open(node, timeout, creds)?;
    let scratch = to.join(".contact-snapshot.toml");
    let contact = fetch_meta(&mut first, snapshot, &scratch)?;
    let _ = std::fs::remove_file(&scratch);
    println!(
        "backup of snapshot {snapshot}: {} node(s): {}",
        contact.members.len(),
        contact
            .members
            .iter()
            .map(|m| format!("{} ({})", m.id, m.address))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // One thread per node: the nodes' disks and links work in parallel.
    let results: Vec<Result<(SnapshotMeta, u64), String>> = std::thread::scope(|scope| {
        let contact = &contact;
        let handles: Vec<_> = contact
            .members
            .iter()
            .map(|member| {
                let creds = creds.clone();
                scope.spawn(move || -> Result<(SnapshotMeta, u64), String> {
                    corekv_shard::backup::check_node_dir(&member.id)?;
                    let dir = to.join(&member.id);
                    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
                    // The node asked first is reached at the address the
                    // operator gave (a node listening on 0.0.0.0 records that).
                    let address = if member.id == contact.node_id {
                        node
                    } else {
                        &member.address
                    };
                    let mut conn =
                        AdminConn::open(address, timeout, &creds).map_err(|e| format!("node {}: {e}", member.id))?;
                    let meta = fetch_meta(&mut conn, snapshot, &dir.join(SNAPSHOT_META))
                        .map_err(|e| format!("node {}: {e}", member.id))?;
                    if meta.node_id != member.id {
                        return Err(format!(
                            "{} answered as node {}, but the snapshot lists it as {}",
                            member.address, meta.node_id, member.id
                        ));
                    }
                    let mut bytes = 0;
                    for f in &meta.files {
                        let dest = dir.join(&f.path);
                        if let Some(parent) = dest.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                        }
                        fetch_file(&mut conn, snapshot, &f.path, &dest, Some((f.size, f.crc32c)))
                            .map_err(|e| format!("node {}: {e}", member.id))?;
                        bytes += f.size;
                    }
                    for sub in meta.files.iter().filter_map(|f| f.path.split_once('/').map(|(d, _)| d)) {
                        sync_dir(&dir.join(sub))?;
                    }
                    sync_dir(&dir)?;
                    println!(
                        "  {}: {} files, {} fetched",
                        member.id,
                        meta.files.len(),
                        human_bytes(bytes)
                    );
                    Ok((meta, bytes))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a backup thread panicked".to_owned())))
            .collect()
    });
    let mut metas = Vec::new();
    let mut total = 0u64;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((m, b)) => {
                total += b;
                metas.push(m);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "backup failed (the directory {} is incomplete; delete it):\n  {}",
            to.display(),
            errors.join("\n  ")
        ));
    }
    for m in &metas {
        if m.mode != contact.mode || m.conflict_mode != contact.conflict_mode {
            return Err(format!(
                "node {} runs {} / {} but node {} runs {} / {}: not one cluster",
                m.node_id, m.mode, m.conflict_mode, contact.node_id, contact.mode, contact.conflict_mode
            ));
        }
    }
    metas.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let manifest = BackupManifest {
        format: BACKUP_FORMAT,
        cluster_name: cluster_name.to_owned(),
        snapshot: snapshot.to_owned(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        mode: contact.mode.clone(),
        conflict_mode: contact.conflict_mode.clone(),
        replication_factor: contact.replication_factor,
        nodes: metas
            .iter()
            .map(|m| BackupNode {
                id: m.node_id.clone(),
                address: m.address.clone(),
                dc: m.dc.clone(),
                rack: m.rack.clone(),
                cores: m.cores,
                tokens: m.tokens.clone(),
                taken_ms: m.taken_ms,
            })
            .collect(),
        files: metas
            .iter()
            .flat_map(|m| {
                m.files.iter().map(|f| BackupFile {
                    node: m.node_id.clone(),
                    path: f.path.clone(),
                    size: f.size,
                    crc32c: f.crc32c,
                })
            })
            .collect(),
    };
    let text = manifest.to_toml()?;
    let tmp = to.join(format!("{BACKUP_MANIFEST}.tmp"));
    std::fs::write(&tmp, text.as_bytes())
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to.join(BACKUP_MANIFEST)).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    sync_dir(to)?;
    // Read back what is on our disk before saying it is there.
    let checked = verify(to, &manifest)?;
    println!(
        "backup {} complete: {} nodes, {} files, {} ({} bytes), verified; took {:.1} s",
        to.display(),
        manifest.nodes.len(),
        checked,
        human_bytes(total),
        total,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Checks every file of a backup against its manifest; returns how many.
fn verify(dir: &Path, manifest: &BackupManifest) -> Result<usize, String> {
    let mut bad = Vec::new();
    for f in &manifest.files {
        let path = dir.join(&f.node).join(&f.path);
        match checksum(&path) {
            Ok((size, crc)) if (size, crc) == (f.size, f.crc32c) => {}
            Ok((size, crc)) => bad.push(format!(
                "{}: {size} bytes crc32c {crc:#010x}, the manifest says {} bytes crc32c {:#010x}",
                path.display(),
                f.size,
                f.crc32c
            )),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() {
        Ok(manifest.files.len())
    } else {
        Err(format!(
            "the backup in {} is damaged: {} of {} files do not match {BACKUP_MANIFEST}:\n  {}",
            dir.display(),
            bad.len(),
            manifest.files.len(),
            bad.join("\n  ")
        ))
    }
}

struct RestoreOptions {
    /// The consistency tag (1 ONE, 2 QUORUM, 3 ALL, 5 LOCAL_QUORUM).
    consistency: u8,
    parallel: usize,
    batch: usize,
}

fn restore(
    node: &str,
    timeout: Duration,
    creds: &Credentials,
    from: &Path,
    opts: &RestoreOptions,
) -> Result<(), String> {
    let started = Instant::now();
    let manifest_path = from.join(BACKUP_MANIFEST);
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| format!("reading {}: {e}", manifest_path.display()))?;
    let manifest = BackupManifest::from_toml(&text, &manifest_path.display().to_string())?;
    let files = verify(from, &manifest)?;
    let backup_bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    println!(
        "restore of {} (cluster {}, snapshot {}, {} nodes, {} files, {}): verified",
        from.display(),
        manifest.cluster_name,
        manifest.snapshot,
        manifest.nodes.len(),
        files,
        human_bytes(backup_bytes)
    );
    let mode = if manifest.mode == "cluster" {
        RestoreMode::Records
    } else {
        RestoreMode::Plain
    };
    let mut contact = AdminConn::open(node, timeout, creds)?;
    let mut targets = contact.ring()?;
    if targets.is_empty() {
        targets.push(node.to_owned());
    }
    drop(contact);
    println!("into the cluster of {node}: {} node(s) take batches", targets.len());

    let (tx, rx) = std::sync::mpsc::sync_channel::<RestoreBatch>(opts.parallel * 2);
    let rx = Arc::new(Mutex::new(rx));
    let failed = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (from, manifest) = (from.to_path_buf(), manifest.clone());
        let sink = BatchSink {
            tx,
            max_entries: opts.batch,
            max_bytes: 4 << 20,
        };
        std::thread::spawn(move || corekv_shard::backup::read_backup(&from, &manifest, sink))
    };
    let workers: Vec<_> = (0..opts.parallel)
        .map(|w| {
            let target = targets[w % targets.len()].clone();
            let (rx, failed, records, bytes, errors) = (
                rx.clone(),
                failed.clone(),
                records.clone(),
                bytes.clone(),
                errors.clone(),
            );
            let creds = creds.clone();
            let consistency = opts.consistency;
            std::thread::spawn(move || {
                let mut conn: Option<AdminConn> = None;
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = rx.lock().map(|r| r.recv());
                    let Ok(Ok(batch)) = next else { return };
                    let entries: Vec<RangeEntry<'_>> = batch
                        .iter()
                        .map(|(token, key, record)| RangeEntry {
                            token: *token,
                            key,
                            record,
                        })
                        .collect();
                    let size: u64 = batch.iter().map(|(_, k, r)| (k.len() + r.len()) as u64).sum();
                    let mut attempt = 0;
                    loop {
                        let sent = match conn.as_mut() {
                            Some(c) => c.call(PeerOp::Restore {
                                mode,
                                consistency,
                                entries: List::Slice(&entries),
                            }),
                            None => match AdminConn::open(&target, timeout, &creds) {
                                Ok(c) => {
                                    conn = Some(c);
                                    continue;
                                }
                                // Connecting failed: no answer, worth another try.
                                Err(e) => Err(CallError { code: None, message: e }),
                            },
                        };
                        match sent {
                            Ok(_) => {
                                records.fetch_add(entries.len() as u64, Ordering::Relaxed);
                                bytes.fetch_add(size, Ordering::Relaxed);
                                break;
                            }
                            // Transient: the batch is sent again (a restore is idempotent).
                            Err(e) if attempt < 5 && e.is_transient() => {
                                attempt += 1;
                                conn = None;
                                std::thread::sleep(Duration::from_millis(200 << attempt));
                            }
                            Err(e) => {
                                if let Ok(mut errs) = errors.lock() {
                                    errs.push(e.message);
                                }
                                failed.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Progress until the workers are done.
    let mut last = Instant::now();
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            let n = records.load(Ordering::Relaxed);
            println!(
                "  {} records, {} sent, {:.0} records/s",
                n,
                human_bytes(bytes.load(Ordering::Relaxed)),
                n as f64 / started.elapsed().as_secs_f64().max(0.001)
            );
        }
    }
    for w in workers {
        let _ = w.join();
    }
    // With every worker gone the channel is closed: the reader stops.
    drop(rx);
    let read = reader.join().map_err(|_| "the backup reader panicked".to_owned())?;
    let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
    if let Some(e) = errs.first() {
        return Err(format!(
            "restore failed after {} records (running it again is safe: it is idempotent): {e}",
            records.load(Ordering::Relaxed)
        ));
    }
    let read = read.map_err(|e| format!("reading the backup: {e}"))?;
    let n = records.load(Ordering::Relaxed);
    if n != read.entries {
        return Err(format!(
            "read {} records from the backup but {n} were written",
            read.entries
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "restore complete: {n} records ({}, {} from hints) from {} directories into {} node(s); {} entries skipped \
         (purged or not records); took {secs:.1} s ({:.0} records/s)",
        human_bytes(bytes.load(Ordering::Relaxed)),
        read.hints,
        read.dirs,
        targets.len(),
        read.skipped,
        n as f64 / secs.max(0.001)
    );
    Ok(())
}
