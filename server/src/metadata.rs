//! Topic metadata: which topics exist, with how many partitions and which
//! settings. One file, `<data_dir>/topics.json`, written only by the
//! controller shard (shard 0) and replaced atomically (write a temporary
//! file, fsync it, rename, fsync the directory), so a crash leaves the old or
//! the new version, never a mix. Every shard holds a copy, updated by message.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const METADATA_FILE: &str = "topics.json";
pub const TOPICS_DIR: &str = "topics";
const METADATA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MetadataFile {
    version: u32,
    topics: Vec<TopicMeta>,
}

pub type Topics = BTreeMap<String, TopicMeta>;

/// The directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(TOPICS_DIR).join(topic).join(partition.to_string())
}

pub fn load(data_dir: &Path) -> Result<Topics, String> {
    let path = data_dir.join(METADATA_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Topics::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: MetadataFile = serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", path.display()))?;
    if file.version != METADATA_VERSION {
        return Err(format!("{} has version {}, this build reads {METADATA_VERSION}", path.display(), file.version));
    }
    Ok(file.topics.into_iter().map(|t| (t.name.clone(), t)).collect())
}

pub fn store(data_dir: &Path, topics: &Topics) -> std::io::Result<()> {
    let file = MetadataFile { version: METADATA_VERSION, topics: topics.values().cloned().collect() };
    let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!("{METADATA_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, data_dir.join(METADATA_FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes topic directories the metadata does not list: left by a crash
/// between a delete's metadata write and its directory removal.
pub fn remove_orphans(data_dir: &Path, topics: &Topics) -> std::io::Result<Vec<String>> {
    let dir = data_dir.join(TOPICS_DIR);
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !topics.contains_key(&name) {
            std::fs::remove_dir_all(entry.path())?;
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_a_store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let mut topics = Topics::new();
        topics.insert(
            "a".into(),
            TopicMeta { name: "a".into(), partitions: 3, retention_ms: Some(5), retention_bytes: None },
        );
        store(dir.path(), &topics).unwrap();
        assert_eq!(load(dir.path()).unwrap(), topics);
    }

    #[test]
    fn a_damaged_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METADATA_FILE), "{ not json").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("damaged"));
    }

    #[test]
    fn orphan_topic_directories_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(partition_dir(dir.path(), "gone", 0)).unwrap();
        std::fs::create_dir_all(partition_dir(dir.path(), "kept", 0)).unwrap();
        let mut topics = Topics::new();
        topics.insert(
            "kept".into(),
            TopicMeta { name: "kept".into(), partitions: 1, retention_ms: None, retention_bytes: None },
        );
        assert_eq!(remove_orphans(dir.path(), &topics).unwrap(), vec!["gone".to_string()]);
        assert!(partition_dir(dir.path(), "kept", 0).exists());
    }
}
