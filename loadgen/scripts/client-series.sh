#!/bin/bash
# The issue 9 series (docs/benchmarks.md, "Client and load generator speed"):
# two builds of cairn-loadgen alternate, three runs each per load, every run
# a fresh embedded broker on DATA. Summaries go to OUT/<load>-<side>-<i>/.
#   loadgen/scripts/client-series.sh OLD_LOADGEN NEW_LOADGEN OUT [DATA]
set -u
OLD=$1 NEW=$2 OUT=$3 DATA=${4:-.}
mkdir -p "$OUT"
common="--embedded --data-dir $DATA --duration 10s --warmup 2s"
declare -A LOADS=(
  [max-100-never]="--flush never --record-bytes 100 --replay"
  [max-100-always]="--flush always --record-bytes 100"
  [max-1k-always]="--flush always --record-bytes 1000 --replay"
  [rate-100k-1k-always]="--flush always --record-bytes 1000 --rate 100000 --linger-ms 0"
)
for load in max-100-never max-100-always max-1k-always rate-100k-1k-always; do
  for i in 1 2 3; do
    for side in before after; do
      bin=$OLD; [ "$side" = after ] && bin=$NEW
      # shellcheck disable=SC2086
      "$bin" $common ${LOADS[$load]} --report-dir "$OUT/$load-$side-$i" > "$OUT/$load-$side-$i.txt" 2>&1
    done
  done
done
# The new build's own modes.
for i in 1 2 3; do
  "$NEW" $common --flush never --broker-only --report-dir "$OUT/broker-only-100-never-after-$i" > /dev/null 2>&1
  "$NEW" --embedded --data-dir "$DATA" --duration 1m --warmup 0s --record-bytes 1000 --records 480000 \
    --cache-bytes 134217728 --replay --flush never --report-dir "$OUT/cache-replay-1k-after-$i" > /dev/null 2>&1
done
"$NEW" --embedded --data-dir "$DATA" --duration 5s --warmup 1s --find-max-rate --p99-max 5ms \
  --report-dir "$OUT/find-max-rate-after" > /dev/null 2>&1
