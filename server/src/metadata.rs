//! Topic metadata: which topics exist, their ids, partition counts,
//! settings and directories, and the topics deleted whose files are not
//! gone yet. One file, `<data_dir>/topics.json`, written only by the
//! controller shard and replaced atomically, so a crash leaves the old or
//! the new version, never a mix; every shard holds a copy.
//!
//! Data is never deleted because metadata is missing or wrong:
//!
//! - each topic lives in a directory of its own id (`topics/<name>@<id>`),
//!   so a topic created again under a deleted one's name never sees the old
//!   files, even if removing them failed;
//! - a directory is removed only when the metadata lists it as deleted;
//!   one it does not know is left alone and reported;
//! - each topic directory also holds `topic.json`, so a lost `topics.json`
//!   is rebuilt from the directories; a damaged one stops the broker with
//!   an error naming it (moving it away rebuilds from the directories).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use engine::rt::Storage;
use serde::{Deserialize, Serialize};

use crate::ids::TopicId;
use crate::topic_config::TopicOverrides;

pub const METADATA_FILE: &str = "topics.json";
pub const TOPICS_DIR: &str = "topics";
/// A copy of a topic's metadata in its own directory.
pub const TOPIC_FILE: &str = "topic.json";
/// Written into a topic's directory before its deletion is recorded: a
/// rebuild (after `topics.json` was lost) never brings back a deleted
/// topic whose files could not be removed.
pub const DELETED_MARKER: &str = "deleted";
const METADATA_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    /// Settings set on the topic (Kafka names, canonical values).
    #[serde(default)]
    pub config: TopicOverrides,
    /// The topic's directory, relative to the data directory.
    pub dir: String,
    /// Cluster mode: each partition's replicas, by node id (the first is
    /// the preferred leader). Absent on a broker without `--peers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<Vec<u32>>>,
    /// Cluster mode: partitions being moved, and the replicas each moves
    /// to (docs/replication.md §8, Reassign).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moving: BTreeMap<u32, Vec<u32>>,
}

impl TopicMeta {
    /// The replicas of `partition` (cluster mode), preferred leader first.
    pub fn replicas_of(&self, partition: u32) -> Option<&[u32]> {
        self.replicas.as_ref()?.get(partition as usize).map(Vec::as_slice)
    }

    /// The replicas `partition` is moving to, if it is moving.
    pub fn target_of(&self, partition: u32) -> Option<&[u32]> {
        self.moving.get(&partition).map(Vec::as_slice)
    }

    /// Whether `node` holds (or is to hold) a replica of `partition`: one
    /// of its replicas, or of those it moves to.
    pub fn hosts(&self, partition: u32, node: u32) -> bool {
        self.replicas_of(partition).is_some_and(|r| r.contains(&node))
            || self.target_of(partition).is_some_and(|t| t.contains(&node))
    }
}

/// A deleted topic whose directory may still be on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: TopicId,
    pub name: String,
    pub dir: String,
}

