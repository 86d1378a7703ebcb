#!/usr/bin/env bash
# Runs RocksDB's db_bench and corekv's engine-bench side by side, in one
# invocation, with the same parameters on the same disk, and prints a ratio
# table (corekv / RocksDB).
#
#   bench/scripts/vs_rocksdb.sh            # full: --num=2000000 (about 6 minutes here)
#   bench/scripts/vs_rocksdb.sh --quick    # --num=200000, for a quick look
#   options: --num N  --reads N  --sync-num N (writes per writer in the sync test)
#            --dir DIR (default target/vs_rocksdb under the repo; must not be tmpfs)
#            --big-cache BYTES (default 2 GiB)
#
# It installs nothing. db_bench comes from Debian's rocksdb-tools package.
#
# corekv runs on ONE core (glommio executor pinned with Placement::Fixed(0));
# RocksDB uses its foreground thread(s) plus background flush/compaction
# threads on every core the machine has. The CPU each process used is printed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
NUM=2000000
READS=200000
SYNC_NUM=1000
DIR="$ROOT/target/vs_rocksdb"
BIG_CACHE=$((2 << 30))
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) NUM=200000; READS=50000; SYNC_NUM=300 ;;
        --num) NUM="$2"; shift ;;
        --reads) READS="$2"; shift ;;
        --sync-num) SYNC_NUM="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        --big-cache) BIG_CACHE="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if ! command -v db_bench >/dev/null 2>&1; then
    echo "db_bench not found. It is in Debian's rocksdb-tools package:" >&2
    echo "    sudo apt-get install -y rocksdb-tools" >&2
    exit 2
fi
mkdir -p "$DIR"
FSTYPE="$(stat -f -c %T "$DIR")"
if [ "$FSTYPE" = "tmpfs" ]; then
    echo "$DIR is on tmpfs: corekv needs O_DIRECT; pass --dir on a real disk" >&2
    exit 2
fi

