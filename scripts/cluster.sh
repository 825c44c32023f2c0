#!/usr/bin/env bash
# A local three-broker cluster for trying Cairn: brokers 1-3 listen for
# clients on 127.0.0.1:7071-7073 and for each other on 127.0.0.1:8071-8073,
# with their data in ./cairn-cluster/d1..d3 (kept between runs). Ctrl-C
# stops all three (SIGTERM: each syncs and closes its logs).
#
#   scripts/cluster.sh                 # build (release) and start
#   CAIRN_CLUSTER_DIR=/tmp/c scripts/cluster.sh
#   CAIRN_CLUSTER_PROFILE=debug scripts/cluster.sh
set -euo pipefail

cd "$(dirname "$0")/.."
dir="${CAIRN_CLUSTER_DIR:-./cairn-cluster}"
profile="${CAIRN_CLUSTER_PROFILE:-release}"
cores="${CAIRN_CLUSTER_CORES:-1}"
if [ "$profile" = release ]; then
    cargo build --release -p server -p client --bins
else
    cargo build -p server -p client --bins
fi
server="./target/$profile/cairn-server"
peers="1=127.0.0.1:8071,2=127.0.0.1:8072,3=127.0.0.1:8073"
mkdir -p "$dir"

pids=()
stop() {
    trap - INT TERM EXIT
    echo "stopping the cluster"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

for id in 1 2 3; do
    "$server" --node-id "$id" --data-dir "$dir/d$id" --listen "127.0.0.1:707$id" \
        --peers "$peers" --cores "$cores" >"$dir/broker$id.out" 2>"$dir/broker$id.log" &
    pids+=("$!")
done
for id in 1 2 3; do
    # Each broker prints one line once it listens.
    for _ in $(seq 1 300); do
        grep -q "listening" "$dir/broker$id.out" 2>/dev/null && break
        if ! kill -0 "${pids[$((id - 1))]}" 2>/dev/null; then
            echo "broker $id did not start:" >&2
            cat "$dir/broker$id.log" >&2
            exit 1
        fi
        sleep 0.1
    done
done
cat <<MSG
three brokers up (logs in $dir/broker*.log); in another terminal:

  alias cairn=./target/$profile/cairn
  export B=127.0.0.1:7071,127.0.0.1:7072,127.0.0.1:7073
  cairn --bootstrap \$B topic create orders --partitions 3     # replication factor 3
  printf 'alice:created\nbob:created\n' | cairn --bootstrap \$B produce orders --key-separator :
  cairn --bootstrap \$B consume orders --from earliest --count 2

Ctrl-C stops all three.
MSG
wait -n "${pids[@]}" || true
echo "a broker exited; see $dir/broker*.log" >&2
