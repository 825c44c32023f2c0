//! Single steps of the machine, by hand; the simulator (`crate::sim`)
//! covers whole runs under faults.

use bytes::Bytes;
use protocol::ErrorCode;
use protocol::replica::{Config, FetchAnswer, FetchRequest, PeerMessage, ReplicaBatch, ReplicaKey, VoteRequest};
use protocol::types::{Incarnation, LeaderEpoch, NodeId, Offset};

use super::*;

fn key(n: u32) -> ReplicaKey {
    ReplicaKey { node: NodeId(n), incarnation: Incarnation(100 + u64::from(n)) }
}

fn config(n: u32) -> Config {
    Config { voters: (1..=n).map(key).collect(), joint: None, learners: vec![] }
}

fn hard(node: u32, voters: u32) -> HardState {
    HardState {
        epoch: LeaderEpoch(0),
        voted_for: None,
        incarnation: key(node).incarnation,
        initial: true,
        configs: vec![(Offset(0), LeaderEpoch(0), config(voters))],
        sequence: 0,
        epochs: vec![],
    }
}

fn open(node: u32, voters: u32, view: LogView) -> (Replica, Vec<Output>) {
    let mut out = Vec::new();
    let replica = Replica::open(Params::new(NodeId(node), 7), hard(node, voters), view, 0, &mut out);
    (replica, out)
}

fn persisted_all(r: &mut Replica, now: u64, out: &mut Vec<Output>) {
    let sequence = r.hard_state().sequence;
    r.step(now, Input::Persisted { sequence }, out);
}

fn sends(out: &[Output]) -> Vec<(NodeId, PeerMessage)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

fn batch(base: u64, end: u64, epoch: u32) -> ReplicaBatch {
    ReplicaBatch { base: Offset(base), end: Offset(end), epoch: LeaderEpoch(epoch), control: None, bytes: Bytes::new() }
}

fn view_of(batches: &[ReplicaBatch]) -> LogView {
    let mut epochs = EpochCache::new();
    for b in batches {
        epochs.assign(b.epoch, b.base).unwrap();
    }
    let end = batches.last().map_or(Offset(0), |b| b.end);
    LogView { log_start: Offset(0), log_end: end, durable: end, epochs }
}

#[test]
fn a_single_voter_leads_once_its_vote_is_durable_and_commits_only_durable_offsets() {
    let (mut r, _) = open(1, 1, LogView::default());
    let mut out = Vec::new();
    r.step(10_000, Input::Tick, &mut out);
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.epoch(), LeaderEpoch(1));
    // The LeaderChange batch waits for the vote to be durable.
    assert!(!out.iter().any(|o| matches!(o, Output::Append { .. })), "{out:?}");
    out.clear();
    persisted_all(&mut r, 10_001, &mut out);
    assert!(matches!(&out[..], [Output::Append { batches, proposal: None }] if batches[0].control.is_some()));
    assert!(!r.is_serving());
    out.clear();
    r.step(10_002, Input::Durable { offset: Offset(1) }, &mut out);
    assert_eq!(r.high_watermark(), Offset(1));
    assert!(r.is_serving());
    out.clear();
    let batch = Bytes::from_static(b"x");
    r.step(10_003, Input::Propose { id: ProposalId(1), batch, records: 3, acks: Acks::All }, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Ack { .. })), "acknowledged before durable: {out:?}");
    out.clear();
    r.step(10_004, Input::Durable { offset: Offset(4) }, &mut out);
    assert!(out.contains(&Output::Ack { proposal: ProposalId(1), base: Offset(1) }), "{out:?}");
}

/// Node 1 asks for epoch 1 with an empty log.
fn first_vote_of_node_1() -> VoteRequest {
    VoteRequest {
        epoch: LeaderEpoch(1),
        incarnation: key(1).incarnation,
        last_epoch: None,
        log_end: Offset(0),
        transfer: false,
    }
}

#[test]
fn a_vote_answer_waits_for_the_vote_to_be_durable() {
    let (mut r, _) = open(2, 3, LogView::default());
    let mut out = Vec::new();
    let request = first_vote_of_node_1();
    r.step(5, Input::Message { from: NodeId(1), message: PeerMessage::Vote(request) }, &mut out);
    assert!(
        matches!(out.iter().rev().find(|o| matches!(o, Output::PersistHardState { .. })), Some(Output::PersistHardState { state }) if state.voted_for == Some(NodeId(1)))
    );
    assert!(sends(&out).is_empty(), "a vote left before it was durable: {out:?}");
    out.clear();
    persisted_all(&mut r, 6, &mut out);
    assert!(matches!(&sends(&out)[..], [(NodeId(1), PeerMessage::VoteAnswer(a))] if a.granted));
}

