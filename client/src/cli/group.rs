//! `cairn group`: list, describe (members, assignment, committed offset,
//! log end offset and lag per partition), reset offsets, delete.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use clap::Subcommand;

use crate::group::CommitEntry;
use crate::{Client, ClientError, OffsetSpec};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every consumer group: its state and member count
    List,
    /// A group's members and what each reads, and per partition its
    /// committed offset, log end offset (high watermark) and lag
    Describe { group: String },
    /// Set an empty group's committed offsets for every partition of a topic
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// `earliest`, `latest`, an offset (kept within the log), or `@UNIX_MS`
        /// (the first record at or after that time)
        #[arg(long, value_name = "WHERE")]
        to: String,
    },
    /// Delete an empty group and its committed offsets
    Delete { group: String },
}

fn io(e: impl std::fmt::Display) -> String {
    format!("writing output: {e}")
}

fn parts(tps: &[crate::group::TopicPartitions]) -> String {
    let list: Vec<String> =
        tps.iter().flat_map(|tp| tp.partitions.iter().map(move |p| format!("{}/{p}", tp.topic))).collect();
    if list.is_empty() { "-".to_owned() } else { list.join(",") }
}

pub async fn run(client: &Client, command: GroupCommand, out: &mut impl Write) -> Result<(), String> {
    let fail = |e: ClientError| e.to_string();
    match command {
        GroupCommand::List => {
            writeln!(out, "GROUP\tSTATE\tMEMBERS").map_err(io)?;
            for g in client.list_groups().await.map_err(fail)? {
                writeln!(out, "{}\t{}\t{}", g.group, g.state, g.members).map_err(io)?;
            }
        }
        GroupCommand::Describe { group } => {
            let info = client.describe_group(&group).await.map_err(fail)?;
            writeln!(
                out,
                "group {}: {}, epoch {}, assignor {}, {} members",
                info.group,
                info.state,
                info.epoch,
                info.assignor,
                info.members.len()
            )
            .map_err(io)?;
            writeln!(out, "MEMBER\tCLIENT\tEPOCH\tSTATE\tASSIGNED\tREVOKING").map_err(io)?;
            let mut owner: BTreeMap<(String, u32), String> = BTreeMap::new();
            for m in &info.members {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    m.member,
                    m.client_id,
                    m.epoch,
                    m.state,
                    parts(&m.assigned),
                    parts(&m.revoking)
                )
                .map_err(io)?;
                for tp in &m.assigned {
                    for p in &tp.partitions {
                        owner.insert((tp.topic.clone(), *p), m.member.clone());
                    }
                }
            }
            let committed: BTreeMap<(String, u32), u64> =
                info.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect();
            let topics: BTreeSet<String> = committed.keys().chain(owner.keys()).map(|(t, _)| t.clone()).collect();
            writeln!(out, "TOPIC\tPARTITION\tCOMMITTED\tLOG_END\tLAG\tMEMBER").map_err(io)?;
            for topic in topics {
                // A topic deleted since still shows what the group committed.
                let ends: BTreeMap<u32, u64> = client
                    .list_offsets(&topic, &[], OffsetSpec::Latest)
                    .await
                    .map(|v| v.into_iter().map(|(p, o)| (p, o.0)).collect())
                    .unwrap_or_default();
                let mut partitions: BTreeSet<u32> = ends.keys().copied().collect();
                partitions.extend(committed.keys().chain(owner.keys()).filter(|(t, _)| *t == topic).map(|(_, p)| *p));
                for p in partitions {
                    let key = (topic.clone(), p);
                    let c = committed.get(&key);
                    let end = ends.get(&p);
                    let show = |v: Option<&u64>| v.map_or_else(|| "-".to_owned(), ToString::to_string);
                    // Lag of a partition with no commit: all of it (the group starts where
                    // --from says, unknown here), shown as "-".
                    let lag = match (c, end) {
                        (Some(c), Some(e)) => e.saturating_sub(*c).to_string(),
                        _ => "-".to_owned(),
                    };
                    let member = owner.get(&key).map_or("-", String::as_str);
                    writeln!(out, "{topic}\t{p}\t{}\t{}\t{lag}\t{member}", show(c), show(end)).map_err(io)?;
                }
            }
        }
        GroupCommand::ResetOffsets { group, topic, to } => {
            let earliest = client.list_offsets(&topic, &[], OffsetSpec::Earliest).await.map_err(fail)?;
            let latest = client.list_offsets(&topic, &[], OffsetSpec::Latest).await.map_err(fail)?;
            let targets: Vec<(u32, u64)> = match to.as_str() {
                "earliest" => earliest.iter().map(|(p, o)| (*p, o.0)).collect(),
                "latest" => latest.iter().map(|(p, o)| (*p, o.0)).collect(),
                t if t.starts_with('@') => {
                    let ms = t[1..].parse::<i64>().map_err(|_| format!("--to {t}: expected @UNIX_MS"))?;
                    client
                        .list_offsets(&topic, &[], OffsetSpec::Timestamp(ms))
                        .await
                        .map_err(fail)?
                        .into_iter()
                        .map(|(p, o)| (p, o.0))
                        .collect()
                }
                t => {
                    let at = t
                        .parse::<u64>()
                        .map_err(|_| format!("--to {t}: expected earliest, latest, an offset or @UNIX_MS"))?;
                    earliest.iter().zip(&latest).map(|((p, e), (_, l))| (*p, at.clamp(e.0, l.0.max(e.0)))).collect()
                }
            };
            let offsets = targets
                .iter()
                .map(|&(partition, offset)| CommitEntry {
                    topic: topic.clone(),
                    partition,
                    offset,
                    metadata: String::new(),
                })
                .collect();
            client.reset_offsets(&group, offsets).await.map_err(fail)?;
            writeln!(out, "TOPIC\tPARTITION\tNEW_OFFSET").map_err(io)?;
            for (p, o) in targets {
                writeln!(out, "{topic}\t{p}\t{o}").map_err(io)?;
            }
        }
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await.map_err(fail)?;
            writeln!(out, "deleted group {group}").map_err(io)?;
        }
    }
    Ok(())
}
