//! Seeds of the model simulator, and the mutation tests that show it
//! catches the bugs it exists for. `CAIRN_SIM_SEEDS=A..B` widens a run
//! (scripts/sim-long.sh).

use super::{Sim, SimSpec, Violation};
use crate::replica::Mutation;

fn seeds(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    let Ok(spec) = std::env::var("CAIRN_SIM_SEEDS") else { return default };
    let (a, b) = spec.split_once("..").expect("CAIRN_SIM_SEEDS is A..B");
    a.parse().expect("a seed")..b.parse().expect("a seed")
}

fn run(seed: u64, mutation: Option<Mutation>) -> Result<super::RunStats, Violation> {
    let mut spec = SimSpec::new(seed);
    spec.mutation = mutation;
    Sim::new(spec).run()
}

/// Seed 3944: the leader appends the config that removes it, loses
/// leadership before it commits, and is the only replica holding it (the
/// others lag, one lost its disk). It refuses every other candidate (its
/// log is longer); unless it may stand itself (`can_campaign`), no
/// election is ever won.
#[test]
fn a_removed_leader_holding_the_only_copy_of_its_removal_can_be_elected_to_finish_it() {
    if let Err(v) = run(3944, None) {
        panic!("seed 3944: {v}");
    }
}

#[test]
fn every_seed_keeps_the_invariants_and_commits_again_after_healing() {
    let (mut acked, mut elections, mut crashes, mut truncations) = (0, 0, 0, 0);
    let (mut fsync_failures, mut lost_disks, mut reassigns, mut reached) = (0, 0, 0, 0);
    for seed in seeds(0..500) {
        let result = std::panic::catch_unwind(|| run(seed, None)).unwrap_or_else(|_| panic!("seed {seed} panicked"));
        match result {
            Ok(stats) => {
                acked += stats.acked_all;
                elections += stats.elections;
                crashes += stats.crashes;
                truncations += stats.truncations;
                fsync_failures += stats.fsync_failures;
                lost_disks += stats.lost_disks;
                reassigns += stats.reassigns;
                reached += stats.reassigns_reached;
            }
            Err(v) => panic!("seed {seed}: {v}"),
        }
    }
    // The runs did what they are for: commits, failovers, crashes, logs
    // that had to be cut, failed fsyncs, lost disks, and moves that got
    // where they were going.
    assert!(
        acked > 1_000 && elections > 500 && crashes > 200 && truncations > 0,
        "{acked} {elections} {crashes} {truncations}"
    );
    assert!(
        fsync_failures > 100 && lost_disks > 20 && reassigns > 100 && reached > 50,
        "{fsync_failures} {lost_disks} {reassigns} {reached}"
    );
}

#[test]
fn same_seed_same_trace() {
    for seed in [3, 17] {
        let a = run(seed, None).expect("a clean run");
        let b = run(seed, None).expect("a clean run");
        assert_eq!(a.trace, b.trace, "seed {seed} ran two ways");
        assert_eq!(a.events, b.events);
    }
    assert_ne!(run(3, None).unwrap().trace, run(4, None).unwrap().trace);
}

/// Runs seeds until one breaks a safety invariant; the known bug must be
/// caught, and by the invariants that guard against it. A run that only
/// stalls (liveness) is not what this looks for. `CAIRN_SIM_MUTATION_FROM`
/// starts elsewhere than seed 0.
fn caught(mutation: Mutation, invariants: &[&str], seeds_max: u64) {
    let first = std::env::var("CAIRN_SIM_MUTATION_FROM").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in first..first + seeds_max {
        match run(seed, Some(mutation)) {
            Ok(_) => {}
            Err(v) if v.invariant == "liveness" => {}
            Err(v) => {
                assert!(
                    invariants.contains(&v.invariant),
                    "{mutation:?} broke {v} (seed {seed}), not one of {invariants:?}"
                );
                eprintln!("{mutation:?} caught at seed {seed}: {v}");
                return;
            }
        }
    }
    panic!("{mutation:?} survived {seeds_max} seeds: the simulator has no teeth for it");
}

#[test]
fn truncating_to_the_high_watermark_is_caught() {
    caught(Mutation::TruncateToHighWatermark, &["I6", "I7"], 500);
}

#[test]
fn acknowledging_before_fsync_is_caught() {
    caught(Mutation::AckBeforeFsync, &["I4", "I7"], 500);
}

#[test]
fn voting_before_persisting_the_vote_is_caught() {
    caught(Mutation::VoteBeforePersist, &["I1", "I2"], 500);
}

#[test]
fn committing_an_earlier_epoch_by_counting_is_caught() {
    caught(Mutation::CommitPriorEpochByCount, &["I4", "I5", "I6", "I7"], 1000);
}

#[test]
fn switching_voters_without_a_joint_config_is_caught() {
    caught(Mutation::SkipJointConfig, &["I1", "I4", "I6", "I7"], 1000);
}

#[test]
#[ignore = "prints what seeds do"]
fn print_stats() {
    for seed in seeds(0..12) {
        let mut spec = SimSpec::new(seed);
        spec.mutation = None;
        let sim = Sim::new(spec);
        let faults = format!("{:?}", sim.faults());
        let stats = sim.run();
        eprintln!("seed {seed}: {stats:?}\n   {faults}");
    }
}

/// Replays one seed with every event printed: `CAIRN_SIM_REPLAY=SEED`
/// (and `CAIRN_SIM_MUTATION=Name`).
#[test]
#[ignore = "a debugging aid"]
fn replay() {
    let seed = std::env::var("CAIRN_SIM_REPLAY").expect("CAIRN_SIM_REPLAY=SEED").parse().expect("a seed");
    let mut spec = SimSpec::new(seed);
    spec.verbose = true;
    spec.mutation = std::env::var("CAIRN_SIM_MUTATION").ok().map(|m| match m.as_str() {
        "TruncateToHighWatermark" => Mutation::TruncateToHighWatermark,
        "AckBeforeFsync" => Mutation::AckBeforeFsync,
        "VoteBeforePersist" => Mutation::VoteBeforePersist,
        "CommitPriorEpochByCount" => Mutation::CommitPriorEpochByCount,
        "SkipJointConfig" => Mutation::SkipJointConfig,
        other => panic!("no mutation {other}"),
    });
    eprintln!("{:?}", Sim::new(spec).run());
}
