#!/bin/bash
# Produce p99 at a fixed rate with and without the log cleaner running, on
# one broker: each round fills a backlog topic (keyed, 200 B over 100,000
# keys, cleanup.policy=delete), measures produce latency on another topic,
# then alters the backlog to cleanup.policy=compact (the cleaner starts on
# it at once) and measures again while it cleans. Alternates ROUNDS times.
#   RATE=100000 ROUNDS=3 loadgen/scripts/compaction-p99.sh
# CLEANER_BPS (default 32 MiB/s) is the cleaner's rate limit, FILL_S the
# seconds of backlog filling at 400 k records/s (default 3: about 300 MB).
set -u
cd "$(dirname "$0")/../.."
D=${CAIRN_BENCH_DIR:-/tmp/cairn-bench-compaction}; mkdir -p "$D"
S=./target/release/cairn-server; L=./target/release/cairn-loadgen; C=./target/release/cairn
RATE=${RATE:-100000}; ROUNDS=${ROUNDS:-3}; CLEANER_BPS=${CLEANER_BPS:-33554432}; FILL_S=${FILL_S:-3}; B=127.0.0.1:7290
# The cleaner at half its default rate, so one backlog keeps it busy for
# the whole measured run.
rm -rf "$D/s"; printf '[log]\ncleaner_check_ms = 100\ncleaner_bytes_per_second_max = %s\n' "$CLEANER_BPS" >"$D/cairn.toml"
$S --config "$D/cairn.toml" --data-dir "$D/s" --listen $B --metrics-listen off >"$D/s.out" 2>"$D/s.log" & sp=$!
until $C --bootstrap $B topic list >/dev/null 2>&1; do sleep 0.2; done
load() { # topic label
  echo "== $2"
  $L --bootstrap $B --topic "$1" --partitions 2 --acks leader --record-bytes 100 --rate "$RATE" --duration 8 --warmup 2 2>"$D/loadgen.err" \
    | grep -E '^(produce|latency)' | head -3
  if grep -q . "$D/loadgen.err"; then tail -3 "$D/loadgen.err"; fi
}
backlog() { # topic: each partition's size and dirty ratio
  $C --bootstrap $B topic describe "$1" | awk -F'\t' '$1 ~ /^[0-9]+$/ {printf "p%s %d MB dirty %s; ", $1, $10 / 1000000, $11} END {print ""}'
}
for r in $(seq 1 "$ROUNDS"); do
  $C --bootstrap $B topic create "backlog$r" --partitions 2 --config segment.bytes=16777216 >/dev/null
  # About 300 MB of backlog: 1.2 M records of 200 B (and a warmup's) at a fixed rate.
  $L --bootstrap $B --topic "backlog$r" --partitions 2 --keys 100000 --record-bytes 200 --rate 400000 --duration "$FILL_S" --warmup 1 >/dev/null 2>"$D/fill.err" || tail -3 "$D/fill.err"
  echo "backlog$r before: $(backlog "backlog$r")"
  load "load$r" "round $r: cleaner idle"
  $C --bootstrap $B topic alter "backlog$r" --config cleanup.policy=compact --config min.cleanable.dirty.ratio=0.01 --config max.compaction.lag.ms=1 >/dev/null
  load "load$r" "round $r: cleaner compacting backlog$r"
  echo "backlog$r after: $(backlog "backlog$r")"
done
kill -TERM $sp; wait $sp; rm -rf "$D/s"
