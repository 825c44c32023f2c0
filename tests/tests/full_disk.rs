//! A broker on a small file system of its own (a loop-mounted ext4 image)
//! that fills up: producers get `DISK_FULL`, a retriable error; nothing
//! acknowledged is lost; and once space is freed, writes go on without a
//! restart. Needs root (mount); elsewhere it says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig, ProducerRecord,
    StartFrom, TopicConfig,
};
use cairn_tests::Broker;

/// A loop-mounted ext4 file system, unmounted on drop.
struct LoopFs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl LoopFs {
    fn new(bytes: u64) -> Option<LoopFs> {
        // SAFETY: geteuid reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).ok()?;
        std::fs::File::create(&image).ok()?.set_len(bytes).ok()?;
        let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
        if !ok(Command::new("mkfs.ext4").args(["-F", "-q"]).arg(&image)) {
            return None;
        }
        if !ok(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount)) {
            return None;
        }
        Some(LoopFs { _dir: dir, mount })
    }

    fn free_bytes(&self) -> u64 {
        // SAFETY: statvfs fills the struct we pass.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            let path = std::ffi::CString::new(self.mount.to_str().unwrap()).unwrap();
            assert_eq!(libc::statvfs(path.as_ptr(), &raw mut s), 0);
            s.f_bavail * s.f_frsize
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
    }
}

fn fill_to(path: &Path, bytes: u64) {
    let out = Command::new("fallocate").args(["-l", &bytes.to_string()]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_disk_full_and_writes_resume_once_space_is_freed() {
    let Some(fs) = LoopFs::new(96 << 20) else {
        eprintln!("skipped: this test needs root and loop devices to mount a small file system");
        return;
    };
    let data = fs.mount.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = fs.mount.join("cairn.toml");
    std::fs::write(&config, "[log]\npreallocate_bytes_max = 1048576\nsegment_bytes_max = 4194304\n").unwrap();
    let mut broker = Broker::start_in(&data, &["--config", config.to_str().unwrap()]);
    let client = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    client.create_topic("fill", 2, TopicConfig::default()).await.unwrap();
    // Leave a little room: the broker's data soon fills it.
    let filler = fs.mount.join("filler");
    fill_to(&filler, fs.free_bytes() - (12 << 20));

    let producer = Producer::new(client.clone(), ProducerConfig { retries: 0, ..ProducerConfig::default() });
    let value = Bytes::from(vec![b'f'; 1000]);
    let mut acked = 0u64;
    let mut full = 0;
    for round in 0..200 {
        let mut deliveries = Vec::new();
        for i in 0..256 {
            let mut r = ProducerRecord::new("fill", None::<Bytes>, value.clone());
            r.partition = Some(i % 2);
            deliveries.push(producer.send(r).await.unwrap());
        }
        for d in deliveries {
            match d.wait().await {
                Ok(_) => acked += 1,
                Err(ClientError::Broker { code, .. }) => {
                    assert_eq!(
                        code,
                        ErrorCode::DISK_FULL,
                        "round {round}: a full disk is DISK_FULL, not a storage error"
                    );
                    full += 1;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        if full > 0 {
            break;
        }
    }
    assert!(full > 0, "the disk never filled ({acked} records acknowledged)");
    assert!(acked > 1000, "the disk held something first ({acked} records)");
    let d = client.describe_topic("fill").await.unwrap();
    assert!(d.partitions.iter().all(|p| p.error.is_ok()), "a full disk does not poison: {:?}", d.partitions);

    // Space is freed: the same broker takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..512 {
        let mut r = ProducerRecord::new("fill", None::<Bytes>, value.clone());
        r.partition = Some(i % 2);
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.wait().await.expect("writes resume once space is free, without a restart");
        acked += 1;
    }
    // Nothing acknowledged is lost: every partition holds at least what was
    // acknowledged on it, all readable.
    let mut consumer =
        Consumer::assign(client.clone(), ConsumerConfig::default(), "fill", &[], StartFrom::Earliest).await.unwrap();
    let mut read = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while read < acked {
        assert!(std::time::Instant::now() < deadline, "read {read} of {acked}");
        for r in consumer.poll().await.unwrap() {
            assert_eq!(r.value.as_deref(), Some(&value[..]));
            read += 1;
        }
    }
    assert!(broker.terminate().success(), "a clean shutdown after a full disk");
}
