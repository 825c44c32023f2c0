//! Consumer groups from the client: calls reach the group's coordinator
//! (the leader of its partition of `__consumer_offsets`, found with
//! `FindCoordinator`, then routed like any partition's request, and found
//! again after `NOT_COORDINATOR`), plus the admin calls behind `cairn
//! group`. docs/groups.md has the rules the coordinator keeps.

use std::time::Duration;

use protocol::ErrorCode;
pub use protocol::api::groups::{
    CommitEntry, CommittedEntry, GroupHeartbeatRequest, GroupHeartbeatResponse, GroupInfo, GroupListing, MemberInfo,
    TopicPartitions,
};
use protocol::api::{GroupRequest, GroupResponse, Request, Response};

use crate::client::{Client, Route, unexpected};
use crate::error::{ClientError, Result};

/// Tries for a call whose coordinator moves or is still loading.
const COORDINATOR_TRIES_MAX: u32 = 20;

fn retriable(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS | ErrorCode::LEADER_NOT_AVAILABLE)
    ) || matches!(e, ClientError::ConnectionLost(_) | ClientError::Connect { .. })
}

impl Client {
    /// Sends `request` for `group` to the group's coordinator.
    pub async fn group_call(&self, group: &str, request: GroupRequest) -> Result<GroupResponse> {
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = async {
                let (topic, partition) = self.find_coordinator(group).await?;
                let mut route = self.route_of(&topic, partition);
                if route == Route::default() || tries > 1 {
                    self.metadata(&[&topic]).await?;
                    route = self.route_of(&topic, partition);
                }
                self.connection_for(route).await?.call(&Request::Group(request.clone())).await
            }
            .await;
            match outcome {
                Ok(Response::Group(r)) => return Ok(r),
                Ok(other) => return Err(unexpected(&other)),
                Err(e) if tries < COORDINATOR_TRIES_MAX && retriable(&e) => {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(tries.min(10)))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Which partition of which topic coordinates `group`.
    pub async fn find_coordinator(&self, group: &str) -> Result<(String, u32)> {
        match self.call(&Request::Group(GroupRequest::FindCoordinator { group: group.to_owned() })).await? {
            Response::Group(GroupResponse::FindCoordinator { topic, partition }) => Ok((topic, partition)),
            other => Err(unexpected(&other)),
        }
    }

    /// Every group of the cluster (each broker lists those it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self.metadata(&[]).await?;
        let mut all = Vec::new();
        let brokers: Vec<Option<u32>> = if metadata.brokers.len() <= 1 {
            vec![None]
        } else {
            metadata.brokers.iter().filter(|b| b.alive).map(|b| Some(b.node_id)).collect()
        };
        for broker in brokers {
            let conn = self.connection_for(Route { broker, shard: None }).await?;
            match conn.call(&Request::Group(GroupRequest::ListGroups)).await? {
                Response::Group(GroupResponse::ListGroups(groups)) => all.extend(groups),
                other => return Err(unexpected(&other)),
            }
        }
        all.sort_by(|a, b| a.group.cmp(&b.group));
        all.dedup_by(|a, b| a.group == b.group);
        Ok(all)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        match self.group_call(group, GroupRequest::DescribeGroup { group: group.to_owned() }).await? {
            GroupResponse::DescribeGroup(info) => Ok(info),
            other => Err(unexpected(&Response::Group(other))),
        }
    }

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        match self.group_call(group, GroupRequest::DeleteGroup { group: group.to_owned() }).await? {
            GroupResponse::DeleteGroup => Ok(()),
            other => Err(unexpected(&Response::Group(other))),
        }
    }

    /// Sets an empty group's committed offsets.
    pub async fn reset_offsets(&self, group: &str, offsets: Vec<CommitEntry>) -> Result<()> {
        match self.group_call(group, GroupRequest::ResetOffsets { group: group.to_owned(), offsets }).await? {
            GroupResponse::ResetOffsets => Ok(()),
            other => Err(unexpected(&Response::Group(other))),
        }
    }

    /// Commits offsets as `member` at `member_epoch` (empty member and
    /// epoch -1: a client outside the group, only while it is empty).
    pub async fn commit_offsets(
        &self,
        group: &str,
        member: &str,
        member_epoch: i32,
        offsets: Vec<CommitEntry>,
    ) -> Result<()> {
        let request =
            GroupRequest::OffsetCommit { group: group.to_owned(), member: member.to_owned(), member_epoch, offsets };
        match self.group_call(group, request).await? {
            GroupResponse::OffsetCommit => Ok(()),
            other => Err(unexpected(&Response::Group(other))),
        }
    }

    /// The group's committed offsets (all, or of `partitions`).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartitions>,
    ) -> Result<Vec<CommittedEntry>> {
        match self.group_call(group, GroupRequest::OffsetFetch { group: group.to_owned(), partitions }).await? {
            GroupResponse::OffsetFetch(entries) => Ok(entries),
            other => Err(unexpected(&Response::Group(other))),
        }
    }

    /// One heartbeat (the group consumer sends these).
    pub async fn group_heartbeat(&self, request: GroupHeartbeatRequest) -> Result<GroupHeartbeatResponse> {
        let group = request.group.clone();
        match self.group_call(&group, GroupRequest::Heartbeat(request)).await? {
            GroupResponse::Heartbeat(r) => Ok(r),
            other => Err(unexpected(&Response::Group(other))),
        }
    }
}