#[test]
fn one_vote_per_epoch_and_only_for_a_log_at_least_as_complete() {
    let (mut r, _) = open(3, 3, view_of(&[batch(0, 5, 1)]));
    let mut out = Vec::new();
    let ask = |node: u32, last: Option<u32>, end: u64| VoteRequest {
        epoch: LeaderEpoch(2),
        incarnation: key(node).incarnation,
        last_epoch: last.map(LeaderEpoch),
        log_end: Offset(end),
        transfer: false,
    };
    // Behind: refused (but the epoch is taken).
    r.step(1, Input::Message { from: NodeId(1), message: PeerMessage::Vote(ask(1, Some(1), 4)) }, &mut out);
    persisted_all(&mut r, 2, &mut out);
    r.step(3, Input::Message { from: NodeId(2), message: PeerMessage::Vote(ask(2, Some(1), 5)) }, &mut out);
    persisted_all(&mut r, 4, &mut out);
    r.step(5, Input::Message { from: NodeId(1), message: PeerMessage::Vote(ask(1, Some(1), 9)) }, &mut out);
    persisted_all(&mut r, 6, &mut out);
    let answers: Vec<(NodeId, bool)> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            PeerMessage::VoteAnswer(a) => Some((to, a.granted)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![(NodeId(1), false), (NodeId(2), true), (NodeId(1), false)]);
}

#[test]
fn a_pre_vote_changes_nothing_durable() {
    let (mut r, _) = open(2, 3, LogView::default());
    let mut out = Vec::new();
    let request = first_vote_of_node_1();
    r.step(5, Input::Message { from: NodeId(1), message: PeerMessage::PreVote(request) }, &mut out);
    assert_eq!(r.epoch(), LeaderEpoch(0));
    assert!(!out.iter().any(|o| matches!(o, Output::PersistHardState { .. })));
    assert!(matches!(&sends(&out)[..], [(_, PeerMessage::PreVoteAnswer(a))] if a.granted));
}

/// A follower that follows `leader` (node 1) in epoch `epoch`.
fn follower(batches: &[ReplicaBatch], epoch: u32) -> Replica {
    let (mut r, _) = open(2, 3, view_of(batches));
    let mut out = Vec::new();
    r.step(
        1,
        Input::Message { from: NodeId(1), message: PeerMessage::BeginEpoch { epoch: LeaderEpoch(epoch) } },
        &mut out,
    );
    persisted_all(&mut r, 2, &mut out);
    r
}

fn answer(fetch_offset: u64, epoch: u32, hw: u64) -> FetchAnswer {
    FetchAnswer {
        error: ErrorCode::NONE,
        epoch: LeaderEpoch(epoch),
        leader: Some(NodeId(1)),
        fetch_offset: Offset(fetch_offset),
        report: false,
        high_watermark: Offset(hw),
        log_start: Offset(0),
        diverging: None,
        snapshot: None,
        batches: vec![],
    }
}

#[test]
fn a_diverged_follower_cuts_where_the_epochs_part_not_at_its_high_watermark() {
    // Its log: epoch 1 to 4, then epoch 2 to 9; the leader kept epoch 2
    // only to 6 (the epoch-2 leader lost [6, 9) in a failover).
    let mut r = follower(&[batch(0, 4, 1), batch(4, 6, 2), batch(6, 9, 2)], 3);
    let mut out = Vec::new();
    let mut a = answer(9, 3, 0);
    a.diverging = Some((LeaderEpoch(2), Offset(6)));
    r.step(3, Input::Message { from: NodeId(1), message: PeerMessage::FetchAnswer(a) }, &mut out);
    assert!(out.contains(&Output::Truncate { to: Offset(6) }), "{out:?}");
    assert_eq!(r.log_end(), Offset(6));
    // Nothing is fetched or appended until the cut is done.
    assert!(sends(&out).is_empty(), "{out:?}");
    out.clear();
    r.step(4, Input::Truncated { log_end: Offset(6) }, &mut out);
    assert!(
        matches!(&sends(&out)[..], [(NodeId(1), PeerMessage::Fetch(f))] if f.fetch_offset == Offset(6) && f.last_fetched_epoch == Some(LeaderEpoch(2)))
    );
}

