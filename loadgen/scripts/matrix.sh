#!/usr/bin/env bash
# The benchmark matrix of docs/benchmarks.md: maximum rate and a fixed
# 20,000 records/s; 100 B and 1 KiB values; 1 and 4 partitions; acks none and
# leader. Each run starts a fresh embedded broker (flush = always) and
# measures the disk in the same run. Usage: loadgen/scripts/matrix.sh OUT_DIR
set -euo pipefail
out=${1:?usage: matrix.sh OUT_DIR}
cd "$(dirname "$0")/../.."
cargo build --release -p loadgen
lg=target/release/cairn-loadgen
mkdir -p "$out"
for load in max 20000; do
  for bytes in 100 1024; do
    for partitions in 1 4; do
      for acks in none leader; do
        name="$load-${bytes}B-${partitions}p-$acks"
        args=(--embedded --baseline --partitions "$partitions" --record-bytes "$bytes" --acks "$acks"
              --duration "${DURATION:-8}" --warmup 2 --report-dir "$out/$name")
        if [ "$load" = max ]; then args+=(--replay); else args+=(--rate "$load" --linger-ms 0); fi
        echo "== $name" >&2
        "$lg" "${args[@]}" > /dev/null
      done
    done
  done
done
"$lg" table "$out"/*/
