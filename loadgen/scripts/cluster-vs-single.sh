#!/bin/bash
# alternating: single broker vs 3-broker cluster, durable produce, 100 B
set -u
mkdir -p "${CAIRN_BENCH_DIR:-/tmp/cairn-bench}"
cd "$(dirname "$0")/../.."
S=./target/release/cairn-server; L=./target/release/cairn-loadgen
run_single() {
  rm -rf ${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/s; $S --data-dir ${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/s --listen 127.0.0.1:7170 --metrics-listen off > ${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/s.out 2>${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/s.log &
  local pid=$!; sleep 1
  $L --bootstrap 127.0.0.1:7170 --topic t$1 --partitions 4 --acks all --record-bytes 100 --duration 8 --warmup 2 ${LOADGEN_EXTRA:-} 2>/dev/null | grep -iE 'records/s|produce' | head -3
  kill -TERM $pid; wait $pid
}
run_cluster() {
  rm -rf ${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/c; P=1=127.0.0.1:8171,2=127.0.0.1:8172,3=127.0.0.1:8173; pids=()
  for i in 1 2 3; do $S --node-id $i --data-dir ${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/c/d$i --listen 127.0.0.1:717$i --peers $P --cores 1 --metrics-listen off > ${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/c$i.out 2>${CAIRN_BENCH_DIR:-/tmp/cairn-bench}/c$i.log & pids+=($!); done
  sleep 2
  $L --bootstrap 127.0.0.1:7171,127.0.0.1:7172,127.0.0.1:7173 --topic t$1 --partitions 4 --acks all --record-bytes 100 --duration 8 --warmup 2 ${LOADGEN_EXTRA:-} 2>/dev/null | grep -iE 'records/s|produce' | head -3
  for p in ${pids[@]}; do kill -TERM $p; done; wait
}
for r in $(seq 1 "${ROUNDS:-3}"); do echo "== single $r"; run_single $r; echo "== cluster $r"; run_cluster $r; done
