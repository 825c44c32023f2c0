#!/bin/bash
# acks=all latency at a fixed rate: one broker, then a three-broker cluster
# (RF=3), then the same cluster with a follower frozen (SIGSTOP) after every
# partition's leadership was moved off it. Alternates ROUNDS times.
#   RATE=800000 ROUNDS=2 loadgen/scripts/cluster-half-load.sh
set -u
cd "$(dirname "$0")/../.."
D=${CAIRN_BENCH_DIR:-/tmp/cairn-bench-half}; mkdir -p "$D"
S=./target/release/cairn-server; L=./target/release/cairn-loadgen; C=./target/release/cairn
RATE=${RATE:-800000}; ROUNDS=${ROUNDS:-2}
load() { # bootstrap topic label
  echo "== $3"
  $L --bootstrap "$1" --topic "$2" --partitions 4 --acks all --record-bytes 100 --rate "$RATE" --duration 8 --warmup 2 2>"$D/loadgen.err" \
    | grep -E '^(produce|latency)' | head -3
  if grep -q . "$D/loadgen.err"; then tail -3 "$D/loadgen.err"; fi
}
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$D/s"; $S --data-dir "$D/s" --listen 127.0.0.1:7190 --metrics-listen off >"$D/s.out" 2>"$D/s.log" & sp=$!; sleep 1
  load 127.0.0.1:7190 "t$r" "single $r"
  kill -TERM $sp; wait $sp
  rm -rf "$D/c"; P=1=127.0.0.1:8191,2=127.0.0.1:8192,3=127.0.0.1:8193; pids=()
  for i in 1 2 3; do
    $S --node-id $i --data-dir "$D/c/d$i" --listen 127.0.0.1:719$i --peers $P --cores 1 --metrics-listen off >"$D/c$i.out" 2>"$D/c$i.log" & pids+=($!)
  done
  B=127.0.0.1:7191,127.0.0.1:7192,127.0.0.1:7193
  until $C --bootstrap $B topic create "t$r" --partitions 4 >/dev/null 2>&1; do sleep 0.2; done
  # Every partition led by broker 1 or 2, so broker 3 is a follower only.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    moved=0
    while IFS=$'\t' read -r p leader _; do
      case "$p" in ''|*[!0-9]*) continue ;; esac
      if [ "$leader" = 3 ] || [ "$leader" = none ]; then
        $C --bootstrap $B partition elect-leader "t$r" "$p" --broker $(( (p % 2) + 1 )) >/dev/null 2>&1; moved=1
      fi
    done < <($C --bootstrap $B topic describe "t$r" 2>/dev/null)
    [ $moved = 0 ] && break; sleep 0.5
  done
  load $B "t$r" "cluster $r"
  kill -STOP ${pids[2]}
  load 127.0.0.1:7191,127.0.0.1:7192 "t$r" "cluster $r, broker 3 paused"
  kill -CONT ${pids[2]}
  for p in ${pids[@]}; do kill -TERM $p; done; wait
done
