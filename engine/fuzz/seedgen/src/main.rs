//! Writes valid seed inputs for every fuzz target, made with the engine's own
//! encoders, so coverage-guided fuzzing starts from real structures instead of
//! having to discover checksums and varint layouts.
//!
//! Usage: `cargo run --release --manifest-path engine/fuzz/Cargo.toml -p corekv-fuzz-seedgen -- [OUT_DIR]`
//! (OUT_DIR defaults to `engine/fuzz/corpus`; one subdirectory per target).
//! Deterministic: the same build writes the same files.

use std::fs;
use std::path::{Path, PathBuf};

use corekv_engine::filter::FilterBuilder;
use corekv_engine::format::{encode_body, Kind, WriteBatch};
use corekv_engine::io::Fs;
use corekv_engine::log;
use corekv_engine::manifest::{FileRecord, Manifest, ManifestState, VersionEdit};
use corekv_engine::sstable::block::{decode_payload, BlockBuilder, BlockSealer};
use corekv_engine::sstable::meta::{BlockHandle, Footer, FOOTER_LEN};
use corekv_engine::sstable::{Compression, TableBuilder, TableOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A small deterministic generator (no dependency on `rand`'s versions).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n).map(|_| alphabet[self.below(alphabet.len() as u64) as usize]).collect()
    }
}

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) -> Res<()> {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(format!("seed-{name}")), bytes)?;
        self.count += 1;
        Ok(())
    }
}

type Ent = (u64, Vec<u8>, u64, Vec<u8>);

/// Sorted entries `(token, key, seq, body)`: shared tokens, several versions
/// per key, puts with and without expiry, tombstones, meta, compressible values.
fn entries(rng: &mut Rng, n: usize, value_len: usize) -> Vec<Ent> {
    let tokens = [0u64, 1, 7, 0x1234_5678_9abc_def0, u64::MAX];
    let mut out: Vec<Ent> = Vec::new();
    let mut seq = 1000u64;
    for i in 0..n {
        let t = tokens[rng.below(tokens.len() as u64) as usize];
        let key = format!("user:{:05}", rng.below(10_000)).into_bytes();
        let versions = 1 + (i % 3);
        for _ in 0..versions {
            seq -= 1;
            let mut body = Vec::new();
            let meta = if rng.below(3) == 0 { rng.bytes(6, b"vc0123") } else { Vec::new() };
            if rng.below(5) == 0 {
                encode_body(Kind::Delete, 1_700_000_000_000, &meta, &[], &mut body);
            } else {
                let expiry = if rng.below(4) == 0 { 1_800_000_000_000 } else { 0 };
                let len = rng.below(value_len as u64 + 1) as usize;
                let v = rng.bytes(len, b"aaaabcdxyz");
                encode_body(Kind::Put, expiry, &meta, &v, &mut body);
            }
            out.push((t, key.clone(), seq, body));
        }
    }
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| b.2.cmp(&a.2))
    });
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
    out
}

fn ikey(t: u64, k: &[u8]) -> Vec<u8> {
    let mut v = t.to_be_bytes().to_vec();
    v.extend_from_slice(k);
    v
}

fn batches(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut empty = WriteBatch::new();
    out.push(empty.seal(1).to_vec());
    for n in [1usize, 2, 5, 20] {
        let mut b = WriteBatch::new();
        for i in 0..n {
            let key = format!("k{i:03}").into_bytes();
            let token = rng.next();
            match i % 4 {
                0 => b.put(token, &key, b"value", b"", 0),
                1 => b.put(token, &key, &rng.bytes(200, b"xyz"), b"meta", 1_800_000_000_000),
                2 => b.delete(token, &key, b"", 1_700_000_000_000),
                _ => b.put(token, &key, b"", &[0xff; 3], u64::MAX),
            }
        }
        out.push(b.seal(1 + 100 * n as u64).to_vec());
    }
    out
}

fn wal_seeds(out: &mut Out, rng: &mut Rng) -> Res<()> {
    let bs = batches(rng);
    // A batch alone (walked directly, past the record checksum).
    for (i, b) in bs.iter().enumerate() {
        let mut s = 9u64.to_le_bytes().to_vec();
        s.extend_from_slice(b);
        out.put("wal_record", &format!("batch-{i}"), &s)?;
    }
    // A segment: records of log 9, zero padding to the block, as written.
    let mut seg = Vec::new();
    for b in &bs {
        log::encode_record(&mut seg, 9, b);
    }
    let mut padded = seg.clone();
    padded.resize(padded.len().div_ceil(4096) * 4096, 0);
    let mut s = 9u64.to_le_bytes().to_vec();
    s.extend_from_slice(&padded);
    out.put("wal_record", "segment-padded", &s)?;
    // A recycled segment: log 9's records followed by an older use's (log 4).
    let mut rec = Vec::new();
    log::encode_record(&mut rec, 9, &bs[1]);
    log::encode_record(&mut rec, 9, &bs[2]);
    log::encode_record(&mut rec, 4, &bs[3]);
    let mut s = 9u64.to_le_bytes().to_vec();
    s.extend_from_slice(&rec);
    out.put("wal_record", "segment-recycled", &s)?;
    // A torn tail and a damaged middle record followed by a valid one.
    let mut s = 9u64.to_le_bytes().to_vec();
    s.extend_from_slice(&seg[..seg.len() - 7]);
    out.put("wal_record", "segment-torn", &s)?;
    let mut dmg = seg.clone();
    dmg[log::HEADER + 3] ^= 0x40;
    let mut s = 9u64.to_le_bytes().to_vec();
    s.extend_from_slice(&dmg);
    out.put("wal_record", "segment-damaged", &s)?;
    Ok(())
}

