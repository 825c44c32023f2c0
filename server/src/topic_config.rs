//! Per-topic settings, by the names Kafka users know. A topic stores only
//! the settings set on it (canonical strings by name); everything else
//! comes from the broker's `[log]` section, which in turn falls back to the
//! built-in defaults. `describe` says which of the three each value came
//! from. Values are checked when they are set, so a stored topic never
//! holds one the broker would refuse.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{CompactionPolicy, LogConfig, TimestampType};

use crate::config::ServerConfig;

/// Topic-level settings as stored in the metadata: name → canonical value.
pub type TopicOverrides = BTreeMap<String, String>;

/// Where a setting's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// Built into the broker.
    Default,
    /// The broker's configuration file.
    Broker,
    /// Set on the topic.
    Topic,
}

/// One setting of a topic as `describe` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
}

/// The effective settings of a topic, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    segment_bytes: u64,
    segment_ms: Option<i64>,
    max_message_bytes: u32,
    timestamp_type: TimestampType,
    timestamp_before_max_ms: Option<i64>,
    timestamp_after_max_ms: Option<i64>,
    /// `cleanup.policy` holds `delete`.
    cleanup_delete: bool,
    /// `cleanup.policy` holds `compact`.
    cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio`, in millionths (an integer keeps `Eq`).
    min_cleanable_dirty_ppm: u32,
    min_compaction_lag_ms: i64,
    max_compaction_lag_ms: Option<i64>,
    delete_retention_ms: i64,
}

/// How the cleaner treats a topic's partitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CleanerSettings {
    /// `cleanup.policy` includes `compact`.
    pub compact: bool,
    pub policy: CompactionPolicy,
    /// A pass starts once this share of the cleanable bytes is dirty…
    pub min_cleanable_dirty_ratio: f64,
    /// …or once the oldest dirty segment is this old.
    pub max_compaction_lag_ms: Option<i64>,
}

/// The keys, in the order `describe` lists them.
pub const KEYS: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

fn none_or<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

fn timestamp_type_name(t: TimestampType) -> &'static str {
    match t {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

/// Parses `CreateTime` or `LogAppendTime` (the broker file's spelling too).
pub fn parse_timestamp_type(value: &str) -> Result<TimestampType, String> {
    match value {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        other => Err(format!("message.timestamp.type must be CreateTime or LogAppendTime, not {other:?}")),
    }
}

/// Milliseconds: a number (as Kafka takes it) or a duration with a unit
/// (`7d`, `90s`); `-1` means none. Plain numbers keep Kafka's meaning.
fn parse_ms(key: &str, value: &str) -> Result<Option<i64>, String> {
    if value == "-1" {
        return Ok(None);
    }
    let ms = if let Ok(ms) = value.parse::<i64>() {
        ms
    } else {
        let d: Duration = humantime::parse_duration(value)
            .map_err(|e| format!("{key}: {value:?} is not milliseconds or a duration such as 7d ({e})"))?;
        i64::try_from(d.as_millis()).map_err(|_| format!("{key}: {value} is too long"))?
    };
    if ms < 0 {
        return Err(format!("{key} must be -1 (none) or at least 0, not {ms}"));
    }
    // Kafka's "no limit" for the timestamp bounds.
    Ok(if ms == i64::MAX { None } else { Some(ms) })
}

fn parse_bytes(key: &str, value: &str) -> Result<u64, String> {
    value.parse::<u64>().map_err(|_| format!("{key}: {value:?} is not a number of bytes"))
}

impl Settings {
    fn builtin() -> Settings {
        Settings::of_broker(&ServerConfig::default())
    }

    fn of_broker(server: &ServerConfig) -> Settings {
        let log = &server.log;
        Settings {
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            segment_bytes: log.segment_bytes_max,
            segment_ms: log.segment_ms_max,
            max_message_bytes: server.limits.batch_bytes_max,
            timestamp_type: parse_timestamp_type(&log.message_timestamp_type).expect("validated at load"),
            timestamp_before_max_ms: log.message_timestamp_before_max_ms,
            timestamp_after_max_ms: log.message_timestamp_after_max_ms,
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ppm: 500_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }

    fn value(&self, key: &str) -> String {
        match key {
            "cleanup.policy" => match (self.cleanup_compact, self.cleanup_delete) {
                (true, true) => "compact,delete".into(),
                (true, false) => "compact".into(),
                _ => "delete".into(),
            },
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "max.compaction.lag.ms" => none_or(self.max_compaction_lag_ms),
            "min.cleanable.dirty.ratio" => format!("{}", f64::from(self.min_cleanable_dirty_ppm) / 1e6),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.after.max.ms" => none_or(self.timestamp_after_max_ms),
            "message.timestamp.before.max.ms" => none_or(self.timestamp_before_max_ms),
            "message.timestamp.type" => timestamp_type_name(self.timestamp_type).into(),
            "retention.bytes" => none_or(self.retention_bytes),
            "retention.ms" => none_or(self.retention_ms),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => none_or(self.segment_ms),
            other => unreachable!("{other} is not a topic setting"),
        }
    }

    /// Sets `key` from a user's `value`, checked against the broker's limits.
    fn set(&mut self, key: &str, value: &str, server: &ServerConfig) -> Result<(), String> {
        match key {
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                parts.dedup();
                (self.cleanup_compact, self.cleanup_delete) = match parts[..] {
                    ["delete"] => (false, true),
                    ["compact"] => (true, false),
                    ["compact", "delete"] => (true, true),
                    _ => {
                        return Err(format!("cleanup.policy must be delete, compact or compact,delete, not {value:?}"));
                    }
                };
            }
            "delete.retention.ms" => {
                self.delete_retention_ms =
                    parse_ms(key, value)?.ok_or("delete.retention.ms must be at least 0 (-1 is not allowed)")?;
            }
            "max.compaction.lag.ms" => {
                self.max_compaction_lag_ms = parse_ms(key, value)?;
                if self.max_compaction_lag_ms == Some(0) {
                    return Err("max.compaction.lag.ms must be -1 (none) or at least 1".into());
                }
            }
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 =
                    value.parse().map_err(|_| format!("min.cleanable.dirty.ratio: {value:?} is not a number"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(format!("min.cleanable.dirty.ratio must be 0 to 1, not {ratio}"));
                }
                self.min_cleanable_dirty_ppm = (ratio * 1e6).round() as u32;
            }
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms =
                    parse_ms(key, value)?.ok_or("min.compaction.lag.ms must be at least 0 (-1 is not allowed)")?;
            }
            "max.message.bytes" => {
                let max = server.limits.batch_bytes_max;
                let v = parse_bytes(key, value)?;
                if v == 0 || v > u64::from(max) {
                    return Err(format!("max.message.bytes must be 1 to {max} (limits.batch_bytes_max), not {v}"));
                }
                self.max_message_bytes = v as u32;
            }
            "message.timestamp.after.max.ms" => self.timestamp_after_max_ms = parse_ms(key, value)?,
            "message.timestamp.before.max.ms" => self.timestamp_before_max_ms = parse_ms(key, value)?,
            "message.timestamp.type" => self.timestamp_type = parse_timestamp_type(value)?,
            "retention.bytes" => {
                self.retention_bytes = if value == "-1" {
                    None
                } else {
                    match parse_bytes(key, value)? {
                        0 => return Err("retention.bytes must be -1 (infinite) or at least 1".into()),
                        v => Some(v),
                    }
                };
            }
            "retention.ms" => {
                self.retention_ms = parse_ms(key, value)?;
                if self.retention_ms == Some(0) {
                    return Err("retention.ms must be -1 (infinite) or at least 1".into());
                }
            }
            "segment.bytes" => {
                let v = parse_bytes(key, value)?;
                let min = u64::from(self.max_message_bytes.max(server.limits.batch_bytes_max)) + 4096;
                if v < min || v > u64::from(u32::MAX) {
                    return Err(format!(
                        "segment.bytes must be {min} (the largest batch and a block) to {} bytes, not {v}",
                        u32::MAX
                    ));
                }
                self.segment_bytes = v;
            }
            "segment.ms" => {
                self.segment_ms = parse_ms(key, value)?;
                if self.segment_ms == Some(0) {
                    return Err("segment.ms must be -1 (never) or at least 1".into());
                }
            }
            other => {
                return Err(format!("unknown topic setting {other:?}; the settings are: {}", KEYS.join(", ")));
            }
        }
        Ok(())
    }
}

/// Checks user-given settings and returns them in canonical form (units
/// resolved), ready to store on the topic. Settings already on the topic
/// (`current`) are kept unless overridden; `delete` names ones to drop.
pub fn merge(
    server: &ServerConfig,
    current: &TopicOverrides,
    set: &BTreeMap<String, String>,
    delete: &[String],
) -> Result<TopicOverrides, String> {
    let mut out = current.clone();
    for key in delete {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!("unknown topic setting {key:?}; the settings are: {}", KEYS.join(", ")));
        }
        out.remove(key);
    }
    // Apply onto the broker's settings so cross-checks (segment vs batch
    // size) see the values that will be in force.
    let mut settings = Settings::of_broker(server);
    for (key, value) in out.iter().chain(set.iter()) {
        settings.set(key, value.trim(), server)?;
    }
    for key in set.keys() {
        let canonical = settings.value(key);
        out.insert(key.clone(), canonical);
    }
    Ok(out)
}

fn effective(server: &ServerConfig, overrides: &TopicOverrides) -> Settings {
    let mut settings = Settings::of_broker(server);
    for (key, value) in overrides {
        // Stored values were checked when set; a broker whose limits shrank
        // since keeps its own value for that key and says so.
        if let Err(e) = settings.set(key, value, server) {
            tracing::warn!(key, value, error = %e, "a stored topic setting no longer fits the broker; using the broker's");
        }
    }
    settings
}

/// Every setting of a topic with its value and source.
pub fn describe(server: &ServerConfig, overrides: &TopicOverrides) -> Vec<ConfigEntry> {
    let builtin = Settings::builtin();
    let broker = Settings::of_broker(server);
    let topic = effective(server, overrides);
    KEYS.iter()
        .map(|&name| {
            let value = topic.value(name);
            let source = if overrides.contains_key(name) {
                ConfigSource::Topic
            } else if broker.value(name) != builtin.value(name) {
                ConfigSource::Broker
            } else {
                ConfigSource::Default
            };
            ConfigEntry { name, value, source }
        })
        .collect()
}

/// The log configuration of a partition of a topic with `overrides`.
pub fn log_config(server: &ServerConfig, overrides: &TopicOverrides) -> LogConfig {
    let s = effective(server, overrides);
    LogConfig {
        segment_bytes_max: s.segment_bytes,
        segment_ms_max: s.segment_ms,
        batch_bytes_max: s.max_message_bytes,
        // A compact-only topic keeps every key's latest record for ever.
        retention_ms: s.retention_ms.filter(|_| s.cleanup_delete),
        retention_bytes: s.retention_bytes.filter(|_| s.cleanup_delete),
        timestamp_type: s.timestamp_type,
        timestamp_before_max_ms: s.timestamp_before_max_ms,
        timestamp_after_max_ms: s.timestamp_after_max_ms,
        ..server.log_config()
    }
}

/// How the cleaner treats the partitions of a topic with `overrides`.
pub fn cleaner_settings(server: &ServerConfig, overrides: &TopicOverrides) -> CleanerSettings {
    let s = effective(server, overrides);
    CleanerSettings {
        compact: s.cleanup_compact,
        policy: CompactionPolicy {
            delete_retention_ms: s.delete_retention_ms,
            min_compaction_lag_ms: s.min_compaction_lag_ms,
            map_bytes_max: server.log.cleaner_map_bytes_max,
        },
        min_cleanable_dirty_ratio: f64::from(s.min_cleanable_dirty_ppm) / 1e6,
        max_compaction_lag_ms: s.max_compaction_lag_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn values_are_checked_and_stored_in_canonical_form() {
        let server = ServerConfig::default();
        let got =
            merge(&server, &TopicOverrides::new(), &set(&[("retention.ms", "7d"), ("segment.bytes", "67108864")]), &[])
                .unwrap();
        assert_eq!(got.get("retention.ms").map(String::as_str), Some("604800000"), "units resolved");
        assert_eq!(got.get("segment.bytes").map(String::as_str), Some("67108864"));
        for (key, bad) in [
            ("retention.ms", "soon"),
            ("retention.bytes", "0"),
            ("segment.bytes", "10"),
            ("max.message.bytes", "99999999999"),
            ("message.timestamp.type", "Wallclock"),
            ("cleanup.policy", "shred"),
            ("retention.fortnights", "1"),
        ] {
            let e = merge(&server, &TopicOverrides::new(), &set(&[(key, bad)]), &[]).unwrap_err();
            assert!(e.contains(key.split('.').next().unwrap()), "{key}={bad}: {e}");
        }
    }

    #[test]
    fn describe_names_each_settings_source() {
        let mut server = ServerConfig::default();
        server.log.segment_bytes_max = 256 << 20;
        let topic = merge(&server, &TopicOverrides::new(), &set(&[("retention.bytes", "1000000")]), &[]).unwrap();
        let entries = describe(&server, &topic);
        let find = |name: &str| entries.iter().find(|e| e.name == name).unwrap().clone();
        assert_eq!(find("retention.bytes").source, ConfigSource::Topic);
        assert_eq!(find("retention.bytes").value, "1000000");
        assert_eq!(find("segment.bytes").source, ConfigSource::Broker);
        assert_eq!(find("segment.bytes").value, (256u64 << 20).to_string());
        assert_eq!(find("retention.ms").source, ConfigSource::Default);
        assert_eq!(find("retention.ms").value, "-1", "infinite by default");
        assert_eq!(entries.len(), KEYS.len());
        let config = log_config(&server, &topic);
        assert_eq!(config.retention_bytes, Some(1_000_000));
        assert_eq!(config.segment_bytes_max, 256 << 20);
        assert_eq!(config.retention_ms, None);
    }

    #[test]
    fn deleting_a_setting_falls_back_to_the_broker() {
        let server = ServerConfig::default();
        let topic = merge(&server, &TopicOverrides::new(), &set(&[("retention.ms", "1000")]), &[]).unwrap();
        let back = merge(&server, &topic, &BTreeMap::new(), &["retention.ms".into()]).unwrap();
        assert!(back.is_empty());
        assert_eq!(log_config(&server, &back).retention_ms, None);
    }

    #[test]
    fn compaction_settings_are_checked_and_a_compact_only_topic_has_no_retention() {
        let server = ServerConfig::default();
        let got = merge(
            &server,
            &TopicOverrides::new(),
            &set(&[
                ("cleanup.policy", "delete, compact"),
                ("min.cleanable.dirty.ratio", "0.25"),
                ("delete.retention.ms", "1h"),
                ("max.compaction.lag.ms", "7d"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(got["cleanup.policy"], "compact,delete", "canonical order");
        assert_eq!(got["delete.retention.ms"], "3600000");
        let cleaner = cleaner_settings(&server, &got);
        assert!(cleaner.compact);
        assert!((cleaner.min_cleanable_dirty_ratio - 0.25).abs() < 1e-9);
        assert_eq!(cleaner.policy.delete_retention_ms, 3_600_000);
        assert_eq!(cleaner.max_compaction_lag_ms, Some(7 * 24 * 3_600_000));
        for (key, bad) in [
            ("cleanup.policy", "shred"),
            ("cleanup.policy", ""),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "half"),
            ("delete.retention.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
        ] {
            assert!(merge(&server, &TopicOverrides::new(), &set(&[(key, bad)]), &[]).is_err(), "{key}={bad}");
        }
        let compact_only =
            merge(&server, &TopicOverrides::new(), &set(&[("cleanup.policy", "compact"), ("retention.ms", "1h")]), &[])
                .unwrap();
        assert_eq!(log_config(&server, &compact_only).retention_ms, None, "compact alone keeps every key");
        let both = merge(&server, &compact_only, &set(&[("cleanup.policy", "compact,delete")]), &[]).unwrap();
        assert_eq!(log_config(&server, &both).retention_ms, Some(3_600_000));
        assert!(!cleaner_settings(&server, &TopicOverrides::new()).compact, "delete is the default");
    }
}