pub type Topics = BTreeMap<String, TopicMeta>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Cluster mode: the metadata log is applied up to here (a restart
    /// replays only what comes after: an old record applied again would
    /// put back a state the cluster has left, such as a partition's former
    /// replicas, whose copies it would then delete).
    pub metadata_applied: u64,
    pub next_topic_id: u64,
    pub topics: Topics,
    pub deleted: Vec<Deleted>,
    /// Cluster mode: the brokers that joined (`--join`), by node id, with
    /// their replication addresses, as the metadata log registered them;
    /// on a broker that joined, every broker it learned of at its join.
    pub brokers: BTreeMap<u32, SocketAddr>,
    /// On a broker that joined: the metadata partition's voters, as its
    /// contact told them (the brokers started with `--peers`).
    pub voters: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct FileV2 {
    version: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    metadata_applied: u64,
    next_topic_id: u64,
    topics: Vec<TopicMeta>,
    #[serde(default)]
    deleted: Vec<Deleted>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    brokers: BTreeMap<u32, SocketAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    voters: Vec<u32>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The first version of the file (before topic ids).
#[derive(Deserialize)]
struct FileV1 {
    topics: Vec<TopicV1>,
}

#[derive(Deserialize)]
struct TopicV1 {
    name: String,
    partitions: u32,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// The directory of a new topic: its name (cut short if very long: the id
/// makes it unique) and its id.
pub fn topic_dir(name: &str, id: TopicId) -> String {
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TOPICS_DIR}/{}@{id}", &name[..cut])
}

/// The directory of one partition's log.
pub fn partition_dir(data_dir: &Path, meta: &TopicMeta, partition: u32) -> PathBuf {
    data_dir.join(&meta.dir).join(partition.to_string())
}

fn encode(metadata: &Metadata) -> Vec<u8> {
    let file = FileV2 {
        version: METADATA_VERSION,
        next_topic_id: metadata.next_topic_id,
        metadata_applied: metadata.metadata_applied,
        topics: metadata.topics.values().cloned().collect(),
        deleted: metadata.deleted.clone(),
        brokers: metadata.brokers.clone(),
        voters: metadata.voters.clone(),
    };
    serde_json::to_vec_pretty(&file).expect("metadata serializes")
}

/// Replaces `topics.json` durably.
pub async fn store<S: Storage>(storage: &S, data_dir: &Path, metadata: &Metadata) -> std::io::Result<()> {
    storage.write_file_atomic(&data_dir.join(METADATA_FILE), &encode(metadata)).await
}

/// Writes the copy of a topic's metadata into its directory (creating it).
pub async fn store_topic_file<S: Storage>(storage: &S, data_dir: &Path, meta: &TopicMeta) -> std::io::Result<()> {
    let dir = data_dir.join(&meta.dir);
    storage.create_dir_all(&dir).await?;
    let bytes = serde_json::to_vec_pretty(meta).expect("metadata serializes");
    storage.write_file_atomic(&dir.join(TOPIC_FILE), &bytes).await
}

/// Marks a topic's directory as deleted, durably (see [`DELETED_MARKER`]).
pub async fn mark_deleted<S: Storage>(storage: &S, data_dir: &Path, dir: &str) -> std::io::Result<()> {
    storage.write_file_atomic(&data_dir.join(dir).join(DELETED_MARKER), b"").await
}

/// What loading found besides the metadata, for the log.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Topics rebuilt from their directories (the file was missing).
    pub rebuilt: Vec<String>,
    /// Upgraded from an earlier version of the file.
    pub migrated: bool,
    /// Directories under `topics/` that no topic, live or deleted, owns.
    pub unknown_dirs: Vec<String>,
}

/// Reads the metadata, migrating an older file or rebuilding a missing one
/// from the topic directories (and then writing it). A damaged file is an
/// error: nothing is touched.
pub async fn load<S: Storage>(storage: &S, data_dir: &Path) -> Result<(Metadata, LoadReport), String> {
    let path = data_dir.join(METADATA_FILE);
    let mut report = LoadReport::default();
    let bytes = storage.read_file(&path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let rebuilt = bytes.is_none();
    let metadata = if let Some(bytes) = bytes {
        let damaged = |e: serde_json::Error| {
            format!(
                "{} is damaged ({e}); the topic data is untouched. Move the file away to rebuild the \
                 metadata from the topic directories, or restore it from a backup",
                path.display()
            )
        };
        let version: VersionOnly = serde_json::from_slice(&bytes).map_err(damaged)?;
        match version.version {
            METADATA_VERSION => {
                let file: FileV2 = serde_json::from_slice(&bytes).map_err(damaged)?;
                Metadata {
                    metadata_applied: file.metadata_applied,
                    next_topic_id: file.next_topic_id,
                    topics: file.topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
                    deleted: file.deleted,
                    brokers: file.brokers,
                    voters: file.voters,
                }
            }
            1 => {
                let file: FileV1 = serde_json::from_slice(&bytes).map_err(damaged)?;
                report.migrated = true;
                migrate_v1(file)
            }
            v => {
                return Err(format!(
                    "{} has version {v}; this build reads versions 1 and {METADATA_VERSION}",
                    path.display()
                ));
            }
        }
    } else {
        let metadata = rebuild(storage, data_dir).await?;
        report.rebuilt = metadata.topics.keys().cloned().collect();
        metadata
    };
    if !rebuilt {
        // A marker in a live topic's directory is left by a deletion that
        // was never recorded (a crash or a failed write in between): the
        // topic stays, and the marker must go, or a later rebuild would
        // take the topic for deleted.
        for meta in metadata.topics.values() {
            let marker = data_dir.join(&meta.dir).join(DELETED_MARKER);
            if storage.read_file(&marker).await.map_err(|e| format!("cannot read {}: {e}", marker.display()))?.is_some()
            {
                storage.remove(&marker).await.map_err(|e| format!("cannot remove {}: {e}", marker.display()))?;
            }
        }
    }
    if report.migrated || rebuilt {
        for meta in metadata.topics.values() {
            store_topic_file(storage, data_dir, meta)
                .await
                .map_err(|e| format!("cannot write {}/{TOPIC_FILE}: {e}", meta.dir))?;
        }
        store(storage, data_dir, &metadata).await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    report.unknown_dirs = unknown_dirs(storage, data_dir, &metadata).await?;
    Ok((metadata, report))
}

fn migrate_v1(file: FileV1) -> Metadata {
    let mut metadata = Metadata { next_topic_id: 1, ..Metadata::default() };
    for t in file.topics {
        let id = TopicId(metadata.next_topic_id);
        metadata.next_topic_id += 1;
        let mut config = TopicOverrides::new();
        if let Some(ms) = t.retention_ms {
            config.insert("retention.ms".into(), ms.to_string());
        }
        if let Some(bytes) = t.retention_bytes {
            config.insert("retention.bytes".into(), bytes.to_string());
        }
        // Version 1 kept each topic in a directory of its name.
        let dir = format!("{TOPICS_DIR}/{}", t.name);
        metadata.topics.insert(
            t.name.clone(),
            TopicMeta {
                id,
                name: t.name,
                partitions: t.partitions,
                config,
                dir,
                replicas: None,
                moving: BTreeMap::new(),
            },
        );
    }
    metadata
}

/// Rebuilds the metadata from `topics/*/topic.json` (and, for directories
/// of the first layout, from their names and partition directories).
async fn rebuild<S: Storage>(storage: &S, data_dir: &Path) -> Result<Metadata, String> {
    let topics_dir = data_dir.join(TOPICS_DIR);
    let mut metadata = Metadata { next_topic_id: 1, ..Metadata::default() };
    if !storage.is_dir(&topics_dir).await.map_err(|e| e.to_string())? {
        return Ok(metadata);
    }
    let mut found: Vec<TopicMeta> = Vec::new();
    let mut legacy: Vec<(String, u32)> = Vec::new();
    let mut names =
        storage.list_dir(&topics_dir).await.map_err(|e| format!("cannot list {}: {e}", topics_dir.display()))?;
    names.sort();
    for entry in names {
        let dir = topics_dir.join(&entry);
        if !storage.is_dir(&dir).await.map_err(|e| e.to_string())? {
            continue;
        }
        let file = storage.read_file(&dir.join(TOPIC_FILE)).await.map_err(|e| e.to_string())?;
        let deleted = storage.read_file(&dir.join(DELETED_MARKER)).await.map_err(|e| e.to_string())?.is_some();
        match file.map(|b| serde_json::from_slice::<TopicMeta>(&b)) {
            Some(Ok(meta)) if deleted => {
                // Deleted: its removal is tried again, it is never a topic.
                metadata.next_topic_id = metadata.next_topic_id.max(meta.id.0 + 1);
                metadata.deleted.push(Deleted { id: meta.id, name: meta.name, dir: format!("{TOPICS_DIR}/{entry}") });
            }
            Some(Ok(mut meta)) => {
                meta.dir = format!("{TOPICS_DIR}/{entry}");
                found.push(meta);
            }
            Some(Err(e)) => tracing::warn!(dir = %dir.display(), error = %e, "damaged topic.json: left alone"),
            None => {
                let parts = storage.list_dir(&dir).await.map_err(|e| e.to_string())?;
                let count = parts.iter().filter_map(|p| p.parse::<u32>().ok()).map(|p| p + 1).max().unwrap_or(0);
                if count > 0 && protocol::names::validate_topic_name(&entry).is_ok() {
                    legacy.push((entry, count));
                }
            }
        }
    }
    // One name, several directories (a deleted topic's files that could not
    // be removed): the newest id is the topic; the others are left alone.
    found.sort_by_key(|m| m.id);
    for meta in found {
        metadata.next_topic_id = metadata.next_topic_id.max(meta.id.0 + 1);
        metadata.topics.insert(meta.name.clone(), meta);
    }
    for (name, partitions) in legacy {
        if metadata.topics.contains_key(&name) {
            continue;
        }
        let id = TopicId(metadata.next_topic_id);
        metadata.next_topic_id += 1;
        let dir = format!("{TOPICS_DIR}/{name}");
        metadata.topics.insert(
            name.clone(),
            TopicMeta {
                id,
                name,
                partitions,
                config: TopicOverrides::new(),
                dir,
                replicas: None,
                moving: BTreeMap::new(),
            },
        );
    }
    Ok(metadata)
}

async fn unknown_dirs<S: Storage>(storage: &S, data_dir: &Path, metadata: &Metadata) -> Result<Vec<String>, String> {
    let topics_dir = data_dir.join(TOPICS_DIR);
    if !storage.is_dir(&topics_dir).await.map_err(|e| e.to_string())? {
        return Ok(Vec::new());
    }
    let known: Vec<&str> = metadata
        .topics
        .values()
        .map(|t| t.dir.as_str())
        .chain(metadata.deleted.iter().map(|d| d.dir.as_str()))
        .collect();
    let mut unknown = Vec::new();
    for entry in storage.list_dir(&topics_dir).await.map_err(|e| e.to_string())? {
        let rel = format!("{TOPICS_DIR}/{entry}");
        if !known.contains(&rel.as_str()) {
            unknown.push(rel);
        }
    }
    Ok(unknown)
}

/// Removes the directories of deleted topics; returns whether any
/// tombstone could be dropped (the caller stores the metadata then).
/// A directory that cannot be removed keeps its tombstone for next time.
pub async fn finish_deletions<S: Storage>(storage: &S, data_dir: &Path, metadata: &mut Metadata) -> bool {
    let mut changed = false;
    let mut kept = Vec::new();
    for d in std::mem::take(&mut metadata.deleted) {
        let dir = data_dir.join(&d.dir);
        let gone = match storage.is_dir(&dir).await {
            Ok(false) => true,
            Ok(true) => match storage.remove_dir_all(&dir).await {
                Ok(()) => {
                    tracing::info!(topic = d.name, id = %d.id, dir = %dir.display(), "removed a deleted topic's files");
                    true
                }
                Err(e) => {
                    tracing::warn!(topic = d.name, dir = %dir.display(), error = %e, "cannot remove a deleted topic's files yet");
                    false
                }
            },
            Err(_) => false,
        };
        if gone {
            changed = true;
        } else {
            kept.push(d);
        }
    }
    metadata.deleted = kept;
    if changed {
        let _ = storage.sync_dir(&data_dir.join(TOPICS_DIR)).await;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::rt::sim::SimStorage;
    use futures::executor::block_on;

    fn meta(id: u64, name: &str, partitions: u32) -> TopicMeta {
        TopicMeta {
            id: TopicId(id),
            name: name.into(),
            partitions,
            config: TopicOverrides::new(),
            dir: topic_dir(name, TopicId(id)),
            replicas: None,
            moving: BTreeMap::new(),
        }
    }

    fn with_topics(storage: &SimStorage, topics: &[TopicMeta]) -> Metadata {
        let data = Path::new("/data");
        block_on(storage.create_dir_all(data)).unwrap();
        let metadata = Metadata {
            metadata_applied: 0,
            next_topic_id: 10,
            topics: topics.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            deleted: Vec::new(),
            brokers: [(4, "127.0.0.1:8074".parse().unwrap())].into(),
            voters: vec![1, 2, 3],
        };
        for t in topics {
            block_on(store_topic_file(storage, data, t)).unwrap();
            block_on(storage.create_dir_all(&partition_dir(data, t, 0))).unwrap();
        }
        block_on(store(storage, data, &metadata)).unwrap();
        metadata
    }

    #[test]
    fn metadata_survives_a_store_and_load() {
        let storage = SimStorage::new();
        let metadata = with_topics(&storage, &[meta(1, "a", 3), meta(2, "b", 1)]);
        let (loaded, report) = block_on(load(&storage, Path::new("/data"))).unwrap();
        assert_eq!(loaded, metadata);
        assert!(report.rebuilt.is_empty() && report.unknown_dirs.is_empty());
    }

    #[test]
    fn a_lost_metadata_file_is_rebuilt_from_the_topic_directories() {
        let storage = SimStorage::new();
        let metadata = with_topics(&storage, &[meta(4, "orders", 3), meta(7, "events", 2)]);
        storage.disk_remove(&Path::new("/data").join(METADATA_FILE));
        let (loaded, report) = block_on(load(&storage, Path::new("/data"))).unwrap();
        assert_eq!(loaded.topics, metadata.topics, "every topic, its id, partitions and settings");
        assert_eq!(loaded.next_topic_id, 8, "ids are never reused");
        assert_eq!(report.rebuilt, vec!["events".to_string(), "orders".to_string()]);
        // And the file is back.
        assert!(storage.file_contents(&Path::new("/data").join(METADATA_FILE)).is_some());
    }

    #[test]
    fn a_damaged_metadata_file_is_an_error_naming_it_and_touches_nothing() {
        let storage = SimStorage::new();
        with_topics(&storage, &[meta(1, "a", 1)]);
        let path = Path::new("/data").join(METADATA_FILE);
        storage.set_file_contents(&path, b"{ not json".to_vec());
        let before = storage.file_paths();
        let e = block_on(load(&storage, Path::new("/data"))).unwrap_err();
        assert!(e.contains("topics.json") && e.contains("damaged"), "{e}");
        assert_eq!(storage.file_paths(), before);
    }

    #[test]
    fn a_version_1_file_is_migrated_in_place() {
        let storage = SimStorage::new();
        let data = Path::new("/data");
        block_on(storage.create_dir_all(&data.join("topics/old/0"))).unwrap();
        let v1 =
            br#"{"version":1,"topics":[{"name":"old","partitions":1,"retention_ms":5000,"retention_bytes":null}]}"#;
        storage.set_file_contents(&data.join(METADATA_FILE), v1.to_vec());
        let (loaded, report) = block_on(load(&storage, data)).unwrap();
        assert!(report.migrated);
        let old = &loaded.topics["old"];
        assert_eq!(old.dir, "topics/old", "the data stays where it is");
        assert_eq!(old.config.get("retention.ms").map(String::as_str), Some("5000"));
    }

    #[test]
    fn only_deleted_topics_directories_are_removed() {
        let storage = SimStorage::new();
        let data = Path::new("/data");
        let mut metadata = with_topics(&storage, &[meta(1, "kept", 1), meta(2, "gone", 1)]);
        block_on(storage.create_dir_all(&data.join("topics/stranger"))).unwrap();
        let gone = metadata.topics.remove("gone").unwrap();
        metadata.deleted.push(Deleted { id: gone.id, name: gone.name.clone(), dir: gone.dir.clone() });
        assert!(block_on(finish_deletions(&storage, data, &mut metadata)));
        assert!(metadata.deleted.is_empty());
        assert!(!block_on(storage.is_dir(&data.join(&gone.dir))).unwrap());
        assert!(block_on(storage.is_dir(&data.join("topics/stranger"))).unwrap(), "unknown: left alone");
        assert!(block_on(storage.is_dir(&data.join(&metadata.topics["kept"].dir))).unwrap());
        let unknown = block_on(unknown_dirs(&storage, data, &metadata)).unwrap();
        assert_eq!(unknown, vec!["topics/stranger".to_string()]);
    }
}
