//! A consumer in a group: the coordinator decides which partitions it
//! reads (docs/groups.md); it heartbeats from [`GroupConsumer::poll`],
//! applies what each answer says (revoked partitions are committed, when
//! committing automatically, and handed to the listener before they are
//! dropped; new ones start at the group's committed offset, or at
//! `start_from` when the group has none), and commits its positions.
//!
//! Delivery is at least once: a position is committed only after the
//! records before it were returned by a `poll`, and (automatic commit) only
//! at the next `poll` or on revocation, by which time the application has
//! handled them. A member that stops polling for longer than its session
//! timeout is removed, and its partitions go to the others.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::ErrorCode;
use protocol::api::OffsetSpec;
use protocol::types::Offset;

use crate::group::{CommitEntry, GroupHeartbeatRequest, TopicPartitions};
use crate::{Client, ClientError, Consumer, ConsumerConfig, ConsumerRecord, Result, StartFrom};

/// A partition of a topic.
pub type TopicPartition = (String, u32);

/// Told of partitions before they go and after they come.
pub trait RebalanceListener: Send {
    /// Before these are dropped: the last chance to commit them, through
    /// [`Revoking::commit`] (what it commits is committed before they go,
    /// with automatic commits' positions for the others).
    fn on_revoked(&mut self, revoking: &mut Revoking) {
        let _ = revoking;
    }
    /// These are now read, from the positions given.
    fn on_assigned(&mut self, partitions: &[(TopicPartition, Offset)]) {
        let _ = partitions;
    }
    /// The member was removed (session expired, fenced): these were taken
    /// away without a chance to commit.
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// The partitions a rebalance takes away, handed to
/// [`RebalanceListener::on_revoked`] before they are dropped.
#[derive(Debug)]
pub struct Revoking {
    /// Each with the position the records returned so far reached (`None`:
    /// records fetched for it were not yet returned).
    partitions: Vec<(TopicPartition, Option<Offset>)>,
    commits: BTreeMap<TopicPartition, Offset>,
}

impl Revoking {
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.partitions.iter().map(|(tp, _)| tp)
    }

    /// The next offset after the records `poll` returned for `partition`.
    pub fn position(&self, partition: &TopicPartition) -> Option<Offset> {
        self.partitions.iter().find(|(tp, _)| tp == partition).and_then(|(_, o)| *o)
    }

    /// Commits `offset` for `partition` (one being revoked; others are
    /// ignored) before it goes, overriding an automatic commit's position.
    pub fn commit(&mut self, partition: TopicPartition, offset: Offset) {
        if self.partitions.iter().any(|(tp, _)| *tp == partition) {
            self.commits.insert(partition, offset);
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    pub group: String,
    pub topics: Vec<String>,
    /// `range`, `round-robin` or `cooperative-sticky`; `None`: the group's
    /// (cooperative-sticky for a new group).
    pub assignor: Option<String>,
    /// Where a partition starts when the group has committed nothing for it
    /// (Kafka's `auto.offset.reset`).
    pub start_from: StartFrom,
    /// Commit positions this often from `poll` (and on revocation and
    /// close); `None`: only [`GroupConsumer::commit`] commits.
    pub auto_commit_interval: Option<Duration>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub consumer: ConsumerConfig,
}

impl GroupConsumerConfig {
    pub fn new(group: impl Into<String>, topics: &[&str]) -> GroupConsumerConfig {
        GroupConsumerConfig {
            group: group.into(),
            topics: topics.iter().map(|&t| t.to_owned()).collect(),
            assignor: None,
            start_from: StartFrom::Earliest,
            auto_commit_interval: Some(Duration::from_secs(5)),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_mins(1),
            consumer: ConsumerConfig { fetch_wait_max: Duration::from_millis(250), ..ConsumerConfig::default() },
        }
    }
}

pub struct GroupConsumer {
    client: Client,
    config: GroupConsumerConfig,
    member: String,
    epoch: i32,
    /// One consumer per topic with assigned partitions.
    readers: BTreeMap<String, Consumer>,
    next_heartbeat: Instant,
    interval: Duration,
    next_commit: Option<Instant>,
    /// Positions last committed, so an unchanged one is not sent again.
    committed: BTreeMap<TopicPartition, Offset>,
    listener: Option<Box<dyn RebalanceListener>>,
    /// Which topic's reader polls first next time (fairness over topics).
    turn: usize,
}

fn member_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}

impl GroupConsumer {
    /// Joins the group.
    pub async fn join(client: Client, config: GroupConsumerConfig) -> Result<GroupConsumer> {
        if config.topics.is_empty() {
            return Err(ClientError::InvalidArgument("a group consumer needs at least one topic".into()));
        }
        let mut c = GroupConsumer {
            client,
            next_commit: config.auto_commit_interval.map(|i| Instant::now() + i),
            config,
            member: member_id(),
            epoch: 0,
            readers: BTreeMap::new(),
            next_heartbeat: Instant::now(),
            interval: Duration::from_secs(1),
            committed: BTreeMap::new(),
            listener: None,
            turn: 0,
        };
        c.heartbeat().await?;
        Ok(c)
    }