#[test]
fn a_follower_takes_only_batches_that_continue_its_log() {
    let mut r = follower(&[batch(0, 4, 1)], 1);
    let mut out = Vec::new();
    let mut a = answer(4, 1, 4);
    a.batches = vec![batch(4, 6, 1), batch(5, 7, 1)]; // overlapping: refused
    r.step(3, Input::Message { from: NodeId(1), message: PeerMessage::FetchAnswer(a.clone()) }, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Append { .. })), "{out:?}");
    assert_eq!(r.log_end(), Offset(4));
    out.clear();
    // The fetch went again (the answer emptied its slot); a good answer.
    a.batches = vec![batch(4, 6, 1), batch(6, 7, 1)];
    r.step(4, Input::Message { from: NodeId(1), message: PeerMessage::FetchAnswer(a) }, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::Append { batches, .. } if batches.len() == 2)), "{out:?}");
    assert_eq!(r.log_end(), Offset(7));
    // Its hw follows the leader's, capped at what it shares.
    assert_eq!(r.high_watermark(), Offset(4));
}

/// Node 1 of three, elected in epoch 1 at 10 003 ms (its `LeaderChange`
/// batch at offset 0).
fn elected_leader_of_three() -> Replica {
    let (mut r, _) = open(1, 3, LogView::default());
    let mut out = Vec::new();
    r.step(10_000, Input::Tick, &mut out);
    assert_eq!(r.role(), Role::PreCandidate);
    for n in [2, 3] {
        let a = protocol::replica::VoteAnswer {
            error: ErrorCode::NONE,
            epoch: LeaderEpoch(0),
            asked: LeaderEpoch(1),
            incarnation: key(n).incarnation,
            granted: true,
        };
        r.step(10_001, Input::Message { from: NodeId(n), message: PeerMessage::PreVoteAnswer(a) }, &mut out);
    }
    assert_eq!(r.role(), Role::Candidate);
    persisted_all(&mut r, 10_002, &mut out);
    let a = protocol::replica::VoteAnswer {
        error: ErrorCode::NONE,
        epoch: LeaderEpoch(1),
        asked: LeaderEpoch(1),
        incarnation: key(2).incarnation,
        granted: true,
    };
    r.step(10_003, Input::Message { from: NodeId(2), message: PeerMessage::VoteAnswer(a) }, &mut out);
    assert_eq!(r.role(), Role::Leader);
    r
}

fn fetch_at(n: u32, offset: u64) -> FetchRequest {
    FetchRequest {
        incarnation: key(n).incarnation,
        epoch: LeaderEpoch(1),
        fetch_offset: Offset(offset),
        last_fetched_epoch: (offset > 0).then_some(LeaderEpoch(1)),
        durable_offset: Offset(offset),
        high_watermark: Offset(0),
        max_bytes: 0,
    }
}

#[test]
fn a_leader_that_a_quorum_stops_fetching_from_steps_down() {
    let mut r = elected_leader_of_three();
    let mut out = Vec::new();
    // Node 2 fetches for a while, then nobody does.
    let fetch = FetchRequest {
        incarnation: key(2).incarnation,
        epoch: LeaderEpoch(1),
        fetch_offset: Offset(0),
        last_fetched_epoch: None,
        durable_offset: Offset(0),
        high_watermark: Offset(0),
        max_bytes: 0,
    };
    r.step(10_100, Input::Message { from: NodeId(2), message: PeerMessage::Fetch(fetch) }, &mut out);
    let mut now = 10_100;
    while r.role() == Role::Leader && now < 20_000 {
        now += 50;
        r.step(now, Input::Tick, &mut out);
    }
    assert_eq!(r.role(), Role::Follower);
    let silent_for = now - 10_100;
    assert!((300..=400).contains(&silent_for), "stepped down after {silent_for} ms of silence");
}

