//! The partition log on a real disk: glommio, O_DIRECT, io_uring. These
//! complement the simulated-disk tests in `engine/src/log/tests.rs` by
//! exercising the production runtime and real files, including files cut
//! and garbled behind the log's back.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use engine::batch::{BatchBuilder, RecordInput, validate_batch, validate_records};
use engine::rt::glommio::{GlommioRuntime, GlommioStorage};
use engine::types::{Offset, Timestamp};
use engine::{FlushPolicy, LogConfig, LogError, PartitionLog};
use glommio::{LocalExecutorBuilder, Placement};

fn on_executor<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound).spawn(move || async move { f().await }).unwrap().join().unwrap()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 128 << 10,
        batch_bytes_max: 64 << 10,
        write_bytes_max: 64 << 10,
        write_buffer_bytes_max: 128 << 10,
        cache_bytes_max: 320 << 10,
        read_ahead_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

fn batch(tag: u64, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        let value = format!("{tag}:{i}:{}", "v".repeat(90));
        builder.push(RecordInput::new(
            Some(format!("k{}", tag % 13).as_bytes()),
            Some(value.as_bytes()),
            Timestamp(1_000 + tag as i64),
        ));
    }
    builder.build().unwrap()
}

async fn read_all(log: &PartitionLog<GlommioStorage>) -> Result<Vec<Vec<u8>>, LogError> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let read = log.read(next, 200 << 10).await?;
        if read.batches.is_empty() {
            return Ok(out);
        }
        for bytes in read.batches {
            let view = validate_batch(&bytes).expect("the log returns only valid batches");
            validate_records(&view).expect("records check");
            if view.header.base_offset >= next {
                next = view.header.next_offset();
                out.push(bytes.to_vec());
            }
        }
    }
}

