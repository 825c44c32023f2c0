//! Brokers of one cluster as processes on this machine: each on free
//! ports (client and replication), with `--node-id` and `--peers`.

use std::net::TcpListener;

use crate::Broker;

pub struct Cluster {
    pub brokers: Vec<Broker>,
    pub peers: String,
}

/// A port free now (the system's choice; released before the broker binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

impl Cluster {
    /// Starts `n` brokers (node ids 1..=n) with `extra` flags each.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let peers = (1..=n).map(|id| format!("{id}=127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
        let brokers = (1..=n)
            .map(|id| {
                let id = id.to_string();
                let mut flags = vec!["--node-id", id.as_str(), "--peers", peers.as_str()];
                flags.extend_from_slice(extra);
                Broker::start(&flags)
            })
            .collect();
        Cluster { brokers, peers }
    }

    /// Every broker's client address, comma-separated (a `--bootstrap` list).
    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|b| b.addr.clone()).collect::<Vec<_>>().join(",")
    }

    /// The broker (index) whose log last says it leads `topic`/`partition`
    /// in the highest epoch, from the brokers' own role lines.
    pub fn leader_of(&self, topic: &str, partition: u32) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        for (i, broker) in self.brokers.iter().enumerate() {
            for line in strip_ansi(&broker.log()).lines() {
                if !line.contains("replica role")
                    || !line.contains(&format!("topic={topic} "))
                    || !line.contains(&format!("partition={partition} "))
                {
                    continue;
                }
                let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned);
                let epoch: u32 = field("epoch=").and_then(|e| e.parse().ok()).unwrap_or(0);
                if field("role=").as_deref() == Some("Leader") && best.is_none_or(|(e, _)| epoch > e) {
                    best = Some((epoch, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }
}

/// Log text without terminal colour codes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
