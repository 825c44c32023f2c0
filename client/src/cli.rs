//! The `cairn` command line: topics, produce from stdin, consume to stdout,
//! offsets, a topic's table (latest value per key). Every failure prints one line on stderr and exits non-zero.

#[path = "cli/group.rs"]
mod group;
#[path = "cli/queue.rs"]
mod queue;

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt as _;
use protocol::api::{Acks, OffsetSpec};
use protocol::types::Offset;

use crate::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartFrom,
    Table, TableConfig, TopicConfig,
};

#[derive(Parser, Debug)]
#[command(name = "cairn", version, about = "Cairn command line: topics, produce, consume, offsets, tables")]
pub struct Cli {
    /// Broker addresses, comma-separated (the first that answers is used)
    #[arg(long, global = true, default_value = "127.0.0.1:7070", value_name = "ADDR[,ADDR...]")]
    pub bootstrap: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe and delete topics
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Produce one record per line of stdin
    Produce {
        topic: String,
        /// Split each line at the first SEP into key and value
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
        /// `all`: once a majority of the partition's replicas holds it;
        /// `leader`: once the leader's log does; `none`: not answered
        #[arg(long, value_enum, default_value_t = AcksArg::All)]
        acks: AcksArg,
        /// Send every record to this partition instead of partitioning by key
        #[arg(long)]
        partition: Option<u32>,
        /// With --key-separator, send a line with a key and an empty value
        /// as a tombstone (no value): the key is deleted from the topic's table
        #[arg(long, requires = "key_separator")]
        empty_is_tombstone: bool,
    },
    /// Print records of one partition, or of all partitions; with --group,
    /// of the partitions the group assigns this consumer, committing as it
    /// goes; with --queue, the records the queue group hands this consumer
    /// (in no particular order), acking each
    Consume {
        topic: String,
        #[arg(long, conflicts_with_all = ["group", "queue"])]
        partition: Option<u32>,
        /// Work through the topic as a member of this queue group
        #[arg(long, value_name = "QUEUE", conflicts_with = "group")]
        queue: Option<String>,
        /// With --queue: ack a record once it is printed (default: once it is
        /// received, before printing — a crash in between loses it)
        #[arg(long, requires = "queue")]
        ack_after_print: bool,
        /// With --queue: how long records stay locked to this consumer
        /// before they go to another (a duration such as 30s)
        #[arg(long, requires = "queue", default_value = "30s", value_name = "DURATION")]
        lock: String,
        /// Join this consumer group: read what it assigns, commit after printing
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// With --group: how long the coordinator waits for this consumer's
        /// heartbeat before it gives its partitions to the other members (a
        /// duration such as 10s; Kafka's session.timeout.ms)
        #[arg(long, requires = "group", default_value = "45s", value_name = "DURATION")]
        session_timeout: String,
        /// `earliest`, `latest`, an offset, or `@UNIX_MS` for the first record at or after that time
        /// (with --group: where a partition starts when the group has no committed offset for it,
        /// and where it restarts when its committed offset is no longer in the log)
        #[arg(long, default_value = "earliest", value_name = "WHERE")]
        from: String,
        /// Exit after this many records; without it, follow the log
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// With --format text, print the key and this separator before the value
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
    },
    /// Earliest and latest (high watermark) offset of each partition; with
    /// --checkpoint, a table's position in each and its lag (latest minus
    /// position)
    Offsets {
        topic: String,
        /// A `Table` checkpoint file of this topic: print its positions and lag
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
    },
    /// The topic as a table: read up to the high watermark, print the latest
    /// value of each key in key order (a tombstone deletes its key; records
    /// without a key are skipped), and exit
    Table {
        topic: String,
        /// `text`: KEY, a tab and VALUE per line; `json`: {"key":...,"value":...} per line
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print only this key's value (exit non-zero if the table has none)
        #[arg(long, value_name = "KEY")]
        get: Option<String>,
    },
    /// Partition operations
    Partition {
        #[command(subcommand)]
        command: PartitionCommand,
    },
    /// The cluster's brokers
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Broker operations
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// Consumer groups: list, describe (lag per partition), reset offsets, delete
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Queue groups: describe (in flight, acked, delivery counts, dead-lettered), delete
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum BrokerCommand {
    /// Move every partition replica off a broker (to the live brokers with
    /// the fewest), while the partitions serve, so it can be removed; its
    /// leaderships move with them
    Drain {
        /// The broker (node id) to empty
        node: u32,
        /// How long each move may take
        #[arg(long, default_value = "120s", value_name = "DURATION")]
        timeout: String,
    },
    /// Take a broker that joined (`--join`) out of the cluster, once it
    /// holds no replica (drain it first); then stop it
    Remove {
        /// The broker (node id) to remove
        node: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every broker: id, client and replication addresses, whether it
    /// answers now, and which one is the controller
    Describe,
}

#[derive(Subcommand, Debug)]
pub enum PartitionCommand {
    /// Reopen partitions whose storage failed (a failed fsync or write, a
    /// log that could not be opened), without restarting
    /// the broker: recovery reads what is on disk, and nothing acknowledged
    /// is lost
    Recover {
        topic: String,
        /// Only this partition (repeatable); default: every partition that needs it
        #[arg(long)]
        partition: Vec<u32>,
    },
    /// Hand a partition's leadership to another of its replicas (a
    /// pause of a few milliseconds for its producers)
    ElectLeader {
        topic: String,
        partition: u32,
        /// The broker (node id) to lead it
        #[arg(long, value_name = "N")]
        broker: u32,
    },
    /// Move a partition's replicas to other brokers while it serves (new
    /// replicas catch up as learners, then the voters switch)
    Reassign {
        topic: String,
        partition: u32,
        /// The brokers (node ids) to hold it, the first its preferred leader: 1,2,4
        #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
        /// Return once the move is under way, not when it is done
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the move to finish
        #[arg(long, default_value = "120s", value_name = "DURATION")]
        timeout: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// A topic setting, KEY=VALUE with Kafka's names (retention.ms,
        /// retention.bytes, segment.bytes, segment.ms, max.message.bytes,
        /// message.timestamp.type, cleanup.policy, …); repeatable
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Delete segments older than this (`7d`, `12h`); default: keep forever
        #[arg(long, value_name = "DURATION")]
        retention: Option<String>,
        /// Delete segments older than this many milliseconds
        #[arg(long)]
        retention_ms: Option<i64>,
        /// Delete the oldest segments beyond this size per partition; default: keep everything
        #[arg(long)]
        retention_bytes: Option<i64>,
        /// Replicas of each partition, on a cluster [default: min(3, brokers)]
        #[arg(long, value_name = "N")]
        replication_factor: Option<u32>,
    },
    /// Change a topic's settings; they apply without a restart
    Alter {
        name: String,
        /// Set a setting, KEY=VALUE; repeatable
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Put a setting back to the broker's value; repeatable
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_config: Vec<String>,
    },
    List,
    /// Every setting with its value and source (default, broker, topic), and
    /// each partition: its leader, epoch, replicas and which are caught up
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub fn parse_from(s: &str) -> Result<StartFrom, String> {
    match s {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        _ if s.starts_with('@') => {
            s[1..].parse::<i64>().map(StartFrom::Timestamp).map_err(|_| format!("--from {s}: expected @UNIX_MS"))
        }
        _ => s
            .parse::<u64>()
            .map(|o| StartFrom::Offset(Offset(o)))
            .map_err(|_| format!("--from {s}: expected earliest, latest, an offset or @UNIX_MS")),
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), String> {
    let fail = |e: ClientError| e.to_string();
    let client = Client::connect(ClientConfig::new(cli.bootstrap.clone())).await.map_err(fail)?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Group { command } => group::run(&client, command, &mut out).await?,
        Command::Queue { command } => queue::run(&client, command, &mut out).await?,
        Command::Topic { command } => match command {
            TopicCommand::Create {
                name,
                partitions,
                config,
                retention,
                retention_ms,
                retention_bytes,
                replication_factor,
            } => {
                let mut entries = Vec::new();
                if let Some(rf) = replication_factor {
                    // Carried as a create-only setting (the broker takes it out).
                    entries.push(("replication.factor".to_string(), rf.to_string()));
                }
                if let Some(d) = retention {
                    let ms = humantime::parse_duration(&d)
                        .map_err(|e| format!("--retention {d}: {e} (use a duration such as 7d or 12h)"))?
                        .as_millis();
                    entries.push(("retention.ms".to_string(), ms.to_string()));
                }
                if let Some(ms) = retention_ms {
                    entries.push(("retention.ms".to_string(), ms.to_string()));
                }
                if let Some(bytes) = retention_bytes {
                    entries.push(("retention.bytes".to_string(), bytes.to_string()));
                }
                entries.extend(parse_configs(&config)?);
                client.create_topic(&name, partitions, TopicConfig { entries }).await.map_err(fail)?;
                writeln!(out, "created topic {name} with {partitions} partitions").map_err(io)?;
            }
            TopicCommand::Alter { name, config, delete_config } => {
                if config.is_empty() && delete_config.is_empty() {
                    return Err("topic alter: give --config KEY=VALUE or --delete-config KEY".into());
                }
                let set = parse_configs(&config)?;
                client.alter_topic_config(&name, &set, &delete_config).await.map_err(fail)?;
                writeln!(out, "altered topic {name}").map_err(io)?;
            }
            TopicCommand::List => {
                for t in client.list_topics().await.map_err(fail)? {
                    writeln!(out, "{}\t{}", t.name, t.partitions).map_err(io)?;
                }
            }
            TopicCommand::Describe { name } => {
                let d = client.describe_topic(&name).await.map_err(fail)?;
                writeln!(out, "topic {}  partitions {}", d.name, d.partitions.len()).map_err(io)?;
                writeln!(out, "SETTING\tVALUE\tSOURCE").map_err(io)?;
                for c in &d.configs {
                    writeln!(out, "{}\t{}\t{}", c.name, c.value, c.source.name()).map_err(io)?;
                }
                let m = client.metadata(&[name.as_str()]).await.map_err(fail)?;
                let leaders = m.topics.into_iter().find(|t| t.name == name).map(|t| t.partitions).unwrap_or_default();
                writeln!(
                    out,
                    "PARTITION\tLEADER\tEPOCH\tREPLICAS\tCAUGHT_UP\tSHARD\tLOG_START\tHIGH_WATERMARK\tLOG_END\tSIZE_BYTES\tDIRTY_RATIO\tLAST_CLEAN\tSTATUS"
                )
                .map_err(io)?;
                let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                for p in d.partitions {
                    let status = if p.error.is_ok() { "ok".to_string() } else { p.error.name().to_string() };
                    let (leader, epoch, replicas, caught_up) = match leaders.iter().find(|l| l.partition == p.partition)
                    {
                        Some(l) => (
                            l.leader.map_or_else(|| "none".to_owned(), |n| n.to_string()),
                            l.leader_epoch.to_string(),
                            list(&l.replicas),
                            list(&l.caught_up),
                        ),
                        None => ("none".into(), "-".into(), "-".into(), "-".into()),
                    };
                    // The cleaner's state: how much of the sealed, replicated
                    // log is not yet cleaned, and when a pass last ended.
                    let dirty = format!("{:.2}", p.dirty_ratio());
                    let last_clean = p.last_clean_ms.and_then(|ms| u64::try_from(ms).ok()).map_or_else(
                        || "never".to_owned(),
                        |ms| {
                            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                            humantime::format_rfc3339_millis(at).to_string()
                        },
                    );
                    writeln!(
                        out,
                        "{}\t{leader}\t{epoch}\t{replicas}\t{caught_up}\t{}\t{}\t{}\t{}\t{}\t{dirty}\t{last_clean}\t{status}",
                        p.partition, p.shard, p.log_start_offset, p.high_watermark, p.log_end_offset, p.size_bytes
                    )
                    .map_err(io)?;
                }
            }
            TopicCommand::Delete { name } => {
                client.delete_topic(&name).await.map_err(fail)?;
                writeln!(out, "deleted topic {name}").map_err(io)?;
            }
        },
        Command::Produce { topic, key_separator, acks, partition, empty_is_tombstone } => {
            drop(out);
            let input = Input { key_separator: key_separator.as_deref(), empty_is_tombstone };
            produce(client, &topic, input, acks, partition).await?;
        }
        Command::Table { topic, format, get } => {
            let mut table = Table::open(&client, &topic, TableConfig::default()).await.map_err(|e| e.to_string())?;
            table.catch_up().await.map_err(|e| e.to_string())?;
            match get {
                Some(key) => {
                    let value = table.get(key.as_bytes()).ok_or_else(|| format!("table {topic} has no key {key:?}"))?;
                    match format {
                        Format::Text => writeln!(out, "{}", String::from_utf8_lossy(value)),
                        Format::Json => print_entry(&mut out, key.as_bytes(), value, format),
                    }
                    .map_err(io)?;
                }
                None => {
                    for (key, value) in table.iter() {
                        print_entry(&mut out, key, value, format).map_err(io)?;
                    }
                }
            }
        }
        Command::Consume { topic, queue: Some(queue), ack_after_print, lock, count, format, key_separator, .. } => {
            let mut config = crate::QueueConsumerConfig::new(queue, &[&topic]);
            config.lock = humantime::parse_duration(&lock)
                .map_err(|e| format!("--lock {lock}: {e} (use a duration such as 30s)"))?;
            let mut consumer = crate::QueueConsumer::new(client, config).map_err(fail)?;
            let mut printed = 0u64;
            while count.is_none_or(|c| printed < c) {
                let records = consumer.poll().await.map_err(fail)?;
                let mut take = Vec::new();
                for r in records {
                    // Past --count: left unacked, given back by close.
                    if count.is_some_and(|c| printed + take.len() as u64 >= c) {
                        continue;
                    }
                    take.push(r);
                }
                if !ack_after_print {
                    for r in &take {
                        consumer.ack(r);
                    }
                    consumer.flush().await.map_err(fail)?;
                }
                for r in &take {
                    print_record(&mut out, &r.record, format, key_separator.as_deref()).map_err(io)?;
                }
                out.flush().map_err(io)?;
                printed += take.len() as u64;
                if ack_after_print {
                    for r in &take {
                        consumer.ack(r);
                    }
                }
            }
            consumer.close().await.map_err(fail)?;
        }
        Command::Consume { topic, group: Some(group), session_timeout, from, count, format, key_separator, .. } => {
            let mut config = crate::GroupConsumerConfig::new(group, &[&topic]);
            config.start_from = parse_from(&from)?;
            config.session_timeout = humantime::parse_duration(&session_timeout)
                .map_err(|e| format!("--session-timeout {session_timeout}: {e} (use a duration such as 10s)"))?;
            config.auto_commit_interval = Some(Duration::from_secs(1));
            let mut consumer = crate::GroupConsumer::join(client, config).await.map_err(fail)?;
            let mut printed = 0u64;
            while count.is_none_or(|c| printed < c) {
                let records = match consumer.poll().await {
                    Ok(records) => records,
                    // A leader moving, a timeout: the next poll follows it.
                    Err(e) if e.is_retriable() => {
                        tracing::debug!(error = %e, "poll failed; polling again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return Err(fail(e)),
                };
                let mut unprinted: std::collections::BTreeMap<u32, Offset> = std::collections::BTreeMap::new();
                for r in records {
                    if count.is_some_and(|c| printed >= c) {
                        // Not printed: the group reads it again (the commit stops before it).
                        unprinted.entry(r.partition).or_insert(r.offset);
                        continue;
                    }
                    print_record(&mut out, &r, format, key_separator.as_deref()).map_err(io)?;
                    printed += 1;
                }
                out.flush().map_err(io)?;
                for (p, o) in unprinted {
                    consumer.seek(&topic, p, o);
                }
            }
            consumer.close().await.map_err(fail)?;
        }
        Command::Consume { topic, partition, from, count, format, key_separator, group: None, queue: None, .. } => {
            let from = parse_from(&from)?;
            let partitions: Vec<u32> = partition.into_iter().collect();
            let mut consumer =
                Consumer::assign(client, ConsumerConfig::default(), &topic, &partitions, from).await.map_err(fail)?;
            let mut printed = 0u64;
            while count.is_none_or(|c| printed < c) {
                for r in consumer.poll().await.map_err(fail)? {
                    print_record(&mut out, &r, format, key_separator.as_deref()).map_err(io)?;
                    printed += 1;
                    if count.is_some_and(|c| printed >= c) {
                        break;
                    }
                }
                out.flush().map_err(io)?;
            }
        }
        Command::Partition { command: PartitionCommand::Recover { topic, partition } } => {
            let outcomes = client.recover_partitions(&topic, &partition).await.map_err(fail)?;
            if outcomes.is_empty() {
                writeln!(out, "no partition of {topic} needed recovery").map_err(io)?;
            }
            let mut failed = None;
            for o in outcomes {
                if o.error.is_ok() {
                    writeln!(out, "recovered {topic}/{}", o.partition).map_err(io)?;
                } else {
                    writeln!(out, "{topic}/{}: {} {}", o.partition, o.error.name(), o.message).map_err(io)?;
                    failed.get_or_insert(format!("{topic}/{}: {}: {}", o.partition, o.error, o.message));
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Command::Partition { command: PartitionCommand::Reassign { topic, partition, replicas, no_wait, timeout } } => {
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| format!("--timeout {timeout}: {e} (use a duration such as 120s)"))?;
            client.reassign_partition(&topic, partition, &replicas).await.map_err(fail)?;
            let list = replicas.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            if no_wait {
                writeln!(out, "{topic}/{partition} is moving to {list}").map_err(io)?;
            } else if client.wait_reassigned(&topic, partition, &replicas, timeout).await {
                writeln!(out, "{topic}/{partition} moved to {list}").map_err(io)?;
            } else {
                return Err(format!(
                    "{topic}/{partition} is still moving to {list} after {} (it goes on; see `cairn topic describe {topic}`)",
                    humantime::format_duration(timeout)
                ));
            }
        }
        Command::Partition { command: PartitionCommand::ElectLeader { topic, partition, broker } } => {
            client.elect_leader(&topic, partition, broker).await.map_err(fail)?;
            writeln!(out, "broker {broker} leads {topic}/{partition}").map_err(io)?;
        }
        Command::Broker { command: BrokerCommand::Drain { node, timeout } } => {
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| format!("--timeout {timeout}: {e} (use a duration such as 120s)"))?;
            let result = client
                .drain_broker(node, timeout, |m| {
                    let list = m.to.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                    // Progress as it goes; a closed stdout stops nothing.
                    let _ = writeln!(out, "{}/{} moved to {list}", m.topic, m.partition);
                    let _ = out.flush();
                })
                .await;
            let moves = result.map_err(|e| e.to_string())?;
            writeln!(out, "broker {node} holds no replicas ({} moved)", moves.len()).map_err(io)?;
        }
        Command::Broker { command: BrokerCommand::Remove { node } } => {
            client.remove_broker(node).await.map_err(fail)?;
            writeln!(out, "broker {node} is out of the cluster: stop it now").map_err(io)?;
        }
        Command::Cluster { command: ClusterCommand::Describe } => {
            let m = client.metadata(&[]).await.map_err(fail)?;
            writeln!(out, "BROKER\tADDRESS\tREPLICATION\tALIVE\tCONTROLLER").map_err(io)?;
            for b in &m.brokers {
                let address = if b.address.is_empty() { "-" } else { b.address.as_str() };
                let replication = if b.replication_address.is_empty() { "-" } else { b.replication_address.as_str() };
                let alive = if b.alive { "yes" } else { "no" };
                let controller = if m.controller == Some(b.node_id) { "yes" } else { "no" };
                writeln!(out, "{}\t{address}\t{replication}\t{alive}\t{controller}", b.node_id).map_err(io)?;
            }
        }
        Command::Offsets { topic, checkpoint } => {
            let positions = match checkpoint {
                None => None,
                Some(path) => {
                    let (of, positions) = crate::table::checkpoint::positions(&path).map_err(|e| e.to_string())?;
                    if of != topic {
                        return Err(format!("{} is a checkpoint of topic {of:?}, not {topic:?}", path.display()));
                    }
                    Some(positions)
                }
            };
            let earliest = client.list_offsets(&topic, &[], OffsetSpec::Earliest).await.map_err(fail)?;
            let latest = client.list_offsets(&topic, &[], OffsetSpec::Latest).await.map_err(fail)?;
            if positions.is_some() {
                writeln!(out, "PARTITION\tEARLIEST\tLATEST\tPOSITION\tLAG").map_err(io)?;
            } else {
                writeln!(out, "PARTITION\tEARLIEST\tLATEST").map_err(io)?;
            }
            for ((p, e), (_, l)) in earliest.into_iter().zip(latest) {
                match &positions {
                    // A partition the table never read stands at the log
                    // start: all of it is lag.
                    Some(positions) => {
                        let at = positions.get(&p).copied().unwrap_or(e).max(e);
                        writeln!(out, "{p}\t{e}\t{l}\t{at}\t{}", l.0.saturating_sub(at.0)).map_err(io)?;
                    }
                    None => writeln!(out, "{p}\t{e}\t{l}").map_err(io)?,
                }
            }
        }
    }
    Ok(())
}

/// `KEY=VALUE` arguments.
fn parse_configs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("--config takes KEY=VALUE, not {a:?}"))
        })
        .collect()
}

fn io(e: impl std::fmt::Display) -> String {
    format!("writing output: {e}")
}

fn text(b: Option<&bytes::Bytes>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn print_record(
    out: &mut impl Write,
    r: &crate::ConsumerRecord,
    format: Format,
    key_separator: Option<&str>,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            if let Some(sep) = key_separator {
                write!(out, "{}{sep}", text(r.key.as_ref()).unwrap_or_default())?;
            }
            writeln!(out, "{}", text(r.value.as_ref()).unwrap_or_default())
        }
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(String::from_utf8_lossy(v).into_owned())))
                .collect();
            let line = serde_json::json!({
                "partition": r.partition,
                "offset": r.offset.0,
                "timestamp": r.timestamp.0,
                "key": text(r.key.as_ref()),
                "value": text(r.value.as_ref()),
                "headers": headers,
            });
            writeln!(out, "{line}")
        }
    }
}