EB="${ENGINE_BENCH:-$ROOT/target/release/engine-bench}"
if [ -z "${ENGINE_BENCH:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p corekv-bench)
fi

OUT="$DIR/logs"
rm -rf "$OUT"
mkdir -p "$OUT"
SMALL_CACHE=$((8 << 20))
READS32=$((READS / 32))
# Same data on both sides: 16-byte keys, 1 KiB values from db_bench's generator
# (compression_ratio 0.5), LZ4 blocks of 4 KiB, 10-bit bloom filters (db_bench's
# default is no filter at all), 64 MiB memtables, keys drawn from [0, num).
COMMON="--key_size=16 --value_size=1024 --compression_ratio=0.5 --block_size=4096 --write_buffer_size=67108864"
RDB="$COMMON --compression_type=lz4 --bloom_bits=10 --histogram=1"
CKV="$COMMON --compression=lz4 --bloom_bits=10"

# run LABEL CMD...: runs the command, keeps its output and its CPU use.
run() {
    local label="$1"; shift
    echo ">>> $label: $*" | tee -a "$OUT/commands.txt"
    /usr/bin/time -f "%e %U %S" -o "$OUT/$label.time" "$@" >"$OUT/$label.log" 2>&1 || {
        echo "FAILED: $label (see $OUT/$label.log)"; tail -20 "$OUT/$label.log"; exit 1; }
}

# cores LABEL: CPU cores the process used on average ((user + sys) / wall).
cores() { awk '{ if ($1 > 0) printf "%.2f", ($2 + $3) / $1; else print "?" }' "$OUT/$1.time"; }

# rdb LABEL BENCH: "ops/s p99_us" from db_bench's report line and the histogram after it.
rdb() {
    awk -v b="$2" '
        $1 == b && $2 == ":" { for (i = 1; i <= NF; i++) if ($i == "ops/sec") ops = $(i - 1); want = 1; next }
        want && /^Percentiles:/ { for (i = 1; i <= NF; i++) if ($i == "P99:") p99 = $(i + 1); want = 0 }
        END { if (ops == "") ops = "?"; if (p99 == "") p99 = "?"; print ops, p99 }' "$OUT/$1.log"
}

# ckv LABEL NAME: "ops/s p99_us" from engine-bench's RESULT line.
ckv() {
    awk -v b="$2" '
        $1 == "RESULT" && $2 == "name=" b {
            for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            ops = v["ops_per_sec"]; p99 = v["p99_us"] }
        END { if (ops == "") ops = "?"; if (p99 == "") p99 = "?"; print ops, p99 }' "$OUT/$1.log"
}

echo "== machine: $(nproc) cores, kernel $(uname -r), $DIR on $(findmnt -n -o SOURCE,FSTYPE -T "$DIR" | tr -s ' ')"
echo "== db_bench $(db_bench --version 2>&1 | head -1 | awk '{print $NF}'), engine-bench $EB"
echo "== num=$NUM reads=$READS (32-task reads: $READS32 each), sync test: 32 writers x $SYNC_NUM"

R="$DIR/rocksdb"
C="$DIR/corekv"
rm -rf "$R" "$C"

# 1. fillrandom, no sync, one writer. corekv's WAL is synced every second
#    (Durability::Periodic); RocksDB never syncs (--sync=0). Compaction may
#    lag behind the fill on both sides; corekv's catch-up (engine.compact())
#    is reported on its own line (fillrandom.compact).
run rdb_fill db_bench --benchmarks=fillrandom,stats,waitforcompaction --db="$R" --num="$NUM" --threads=1 $RDB
run ckv_fill "$EB" --benchmarks=fillrandom --db="$C" --num="$NUM" --threads=1 --cache_size=$SMALL_CACHE $CKV

# 2. Reads on the filled databases, 8 MiB block cache on both sides, one reader.
#    RocksDB reads through the OS page cache (it holds the whole database here);
#    corekv reads with O_DIRECT: every block-cache miss is a disk read.
run rdb_read8 db_bench --benchmarks=readrandom,seekrandom,readseq --use_existing_db=1 --db="$R" --num="$NUM" \
    --reads="$READS" --threads=1 --cache_size=$SMALL_CACHE $RDB
run ckv_read8 "$EB" --benchmarks=readrandom,seekrandom,scan --use_existing_db --db="$C" --num="$NUM" \
    --reads="$READS" --threads=1 --cache_size=$SMALL_CACHE $CKV
# RocksDB without the page cache (O_DIRECT reads): the same footing as corekv.
run rdb_read8_direct db_bench --benchmarks=readrandom --use_existing_db=1 --use_direct_reads=1 --db="$R" \
    --num="$NUM" --reads="$READS" --threads=1 --cache_size=$SMALL_CACHE $RDB

# corekv reading through the page cache as RocksDB does (--use_direct_reads=false).
# RocksDB's fill left its files in the page cache (buffered writes); corekv
# wrote with O_DIRECT, so its tables are read once with cat to get the same start.
cat "$C"/*.sst >/dev/null
run ckv_read8_buffered "$EB" --benchmarks=readrandom,seekrandom,scan --use_existing_db --db="$C" --num="$NUM" \
    --reads="$READS" --threads=1 --cache_size=$SMALL_CACHE --use_direct_reads=false $CKV

# 3. Concurrency: 32 readers (RocksDB: 32 threads on 2 cores; corekv: 32 tasks
#    on one core, so up to 32 reads in flight in io_uring), same total reads.
run rdb_read8_t32 db_bench --benchmarks=readrandom --use_existing_db=1 --db="$R" --num="$NUM" \
    --reads="$READS32" --threads=32 --cache_size=$SMALL_CACHE $RDB
run ckv_read8_t32 "$EB" --benchmarks=readrandom --use_existing_db --db="$C" --num="$NUM" \
    --reads="$READS32" --threads=32 --cache_size=$SMALL_CACHE $CKV

# 4. A cache that holds the whole database, warmed by one full scan first.
run rdb_readbig db_bench --benchmarks=readseq,readrandom --use_existing_db=1 --db="$R" --num="$NUM" \
    --reads="$READS" --threads=1 --cache_size="$BIG_CACHE" $RDB
run ckv_readbig "$EB" --benchmarks=scan,readrandom --use_existing_db --db="$C" --num="$NUM" \
    --reads="$READS" --threads=1 --cache_size="$BIG_CACHE" $CKV

# 5. Synced writes from 32 concurrent writers (each writes --num keys drawn
#    from [0, num)): RocksDB 32 threads, corekv 32 tasks on one core sharing
#    group commits.
rm -rf "$R.sync" "$C.sync"
run rdb_sync db_bench --benchmarks=fillrandom --sync=1 --threads=32 --db="$R.sync" --num="$SYNC_NUM" $RDB
run ckv_sync "$EB" --benchmarks=fillrandom --sync --threads=32 --db="$C.sync" --num="$SYNC_NUM" \
    --wait_for_compaction=0 --cache_size=$SMALL_CACHE $CKV

table() {
    printf '| %-48s | %-22s | %-22s | %-7s | %s |\n' "$@"
}
row() { # title rdb_label rdb_bench ckv_label ckv_name target
    local r c ratio
    r=($(rdb "$2" "$3")); c=($(ckv "$4" "$5"))
    ratio=$(awk -v a="${c[0]}" -v b="${r[0]}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "?" }')
    table "$1" "${r[0]} (p99 ${r[1]} us)" "${c[0]} (p99 ${c[1]} us)" "$ratio" "$6"
}

{
echo
echo "## corekv vs RocksDB (ops/s; corekv / RocksDB), num=$NUM"
echo
table "test" "RocksDB ops/s" "corekv ops/s" "ratio" "target"
table "---" "---" "---" "---" "---"
row "fillrandom, no sync, 1 writer" rdb_fill fillrandom ckv_fill fillrandom ">= 1.0x"
row "readrandom, 8 MiB cache (RocksDB: page cache)" rdb_read8 readrandom ckv_read8 readrandom ">= 1.0x"
row "readrandom, 8 MiB cache, both via page cache" rdb_read8 readrandom ckv_read8_buffered readrandom ">= 1.0x"
row "readrandom, 8 MiB cache, both O_DIRECT" rdb_read8_direct readrandom ckv_read8 readrandom ">= 1.0x"
row "readrandom, 8 MiB cache, 32 readers" rdb_read8_t32 readrandom ckv_read8_t32 readrandom "(concurrency)"
row "readrandom, $((BIG_CACHE >> 20)) MiB cache, warm" rdb_readbig readrandom ckv_readbig readrandom ">= 1.0x"
row "seekrandom, 8 MiB cache" rdb_read8 seekrandom ckv_read8 seekrandom ""
row "seekrandom, 8 MiB cache, both via page cache" rdb_read8 seekrandom ckv_read8_buffered seekrandom ""
row "readseq / scan (entries/s), 8 MiB cache" rdb_read8 readseq ckv_read8 scan ""
row "readseq / scan, both via page cache" rdb_read8 readseq ckv_read8_buffered scan ""
row "fillrandom, sync, 32 writers" rdb_sync fillrandom ckv_sync fillrandom ">= 1.0x"
echo
echo "corekv fillrandom compaction catch-up (engine.compact() after the fill): $(awk '$1 == "RESULT" && $2 == "name=fillrandom.compact" { sub("secs=", "", $4); print $4 " s" }' "$OUT/ckv_fill.log")"
echo
echo "CPU cores used, (user + sys) / wall of the whole process (machine: $(nproc) cores):"
for l in fill read8 read8_t32 readbig sync; do
    echo "  $l: RocksDB $(cores rdb_$l)  corekv $(cores ckv_$l) (pinned to CPU 0)"
done
echo "  read8_direct: RocksDB $(cores rdb_read8_direct)"
echo
echo "Logs and exact commands: $OUT (commands.txt)"
} | tee "$OUT/summary.md"
