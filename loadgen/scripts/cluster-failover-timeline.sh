#!/bin/bash
# The load generator against a three-broker cluster while the leader of
# partition 0 is killed with kill -9 halfway: its timeline shows the
# failover as the p99 of the second it happened in (each record counts in
# the second it was due to be sent).
#   RATE=200000 loadgen/scripts/cluster-failover-timeline.sh
set -u
cd "$(dirname "$0")/../.."
D=${CAIRN_BENCH_DIR:-/tmp/cairn-bench-failover}; rm -rf "$D"; mkdir -p "$D"
S=./target/release/cairn-server; L=./target/release/cairn-loadgen; C=./target/release/cairn
RATE=${RATE:-200000}
P=1=127.0.0.1:8181,2=127.0.0.1:8182,3=127.0.0.1:8183; pids=()
for i in 1 2 3; do
  $S --node-id $i --data-dir "$D/d$i" --listen 127.0.0.1:718$i --peers $P --cores 1 --metrics-listen off >"$D/c$i.out" 2>"$D/c$i.log" & pids+=($!)
done
B=127.0.0.1:7181,127.0.0.1:7182,127.0.0.1:7183
until $C --bootstrap $B topic create f --partitions 1 >/dev/null 2>&1; do sleep 0.2; done
leader=none
until [ "$leader" != none ]; do
  sleep 0.2
  leader=$($C --bootstrap $B topic describe f 2>/dev/null | awk -F'\t' '$1 == "0" { print $2 }')
done
$L --bootstrap $B --topic f --acks all --rate "$RATE" --duration 10 --warmup 2 --timeline 2>"$D/loadgen.err" > "$D/loadgen.out" &
lg=$!
sleep 7
echo "kill -9 of broker $leader (leader of f/0) at second ~7"
kill -9 "${pids[$((leader - 1))]}"
wait $lg
cat "$D/loadgen.out"
for p in ${pids[@]}; do kill -TERM $p 2>/dev/null; done; wait 2>/dev/null