fn block_payload(es: &[Ent], restart: usize) -> Vec<u8> {
    let mut bb = BlockBuilder::new(restart);
    for (t, k, s, body) in es {
        bb.add(&ikey(*t, k), *s, body);
    }
    bb.finish().to_vec()
}

fn block_seeds(out: &mut Out, rng: &mut Rng) -> Res<()> {
    for (i, (n, vlen, restart)) in [(0usize, 0usize, 16usize), (1, 10, 16), (8, 20, 1), (30, 40, 4), (60, 30, 16)]
        .into_iter()
        .enumerate()
    {
        let es = entries(rng, n, vlen);
        let payload = block_payload(&es, restart);
        out.put("data_block", &format!("payload-{i}"), &payload)?;
        for c in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
            let mut raw = Vec::new();
            BlockSealer::new(c).seal(&payload, c, &mut raw);
            let name = format!("{i}-{c:?}").replace(['(', ')'], "");
            out.put("data_block", &format!("sealed-{name}"), &raw)?;
            // Without its CRC: the target appends a correct one.
            out.put("data_block", &format!("nocrc-{name}"), &raw[..raw.len() - 4])?;
        }
        // An index over these entries, one "block" per 8 entries.
        let mut ib = BlockBuilder::new(restart.min(4));
        let mut off = 0u64;
        for chunk in es.chunks(8) {
            let (t, k, s, _) = chunk.last().ok_or("empty chunk")?;
            let size = 100 + rng.below(4000);
            let mut h = Vec::new();
            BlockHandle { offset: off, size }.encode(&mut h);
            ib.add(&ikey(*t, k), *s, &h);
            off += size;
        }
        out.put("index_block", &format!("synthetic-{i}"), ib.finish())?;
    }
    Ok(())
}

fn filter_seeds(out: &mut Out, rng: &mut Rng) -> Res<()> {
    for (i, (n, bits)) in [(0usize, 10u32), (1, 10), (10, 10), (50, 4), (200, 10), (100, 20)]
        .into_iter()
        .enumerate()
    {
        let mut b = FilterBuilder::new(bits);
        for _ in 0..n {
            let k = rng.bytes(10, b"abcdef0123");
            b.add(rng.below(16), &k);
        }
        out.put("filter", &format!("built-{i}"), &b.finish())?;
    }
    Ok(())
}

fn rec(rng: &mut Rng, no: u64) -> FileRecord {
    FileRecord {
        file_no: no,
        size: 4096 + rng.below(1 << 20),
        entries: 100,
        tombstones: 3,
        min_seq: 10,
        max_seq: 90,
        max_time: 0,
        created_ms: 1_700_000_000_000,
        smallest: (rng.below(100), b"a".to_vec(), 90),
        largest: (1000 + rng.below(100), b"zz".to_vec(), 10),
    }
}

