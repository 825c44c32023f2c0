#!/usr/bin/env bash
# Long runs of the real-process fault tests (tests/tests/cluster_faults.rs):
# three brokers, a leader frozen with SIGSTOP, and a leader cut off from its
# peers in network namespaces (needs root; nftables is installed if missing),
# N rounds of each fault in one cluster, the history checked at the end.
#
#   scripts/faults-long.sh              # 20 rounds
#   scripts/faults-long.sh --rounds 100
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=20
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds N]" >&2; exit 2 ;;
    esac
done
CAIRN_FAULT_ROUNDS="$rounds" cargo test --release -p cairn-tests --test cluster_faults -- --nocapture --test-threads 1
