//! `cairn queue`: describe a queue group (its consumers, and per partition
//! what is in flight, acked, dead-lettered, and the delivery counts), and
//! delete one nobody holds records of.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use crate::{Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// A queue's consumers, and per partition: records done below START,
    /// NEXT the first never handed out, acked, dead-lettered, skipped (no
    /// record), in flight (available, acquired, bound for the dead-letter
    /// topic) and the delivery counts of those in flight
    Describe { queue: String },
    /// Forget a queue nobody holds records of (its dead-letter topic stays)
    Delete { queue: String },
}

fn io(e: impl std::fmt::Display) -> String {
    format!("writing output: {e}")
}

pub async fn run(client: &Client, command: QueueCommand, out: &mut impl Write) -> Result<(), String> {
    let fail = |e: ClientError| e.to_string();
    match command {
        QueueCommand::Describe { queue } => {
            let info = client.describe_queue(&queue).await.map_err(fail)?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let sum =
                |f: fn(&protocol::api::groups::QueuePartitionInfo) -> u64| info.partitions.iter().map(f).sum::<u64>();
            writeln!(
                out,
                "queue {}: {} consumers, {} in flight, {} acked, {} dead-lettered (to {})",
                info.queue,
                info.members.len(),
                sum(|p| p.available + p.acquired + p.dead_letter_pending),
                sum(|p| p.acked),
                sum(|p| p.dead_lettered),
                info.dead_letter_topic,
            )
            .map_err(io)?;
            writeln!(out, "CONSUMER\tHOLDING\tLAST-SEEN").map_err(io)?;
            for m in &info.members {
                let ago = now.saturating_sub(m.last_seen_ms);
                writeln!(out, "{}\t{}\t{}ms ago", m.member, m.holding, ago).map_err(io)?;
            }
            writeln!(
                out,
                "TOPIC\tPARTITION\tSTART\tNEXT\tACKED\tDEAD-LETTERED\tSKIPPED\tAVAILABLE\tACQUIRED\tDLQ-PENDING\tDELIVERIES"
            )
            .map_err(io)?;
            for p in &info.partitions {
                let deliveries: Vec<String> = p.deliveries.iter().map(|(d, n)| format!("{d}x{n}")).collect();
                let deliveries = if deliveries.is_empty() { "-".to_owned() } else { deliveries.join(",") };
                let counts: Vec<String> = p.counts().iter().map(u64::to_string).collect();
                writeln!(out, "{}\t{}\t{}\t{deliveries}", p.topic, p.partition, counts.join("\t")).map_err(io)?;
            }
        }
        QueueCommand::Delete { queue } => {
            client.delete_queue(&queue).await.map_err(fail)?;
            writeln!(out, "deleted queue {queue}").map_err(io)?;
        }
    }
    Ok(())
}