#[test]
fn a_cut_that_removes_an_epoch_is_in_the_hard_state_before_anything_lands_there() {
    // Epoch 1 to 10, epoch 3 to 15; the leader's epoch 1 runs to 12, so
    // what lands at 10 next is of epoch 1 again (no new epoch to persist).
    let mut r = follower(&[batch(0, 10, 1), batch(10, 15, 3)], 4);
    let mut out = Vec::new();
    let mut a = answer(15, 4, 0);
    a.diverging = Some((LeaderEpoch(1), Offset(12)));
    r.step(3, Input::Message { from: NodeId(1), message: PeerMessage::FetchAnswer(a) }, &mut out);
    // The cut first: forgetting epoch 3 before it would, after a crash in
    // between, label [10, 15) as epoch 1.
    assert!(out.contains(&Output::Truncate { to: Offset(10) }), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::PersistHardState { .. })), "{out:?}");
    out.clear();
    r.step(4, Input::Truncated { log_end: Offset(10) }, &mut out);
    let persisted = out.iter().find_map(|o| match o {
        Output::PersistHardState { state } => Some(state.epochs.clone()),
        _ => None,
    });
    assert_eq!(persisted, Some(vec![(LeaderEpoch(1), Offset(0))]), "{out:?}");
    // Nothing is fetched (so nothing lands at 10) until that is durable.
    assert!(sends(&out).is_empty(), "{out:?}");
    persisted_all(&mut r, 5, &mut out);
    assert!(
        matches!(&sends(&out)[..], [(NodeId(1), PeerMessage::Fetch(f))] if f.fetch_offset == Offset(10)),
        "{out:?}"
    );
}

#[test]
fn a_follower_is_caught_up_while_it_keeps_reaching_the_leaders_log_end() {
    let mut r = elected_leader_of_three();
    let mut out = Vec::new();
    let lag = r.params.replica_lag_max_ms;
    assert_eq!(r.caught_up(10_004), vec![NodeId(1)], "only the leader, before any fetch");
    // Node 2 fetches at the log end (after the LeaderChange batch), which
    // commits the epoch's first batch.
    let end = r.log_end().0;
    r.step(10_005, Input::Durable { offset: Offset(end) }, &mut out);
    r.step(10_010, Input::Message { from: NodeId(2), message: PeerMessage::Fetch(fetch_at(2, end)) }, &mut out);
    assert!(r.is_serving());
    assert_eq!(r.caught_up(10_010), vec![NodeId(1), NodeId(2)]);
    // Appends keep coming; node 2 fetches where the log ended at its last
    // fetch, never at the current end: still caught up, by time.
    let mut now = 10_010;
    let mut fetched = end;
    for id in 1..40 {
        now += lag / 10;
        let propose = Input::Propose { id: ProposalId(id), batch: Bytes::new(), records: 1, acks: Acks::Leader };
        r.step(now, propose, &mut out);
        let end_now = r.log_end().0;
        assert!(end_now > fetched, "the proposal was appended");
        r.step(now, Input::Message { from: NodeId(2), message: PeerMessage::Fetch(fetch_at(2, fetched)) }, &mut out);
        fetched = end_now;
        assert!(r.caught_up(now).contains(&NodeId(2)), "node 2 dropped out at {now} ms");
        assert!(!r.caught_up(now).contains(&NodeId(3)), "node 3 never fetched");
        assert_eq!(r.role(), Role::Leader, "at {now} ms");
    }
    // Node 2 reaches the log end once more, then stops fetching: out once
    // the lag has passed, not before.
    let last = now + 1;
    let end = r.log_end().0;
    r.step(last, Input::Message { from: NodeId(2), message: PeerMessage::Fetch(fetch_at(2, end)) }, &mut out);
    assert!(r.caught_up(last + lag).contains(&NodeId(2)));
    assert!(!r.caught_up(last + lag + 1).contains(&NodeId(2)));
}

#[test]
fn a_preferred_replica_campaigns_at_its_first_timeout_and_the_others_wait_a_random_one() {
    let mut params = Params::new(NodeId(1), 7);
    params.first_election_timeout_ms = Some(100);
    let mut out = Vec::new();
    let mut preferred = Replica::open(params, hard(1, 3), LogView::default(), 0, &mut out);
    preferred.step(99, Input::Tick, &mut out);
    assert_eq!(preferred.role(), Role::Follower, "not before its first timeout");
    preferred.step(100, Input::Tick, &mut out);
    assert_eq!(preferred.role(), Role::PreCandidate);
    let (mut other, _) = open(2, 3, LogView::default());
    other.step(100, Input::Tick, &mut out);
    assert_eq!(other.role(), Role::Follower, "the others wait at least the election timeout");
    assert!(other.next_deadline_ms() >= other.params.election_timeout_min_ms);
}