/// One entry of a table: `key<TAB>value`, or `{"key":...,"value":...}` (as
/// `consume` renders them: UTF-8, invalid bytes replaced).
fn print_entry(out: &mut impl Write, key: &[u8], value: &[u8], format: Format) -> std::io::Result<()> {
    let (key, value) = (String::from_utf8_lossy(key), String::from_utf8_lossy(value));
    match format {
        Format::Text => writeln!(out, "{key}\t{value}"),
        Format::Json => writeln!(out, "{}", serde_json::json!({ "key": key, "value": value })),
    }
}

/// How `produce` cuts a line into a record.
#[derive(Debug, Clone, Copy)]
struct Input<'a> {
    key_separator: Option<&'a str>,
    /// A key with an empty value is a tombstone (kcat's `-Z`).
    empty_is_tombstone: bool,
}

impl Input<'_> {
    /// The key and value of line `n` (`None`: a tombstone).
    fn parse(&self, n: usize, line: String) -> Result<(Option<String>, Option<String>), String> {
        let Some(sep) = self.key_separator else { return Ok((None, Some(line))) };
        let Some((k, v)) = line.split_once(sep) else { return Err(format!("line {n}: no key separator {sep:?}")) };
        let value = if v.is_empty() && self.empty_is_tombstone { None } else { Some(v.to_owned()) };
        Ok((Some(k.to_owned()), value))
    }
}