async fn manifest_seeds(out: &mut Out, rng: &mut Rng) -> Res<()> {
    let edits = vec![
        VersionEdit {
            snapshot: true,
            next_file_no: Some(10),
            last_seq: Some(99),
            min_log_no: Some(3),
            added: vec![(0, rec(rng, 4)), (1, rec(rng, 5)), (2, rec(rng, 6))],
            removed: vec![],
        },
        VersionEdit { added: vec![(0, rec(rng, 11))], last_seq: Some(150), ..Default::default() },
        VersionEdit {
            removed: vec![(0, 4), (0, 11)],
            added: vec![(1, rec(rng, 12))],
            min_log_no: Some(5),
            ..Default::default()
        },
        VersionEdit { snapshot: true, ..Default::default() },
    ];
    for (i, e) in edits.iter().enumerate() {
        out.put("manifest", &format!("edit-{i}"), &e.encode())?;
    }
    // A manifest as the engine writes it, on the simulated disk.
    let fs = Fs::sim(7);
    let dir = Path::new("/m");
    fs.prepare_dir(dir).await?;
    let mut start = ManifestState::default();
    start.apply(&edits[0])?;
    let mut m = Manifest::create(fs.clone(), dir, 3, start, 1 << 20).await?;
    for e in &edits[1..3] {
        m.append(e).await?;
    }
    let f1 = m.next_file_no();
    m.append(&VersionEdit { added: vec![(0, rec(rng, f1)), (3, rec(rng, f1 + 1))], ..Default::default() })
        .await?;
    let Fs::Sim(sim) = &fs else { return Err("not the simulated disk".into()) };
    let bytes = sim.read_file(&dir.join("MANIFEST-000003"))?;
    let mut s = 3u64.to_le_bytes().to_vec();
    s.extend_from_slice(&bytes);
    out.put("manifest", "file-engine", &s)?;
    // Hand-framed: the edits above as one manifest, and a torn copy.
    let mut f = Vec::new();
    for e in &edits[..3] {
        log::encode_record(&mut f, 8, &e.encode());
    }
    let mut s = 8u64.to_le_bytes().to_vec();
    s.extend_from_slice(&f);
    out.put("manifest", "file-framed", &s)?;
    s.truncate(s.len() - 10);
    out.put("manifest", "file-torn", &s)?;
    Ok(())
}

/// Builds real tables on the simulated disk and cuts their structures out.
async fn table_seeds(out: &mut Out, rng: &mut Rng) -> Res<()> {
    let fs = Fs::sim(11);
    let dir = Path::new("/t");
    fs.prepare_dir(dir).await?;
    let Fs::Sim(sim) = &fs else { return Err("not the simulated disk".into()) };
    let configs = [
        (Compression::None, 5usize, 16usize, 10u32),
        (Compression::Lz4, 120, 16, 10),
        (Compression::Zstd(3), 120, 4, 20),
        (Compression::Lz4, 400, 1, 5),
    ];
    for (i, (compression, n, restart, bits)) in configs.into_iter().enumerate() {
        let path = dir.join(format!("{i:06}.sst"));
        let file = fs.create(&path).await?;
        let opts = TableOptions {
            block_size: 4096,
            restart_interval: restart,
            compression,
            bloom_bits_per_key: bits,
            created_ms: 1_700_000_000_000,
        };
        let mut tb = TableBuilder::new(file, opts, i as u64);
        for (t, k, s, body) in entries(rng, n, 60) {
            tb.add(t, &k, s, &body).await?;
        }
        tb.finish().await?;
        let bytes = sim.read_file(&path)?;
        let footer_at = bytes.len() - FOOTER_LEN;
        let footer = Footer::decode(&bytes[footer_at..]).map_err(|e| format!("{e:?}"))?;
        let meta = |h: corekv_engine::sstable::meta::MetaHandle| {
            let start = h.offset as usize;
            &bytes[start..start + h.len as usize]
        };
        let tag = format!("table{i}");
        // footer target: the bare footer, props block | footer, the props payload.
        out.put("footer", &format!("{tag}-footer"), &bytes[footer_at..])?;
        out.put("footer", &format!("{tag}-props-footer"), &bytes[footer.properties.offset as usize..])?;
        let props = decode_payload(meta(footer.properties)).map_err(|e| format!("{e:?}"))?;
        out.put("footer", &format!("{tag}-props"), &props)?;
        // index_block target: the index payload.
        let index = decode_payload(meta(footer.index)).map_err(|e| format!("{e:?}"))?;
        out.put("index_block", &format!("{tag}-index"), &index)?;
        // filter target: the filter payload.
        let filter = decode_payload(meta(footer.filter)).map_err(|e| format!("{e:?}"))?;
        out.put("filter", &format!("{tag}-filter"), &filter)?;
        // data_block target: the first and last data blocks as stored.
        let ib = corekv_engine::sstable::block::Block::from_payload(index).map_err(|e| format!("{e:?}"))?;
        let idx = corekv_engine::sstable::meta::decode_index(&ib, footer.filter.offset).map_err(|e| format!("{e:?}"))?;
        for j in [0, idx.len().saturating_sub(1)] {
            if let Some(e) = idx.get(j) {
                let h = e.handle;
                let raw = &bytes[h.offset as usize..(h.offset + h.size) as usize];
                out.put("data_block", &format!("{tag}-block{j}"), raw)?;
            }
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
    });
    let mut out = Out { root, count: 0 };
    let mut rng = Rng(0x5eed);
    wal_seeds(&mut out, &mut rng)?;
    block_seeds(&mut out, &mut rng)?;
    filter_seeds(&mut out, &mut rng)?;
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make()?;
    let res: Res<Out> = ex.run(async move {
        manifest_seeds(&mut out, &mut rng).await?;
        table_seeds(&mut out, &mut rng).await?;
        Ok(out)
    });
    let out = res?;
    println!("wrote {} seed files under {}", out.count, out.root.display());
    Ok(())
}