/// Descriptors of this process that point into `dir`.
fn open_files_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// The log of partition `p0` under `dir`, opened (recovering) on the
/// current executor.
async fn open_log(dir: &Path, config: LogConfig) -> PartitionLog<GlommioStorage> {
    let storage = GlommioStorage::new(dir).await.unwrap();
    PartitionLog::open(storage, dir.join("p0"), config).await.unwrap()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Appends `batches` batches and returns them as the log stored them
/// (stamped with their offsets and append times), read back before the log
/// is dropped.
async fn append_many(dir: &Path, batches: u64) -> Vec<Vec<u8>> {
    let log = open_log(dir, config()).await;
    for tag in 0..batches {
        log.append(batch(tag, 1 + (tag % 20) as usize)).await.unwrap();
    }
    let stored = read_all(&log).await.unwrap();
    assert_eq!(stored.len() as u64, batches);
    stored
}

#[test]
fn a_log_at_a_relative_path_rolls_and_closes() {
    // Rolling and closing fsync the directory; glommio cannot open a
    // relative directory path on its own (EBADF).
    let dir = temp_dir();
    let cwd = std::env::current_dir().unwrap();
    let relative = dir.path().strip_prefix(&cwd).map_or_else(
        |_| {
            // The temporary directory is not under the working directory: walk up to it.
            let ups = cwd.components().count() - 1;
            let mut p = PathBuf::new();
            for _ in 0..ups {
                p.push("..");
            }
            p.join(dir.path().strip_prefix("/").unwrap())
        },
        Path::to_path_buf,
    );
    assert!(relative.is_relative());
    on_executor(async move || {
        let log = open_log(&relative, config()).await;
        let mut b = BatchBuilder::new();
        b.push(RecordInput::new(None, Some(&[1u8; 100]), Timestamp(1)));
        log.append(b.build().unwrap()).await.unwrap();
        log.roll().await.unwrap();
        log.close().await.unwrap();
        let log = open_log(&relative, config()).await;
        assert!(log.recovery_report().clean_shutdown);
        assert_eq!(log.log_end_offset(), Offset(1));
    });
}

#[test]
fn log_on_a_real_disk_survives_close_and_reopen() {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    on_executor(async move || {
        let appended = append_many(&path, 400).await;
        let log = open_log(&path, config()).await;
        assert!(log.segment_count() > 2, "segments rolled: {}", log.segment_count());
        assert!(!log.recovery_report().clean_shutdown, "the first log was dropped, not closed");
        assert_eq!(read_all(&log).await.unwrap(), appended, "cold reads through the index");
        log.close().await.unwrap();
        assert_eq!(open_files_under(&path), 0, "close closes every segment file");
        let log = open_log(&path, config()).await;
        assert!(log.recovery_report().clean_shutdown);
        assert_eq!(read_all(&log).await.unwrap(), appended);
    });
}

#[test]
fn concurrent_appenders_on_one_core_all_land_in_order() {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    on_executor(async move || {
        let log = Rc::new(open_log(&path, config()).await);
        let mut tasks = Vec::new();
        for writer in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut last = None;
                for i in 0..50 {
                    let info = log.append(batch(writer * 1000 + i, 3)).await.unwrap();
                    assert!(last < Some(info.base_offset), "one writer's batches keep their order");
                    last = Some(info.base_offset);
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        assert_eq!(log.log_end_offset(), Offset(8 * 50 * 3));
        assert_eq!(read_all(&log).await.unwrap().len(), 400);
    });
}

#[test]
fn interval_flusher_makes_data_durable_without_an_explicit_sync() {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    on_executor(async move || {
        // The partition drives its log's interval flusher.
        let rt = GlommioRuntime::new(&path).await.unwrap();
        let tp = server::ids::TopicPartition { topic: server::ids::TopicId(1), partition: server::ids::PartitionId(0) };
        let config = LogConfig { flush: FlushPolicy::IntervalMs(5), ..config() };
        let pool = engine::MemoryPool::new(engine::PoolConfig {
            write_buffer_bytes_max: 4 << 20,
            cache_bytes_max: 4 << 20,
            read_ahead_bytes_max: 4 << 20,
            index_cache_bytes_max: 1 << 20,
        });
        let partition =
            server::partition::Partition::open(rt, tp, "t".into(), server::ids::ShardId(0), path.clone(), config, pool)
                .await;
        let log = partition.log().unwrap();
        partition.append(&bytes::Bytes::from(batch(1, 5)), server::partition::Acks::Leader, false).await.unwrap();
        assert!(log.durable_offset() < log.log_end_offset(), "acknowledged before the sync");
        // Wait for the flusher's effect, not for a fixed time: poll the
        // durable offset, bounded at 10 s.
        for _ in 0..2000 {
            if log.durable_offset() == log.log_end_offset() {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(log.durable_offset(), log.log_end_offset(), "the interval flusher synced the append");
    });
}

fn active_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Bytes of each appended batch that lies in the active segment, in order.
fn batches_in_active(appended: &[Vec<u8>], active: &Path) -> Vec<usize> {
    let base: u64 = active.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    appended.iter().filter(|b| validate_batch(b).unwrap().header.base_offset.0 >= base).map(Vec::len).collect()
}

/// A log of 150 batches, dropped without close, and its active segment.
struct Fixture {
    appended: Vec<Vec<u8>>,
    active: PathBuf,
    /// Bytes of each batch in the active segment, in order.
    sizes: Vec<usize>,
    total: usize,
    original: Vec<u8>,
}

async fn fixture(path: &Path) -> Fixture {
    let appended = append_many(path, 150).await;
    let active = active_segment(&path.join("p0"));
    let sizes = batches_in_active(&appended, &active);
    let total = sizes.iter().sum();
    let original = std::fs::read(&active).unwrap();
    Fixture { appended, active, sizes, total, original }
}

#[test]
fn cutting_the_active_segment_anywhere_loses_only_batches_past_the_cut() {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    on_executor(async move || {
        let Fixture { appended, active, sizes, total, original } = fixture(&path).await;
        let before = appended.len() - sizes.len();
        let mut seed = 0x5eed_u64;
        for _ in 0..12 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let cut = (seed >> 33) as usize % (total + 1);
            std::fs::write(&active, &original[..cut]).unwrap();
            let log = open_log(&path, config()).await;
            let whole = sizes
                .iter()
                .scan(0, |end, s| {
                    *end += s;
                    Some(*end)
                })
                .take_while(|end| *end <= cut)
                .count();
            let got = read_all(&log).await.unwrap();
            assert_eq!(got, appended[..before + whole].to_vec(), "cut at byte {cut}");
            drop(log);
        }
    });
}

#[test]
fn garbling_the_tail_drops_only_the_damaged_batch() {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    on_executor(async move || {
        let Fixture { appended, active, sizes, total, original } = fixture(&path).await;
        let last = *sizes.last().unwrap();
        for at in [total - last, total - last + 9, total - last + 30, total - 1] {
            let mut damaged = original.clone();
            damaged[at] ^= 0x5A;
            std::fs::write(&active, &damaged).unwrap();
            let log = open_log(&path, config()).await;
            assert!(log.recovery_report().tail_damage.is_some(), "byte {at}");
            let got = read_all(&log).await.unwrap();
            assert_eq!(got, appended[..appended.len() - 1].to_vec(), "garbled byte {at}");
            drop(log);
            std::fs::write(&active, &original).unwrap();
        }
    });
}