/// Deliveries waited for at once before reading more input.
const DELIVERIES_PENDING_MAX: usize = 10_000;

async fn produce(
    client: Client,
    topic: &str,
    input: Input<'_>,
    acks: AcksArg,
    partition: Option<u32>,
) -> Result<(), String> {
    let acks = match acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    let producer =
        Producer::new(client, ProducerConfig { acks, linger: Duration::from_millis(2), ..ProducerConfig::default() });
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut first_error: Option<String> = None;
    let mut sent = 0u64;
    // stdin is read on its own thread, so records are sent as lines arrive
    // (`tail -f | cairn produce`) instead of when the next one does.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if lines_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    let mut n = 0usize;
    while let Some(line) = lines.recv().await {
        n += 1;
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let (key, value) = input.parse(n, line)?;
        let record = ProducerRecord {
            topic: topic.to_owned(),
            partition,
            key: key.map(Into::into),
            value: value.map(Into::into),
            ..ProducerRecord::default()
        };
        let delivery = producer.send(record).await.map_err(|e| e.to_string())?;
        pending.push(delivery.wait());
        sent += 1;
        while pending.len() >= DELIVERIES_PENDING_MAX {
            if let Some(Err(e)) = pending.next().await {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    producer.flush().await;
    while let Some(r) = pending.next().await {
        if let Err(e) = r {
            first_error.get_or_insert(e.to_string());
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    eprintln!("produced {sent} records to {topic}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_value_is_a_tombstone_only_when_asked() {
        let plain = Input { key_separator: Some(":"), empty_is_tombstone: false };
        let z = Input { empty_is_tombstone: true, ..plain };
        assert_eq!(plain.parse(1, "k:".into()).unwrap(), (Some("k".into()), Some(String::new())));
        assert_eq!(z.parse(1, "k:".into()).unwrap(), (Some("k".into()), None));
        assert_eq!(z.parse(1, "k:v:w".into()).unwrap(), (Some("k".into()), Some("v:w".into())));
        assert_eq!(z.parse(1, ":".into()).unwrap(), (Some(String::new()), None));
        assert!(z.parse(7, "no separator".into()).unwrap_err().contains("line 7"));
        let unkeyed = Input { key_separator: None, empty_is_tombstone: false };
        assert_eq!(unkeyed.parse(1, String::new()).unwrap(), (None, Some(String::new())));
    }

    #[test]
    fn empty_is_tombstone_needs_a_key_separator() {
        assert!(Cli::try_parse_from(["cairn", "produce", "t", "--empty-is-tombstone"]).is_err());
        assert!(Cli::try_parse_from(["cairn", "produce", "t", "--key-separator", ":", "--empty-is-tombstone"]).is_ok());
    }

    #[test]
    fn table_entries_render_as_text_and_json_lines() {
        let mut out = Vec::new();
        print_entry(&mut out, b"k", b"v 1", Format::Text).unwrap();
        print_entry(&mut out, b"k\"", b"\xff", Format::Json).unwrap();
        let out = String::from_utf8(out).unwrap();
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("k\tv 1"));
        let json: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"key": "k\"", "value": "\u{fffd}"}));
    }
}
