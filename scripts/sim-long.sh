#!/usr/bin/env bash
# Long runs of the replication model simulator: more seeds than the suite's
# 500, optionally with one of the known bugs switched on.
#
#   scripts/sim-long.sh                      # seeds 0..20000
#   scripts/sim-long.sh --seeds 20000..40000
#   scripts/sim-long.sh --mutation CommitPriorEpochByCount   # first seed that catches it
#   scripts/sim-long.sh --replay 1407 [--mutation NAME]      # print one seed's events
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="0..20000"; mutation=""; replay=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --mutation) mutation="$2"; shift 2 ;;
        --replay) replay="$2"; shift 2 ;;
        *) echo "usage: $0 [--seeds A..B] [--mutation NAME] [--replay SEED]" >&2; exit 2 ;;
    esac
done
if [ -n "$replay" ]; then
    CAIRN_SIM_REPLAY="$replay" CAIRN_SIM_MUTATION="$mutation" \
        cargo test -p replication --lib sim::tests::replay -- --ignored --nocapture
elif [ -n "$mutation" ]; then
    case "$mutation" in
        TruncateToHighWatermark) t=truncating_to_the_high_watermark_is_caught ;;
        AckBeforeFsync) t=acknowledging_before_fsync_is_caught ;;
        VoteBeforePersist) t=voting_before_persisting_the_vote_is_caught ;;
        CommitPriorEpochByCount) t=committing_an_earlier_epoch_by_counting_is_caught ;;
        *) echo "no mutation $mutation" >&2; exit 2 ;;
    esac
    CAIRN_SIM_MUTATION_FROM="${seeds%%..*}" cargo test -p replication --lib "sim::tests::$t" -- --nocapture
else
    CAIRN_SIM_SEEDS="$seeds" cargo test -p replication --lib sim::tests::every_seed -- --nocapture
fi
