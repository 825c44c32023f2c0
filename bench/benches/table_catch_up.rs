//! A new `Table`'s catch-up over a compacted topic, as a ratio to the same
//! catch-up over the same topic before compaction, in the same run.
//!
//! A broker runs in this process (flush = never: the figure is about what
//! compaction saves a reader, not the disk's sync rate). One partition gets
//! `CAIRN_TABLE_EVENTS` (1,000,000) entity events of 200 B over
//! `CAIRN_TABLE_KEYS` (100,000) keys; new tables catch up (median of three),
//! then the topic is altered to `cleanup.policy=compact`, the broker's
//! cleaner cleans it, and new tables catch up again. Prints both times, the
//! applied events/s of the uncompacted catch-up, the ratio and a `json:` line.

#![allow(clippy::cast_precision_loss, reason = "rates and ratios of counters far below 2^52")]

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cairn_client::{Client, ClientConfig, Producer, ProducerConfig, Record, Table, TableConfig, TopicConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Catches a new table up three times; the median seconds and records read.
async fn catch_ups(client: &Client, keys: u64) -> (f64, u64) {
    let mut secs = Vec::new();
    let mut applied = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let mut table = Table::open(client, "entities", TableConfig::default()).await.expect("a table");
        applied = table.catch_up().await.expect("catch-up");
        secs.push(start.elapsed().as_secs_f64());
        assert_eq!(table.len() as u64, keys, "every key has its latest value");
    }
    (median(secs), applied)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (a filter) is ignored.
    let events = env_or("CAIRN_TABLE_EVENTS", 1_000_000);
    let keys = env_or("CAIRN_TABLE_KEYS", 100_000);
    let (_dir, broker) = common::start_broker(Some(1), Some("never"), |c| {
        c.log.cleaner_check_ms = 100;
        c.log.cleaner_bytes_per_second_max = 0;
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let addr = broker.addr.to_string();
    runtime.block_on(async {
        let client = Client::connect(ClientConfig::new(addr)).await.expect("connects");
        let topic = TopicConfig::default().with("segment.bytes", "16777216");
        client.create_topic("entities", 1, topic).await.expect("topic");
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        // Every key once first (so the table ends with all of them), then
        // updates of keys in a scattered order.
        let value = vec![b'v'; 200];
        let mut from = 0;
        while from < events {
            let to = (from + 1000).min(events);
            let chunk: Vec<String> = (from..to)
                .map(|i| format!("entity-{:06}", if i < keys { i } else { i.wrapping_mul(2_654_435_761) % keys }))
                .collect();
            let records = chunk.iter().map(|k| Record { partition: Some(0), ..Record::keyed(k.as_bytes(), &value) });
            producer.send_all("entities", records).await.expect("queued");
            from = to;
        }
        producer.flush().await;

        let (full_secs, full_read) = catch_ups(&client, keys).await;
        let size_before = client.describe_topic("entities").await.expect("describe").partitions[0].size_bytes;

        let set = [
            ("cleanup.policy".to_owned(), "compact".to_owned()),
            ("min.cleanable.dirty.ratio".to_owned(), "0.01".to_owned()),
            // Seals the active segment too, so all of it is cleaned.
            ("max.compaction.lag.ms".to_owned(), "1".to_owned()),
        ];
        client.alter_topic_config("entities", &set, &[]).await.expect("alter");
        let cleaned_at = Instant::now();
        loop {
            let p = client.describe_topic("entities").await.expect("describe").partitions[0].clone();
            if p.last_clean_ms.is_some() && p.dirty_bytes == 0 && p.size_bytes < size_before / 2 {
                break;
            }
            assert!(cleaned_at.elapsed() < Duration::from_mins(5), "not compacted: {p:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let size_after = client.describe_topic("entities").await.expect("describe").partitions[0].size_bytes;
        let (compacted_secs, compacted_read) = catch_ups(&client, keys).await;
        let ratio = compacted_secs / full_secs;
        println!(
            "table catch-up, {events} events of 200 B over {keys} keys: uncompacted {full_secs:.3} s ({full_read} records, {:.0} events/s applied, {:.1} MB), compacted {compacted_secs:.3} s ({compacted_read} records, {:.1} MB), ratio {ratio:.3}",
            full_read as f64 / full_secs,
            size_before as f64 / 1e6,
            size_after as f64 / 1e6,
        );
        println!(
            "json: {{\"bench\":\"table_catch_up\",\"events\":{events},\"keys\":{keys},\"uncompacted_secs\":{full_secs:.4},\"uncompacted_records\":{full_read},\"compacted_secs\":{compacted_secs:.4},\"compacted_records\":{compacted_read},\"ratio\":{ratio:.4}}}"
        );
    });
    drop(broker);
}