    pub fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    pub fn member_id(&self) -> &str {
        &self.member
    }

    pub fn member_epoch(&self) -> i32 {
        self.epoch
    }

    /// What it reads now, with the next offset of each.
    pub fn positions(&self) -> BTreeMap<TopicPartition, Offset> {
        self.readers.iter().flat_map(|(t, r)| r.positions().iter().map(move |(p, o)| ((t.clone(), *p), *o))).collect()
    }

    /// Moves a partition it reads to `offset` (the next `poll` reads from
    /// there, and the next commit commits it).
    pub fn seek(&mut self, topic: &str, partition: u32, offset: Offset) {
        if let Some(r) = self.readers.get_mut(topic)
            && r.positions().contains_key(&partition)
        {
            r.seek(partition, offset);
        }
    }

    fn owned(&self) -> Vec<TopicPartitions> {
        self.readers
            .iter()
            .map(|(t, r)| TopicPartitions { topic: t.clone(), partitions: r.positions().keys().copied().collect() })
            .collect()
    }

    async fn heartbeat(&mut self) -> Result<()> {
        let joining = self.epoch == 0;
        let request = GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member: self.member.clone(),
            member_epoch: self.epoch,
            subscription: joining.then(|| self.config.topics.clone()),
            assignor: self.config.assignor.clone(),
            owned: Some(self.owned()),
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
            rebalance_timeout_ms: self.config.rebalance_timeout.as_millis() as u32,
        };
        match self.client.group_heartbeat(request).await {
            Ok(r) => {
                self.epoch = r.member_epoch;
                self.interval = Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(10)));
                self.next_heartbeat = Instant::now() + self.interval;
                let target: BTreeSet<TopicPartition> =
                    r.assignment.iter().flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.clone(), *p))).collect();
                self.apply(&target).await
            }
            Err(e) if matches!(e.code(), Some(ErrorCode::FENCED_MEMBER_EPOCH | ErrorCode::UNKNOWN_MEMBER_ID)) => {
                self.lose();
                Ok(())
            }
            Err(e) => {
                // A coordinator that moves or is unreachable: keep reading, retry soon.
                tracing::debug!(error = %e, "group heartbeat failed");
                self.next_heartbeat = Instant::now() + self.interval / 4;
                if matches!(e, ClientError::Broker { .. }) && !e.code().is_some_and(ErrorCode::is_retriable) {
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    /// Removed from the group (fenced, or its session expired): everything
    /// it read is lost, uncommitted; it joins again at the next heartbeat.
    fn lose(&mut self) {
        let lost: Vec<TopicPartition> = self.positions().into_keys().collect();
        self.readers.clear();
        self.committed.clear();
        if let Some(l) = self.listener.as_mut() {
            l.on_lost(&lost);
        }
        self.epoch = 0;
        self.next_heartbeat = Instant::now();
    }

    /// Tells the listener `revoked` go and commits what it asks (and, in
    /// automatic mode, their positions).
    async fn revoke(&mut self, revoked: &[TopicPartition]) -> Result<()> {
        let positions = self.returned_positions();
        let mut revoking = Revoking {
            partitions: revoked.iter().map(|tp| (tp.clone(), positions.get(tp).copied())).collect(),
            commits: BTreeMap::new(),
        };
        if let Some(l) = self.listener.as_mut() {
            l.on_revoked(&mut revoking);
        }
        let mut offsets = BTreeMap::new();
        if self.config.auto_commit_interval.is_some() {
            offsets.extend(revoking.partitions.iter().filter_map(|(tp, o)| o.map(|o| (tp.clone(), o))));
        }
        offsets.extend(revoking.commits);
        self.commit_positions(offsets.into_iter().collect()).await
    }

    /// Makes the readers hold exactly `target`.
    async fn apply(&mut self, target: &BTreeSet<TopicPartition>) -> Result<()> {
        let current: BTreeSet<TopicPartition> = self.positions().into_keys().collect();
        let revoked: Vec<TopicPartition> = current.difference(target).cloned().collect();
        let added: Vec<TopicPartition> = target.difference(&current).cloned().collect();
        if revoked.is_empty() && added.is_empty() {
            return Ok(());
        }
        if !revoked.is_empty() {
            // A commit refused now (the member moved on) loses nothing
            // acknowledged: the next owner re-reads from the last commit.
            if let Err(e) = self.revoke(&revoked).await {
                tracing::warn!(error = %e, "commit on revocation failed: the next owner re-reads from the last commit");
            }
        }
        // From what was returned: records buffered by a failed poll are
        // fetched again by the rebuilt readers, not skipped.
        let mut positions = self.returned_positions();
        for tp in &revoked {
            positions.remove(tp);
            self.committed.remove(tp);
        }
        // Where each new partition starts: the group's commit, else start_from.
        let wanted: Vec<TopicPartitions> = group_by_topic(&added);
        let committed = self.client.committed_offsets(&self.config.group, wanted).await?;
        let mut starts: Vec<(TopicPartition, Offset)> = Vec::new();
        for tp in &added {
            let c = committed.iter().find(|c| c.topic == tp.0 && c.partition == tp.1);
            let at = match c {
                Some(c) => Offset(c.offset),
                None => self.resolve_start(&tp.0, tp.1).await?,
            };
            if let Some(c) = c {
                self.committed.insert(tp.clone(), Offset(c.offset));
            }
            positions.insert(tp.clone(), at);
            starts.push((tp.clone(), at));
        }
        self.rebuild(&positions).await?;
        if let Some(l) = self.listener.as_mut() {
            l.on_assigned(&starts);
        }
        Ok(())
    }

    async fn resolve_start(&self, topic: &str, partition: u32) -> Result<Offset> {
        let spec = match self.config.start_from {
            StartFrom::Offset(o) => return Ok(o),
            StartFrom::Earliest => OffsetSpec::Earliest,
            StartFrom::Latest => OffsetSpec::Latest,
            StartFrom::Timestamp(t) => OffsetSpec::Timestamp(t),
        };
        let found = self.client.list_offsets(topic, &[partition], spec).await?;
        Ok(found.first().map_or(Offset(0), |(_, o)| *o))
    }

    /// Moves each partition of `topic` read from outside its log (below
    /// the log start offset, or past the end) to where `start_from` says,
    /// kept inside the log.
    async fn reset_out_of_range(&mut self, topic: &str) -> Result<()> {
        let Some(reader) = self.readers.get(topic) else { return Ok(()) };
        let parts: Vec<u32> = reader.positions().keys().copied().collect();
        let earliest: BTreeMap<u32, Offset> =
            self.client.list_offsets(topic, &parts, OffsetSpec::Earliest).await?.into_iter().collect();
        let latest: BTreeMap<u32, Offset> =
            self.client.list_offsets(topic, &parts, OffsetSpec::Latest).await?.into_iter().collect();
        let positions = reader.positions().clone();
        for (p, at) in positions {
            let (Some(&low), Some(&high)) = (earliest.get(&p), latest.get(&p)) else { continue };
            if (low..=high).contains(&at) {
                continue;
            }
            let to = self.resolve_start(topic, p).await?.clamp(low, high);
            tracing::info!(topic, partition = p, from = at.0, to = to.0, "position outside the log reset");
            if let Some(r) = self.readers.get_mut(topic) {
                r.seek(p, to);
            }
        }
        Ok(())
    }

    /// One reader per topic, at `positions`.
    async fn rebuild(&mut self, positions: &BTreeMap<TopicPartition, Offset>) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<(u32, Offset)>> = BTreeMap::new();
        for ((t, p), o) in positions {
            by_topic.entry(t.as_str()).or_default().push((*p, *o));
        }
        let mut readers = BTreeMap::new();
        for (topic, parts) in by_topic {
            let list: Vec<u32> = parts.iter().map(|(p, _)| *p).collect();
            let mut reader = Consumer::assign(
                self.client.clone(),
                self.config.consumer.clone(),
                topic,
                &list,
                StartFrom::Offset(Offset(0)),
            )
            .await?;
            for (p, o) in parts {
                reader.seek(p, o);
            }
            readers.insert(topic.to_owned(), reader);
        }
        self.readers = readers;
        Ok(())
    }

    /// Records of the partitions it reads; heartbeats and (automatic)
    /// commits when due. Empty when none arrived within the fetch wait.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if let Some(at) = self.next_commit
            && Instant::now() >= at
        {
            self.next_commit = self.config.auto_commit_interval.map(|i| Instant::now() + i);
            match self.commit().await {
                Ok(()) => {}
                // Stale: the heartbeat below brings the new epoch; the next
                // commit uses it.
                Err(e) if e.code() == Some(ErrorCode::STALE_MEMBER_EPOCH) => {}
                Err(e) if matches!(e.code(), Some(ErrorCode::FENCED_MEMBER_EPOCH | ErrorCode::UNKNOWN_MEMBER_ID)) => {
                    self.lose();
                }
                Err(e) if e.code().is_some_and(ErrorCode::is_retriable) => {
                    tracing::debug!(error = %e, "automatic commit failed; retried at the next one");
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat().await?;
        }
        if self.readers.is_empty() {
            // Nothing to read yet: wait for the next heartbeat's news.
            tokio::time::sleep_until(self.next_heartbeat.into()).await;
            return Ok(Vec::new());
        }
        let topics: Vec<String> = self.readers.keys().cloned().collect();
        self.turn = self.turn.wrapping_add(1);
        for i in 0..topics.len() {
            let topic = &topics[(self.turn + i) % topics.len()];
            let reader = self.readers.get_mut(topic).expect("listed");
            let records = match reader.poll().await {
                // A position retention has passed (or one past the end): it
                // starts again where `start_from` says, as Kafka's
                // `auto.offset.reset` does; the other partitions read on.
                Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                    tracing::info!(error = %e, "a position is outside its log: reset by start_from");
                    self.reset_out_of_range(topic).await?;
                    continue;
                }
                r => r?,
            };
            if !records.is_empty() {
                return Ok(records);
            }
        }
        Ok(Vec::new())
    }

    /// Commits the position of every partition it reads (what the records
    /// returned so far reached).
    pub async fn commit(&mut self) -> Result<()> {
        let positions: Vec<(TopicPartition, Offset)> = self.returned_positions().into_iter().collect();
        self.commit_positions(positions).await
    }

    /// Positions that records already returned reached (a partition with
    /// records a failed poll did not return is at the first of them).
    fn returned_positions(&self) -> BTreeMap<TopicPartition, Offset> {
        self.readers
            .iter()
            .flat_map(|(t, r)| r.returned_positions().into_iter().map(move |(p, o)| ((t.clone(), p), o)))
            .collect()
    }

    /// Commits `offsets` (each the next offset to read of its partition)
    /// with each one's metadata (Kafka's `OffsetAndMetadata`, kept beside
    /// the offset and shown by `cairn group describe`). Partitions this
    /// member is not assigned are refused by the coordinator.
    pub async fn commit_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, Offset, String)>,
    ) -> Result<()> {
        self.commit_entries(offsets.into_iter().collect()).await
    }

    async fn commit_positions(&mut self, positions: Vec<(TopicPartition, Offset)>) -> Result<()> {
        self.commit_entries(positions.into_iter().map(|(tp, o)| (tp, o, String::new())).collect()).await
    }

    async fn commit_entries(&mut self, offsets: Vec<(TopicPartition, Offset, String)>) -> Result<()> {
        // An unchanged offset without metadata needs no second commit.
        let changed: Vec<(TopicPartition, Offset, String)> =
            offsets.into_iter().filter(|(tp, o, m)| !m.is_empty() || self.committed.get(tp) != Some(o)).collect();
        if changed.is_empty() || self.epoch <= 0 {
            return Ok(());
        }
        let entries = changed
            .iter()
            .map(|((t, p), o, m)| CommitEntry { topic: t.clone(), partition: *p, offset: o.0, metadata: m.clone() })
            .collect();
        let member = self.member.clone();
        match self.client.commit_offsets(&self.config.group, &member, self.epoch, entries).await {
            Ok(()) => {
                self.committed.extend(changed.into_iter().map(|(tp, o, _)| (tp, o)));
                Ok(())
            }
            // The epoch moved under us: heartbeat, and the next commit uses the new one.
            Err(e) if e.code() == Some(ErrorCode::STALE_MEMBER_EPOCH) => {
                self.next_heartbeat = Instant::now();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Revokes every partition (the listener's `on_revoked`, then the
    /// commits it asks and, in automatic mode, the positions) and leaves
    /// the group, so its partitions go to the others at once.
    pub async fn close(mut self) -> Result<()> {
        // Leave even when the commit fails, so the partitions move at once.
        let owned: Vec<TopicPartition> = self.positions().into_keys().collect();
        let committed = self.revoke(&owned).await;
        let request = GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member: self.member.clone(),
            member_epoch: -1,
            subscription: None,
            assignor: None,
            owned: None,
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
            rebalance_timeout_ms: self.config.rebalance_timeout.as_millis() as u32,
        };
        let left = self.client.group_heartbeat(request).await.map(|_| ());
        committed.and(left)
    }
}

fn group_by_topic(tps: &[TopicPartition]) -> Vec<TopicPartitions> {
    let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by.entry(t.as_str()).or_default().push(*p);
    }
    by.into_iter().map(|(t, ps)| TopicPartitions { topic: t.to_owned(), partitions: ps }).collect()
}
