//! The `cairn` CLI against a real broker: what a new user types.

use std::fmt::Write as _;

use cairn_tests::Broker;

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn topics_produce_consume_and_offsets_from_the_command_line() {
    // A relative data directory, as with the README's `cargo run -p server`.
    let broker = Broker::start_relative(&[]);
    stdout(&broker.cli(&["topic", "create", "greetings", "--partitions", "3"], ""));
    assert_eq!(stdout(&broker.cli(&["topic", "list"], "")), "greetings\t3\n");
    let described = stdout(&broker.cli(&["topic", "describe", "greetings"], ""));
    assert!(described.contains("partitions 3"), "{described}");
    assert_eq!(described.lines().filter(|l| l.ends_with("\tok")).count(), 3, "{described}");

    let input = (0..30).fold(String::new(), |mut s, i| {
        writeln!(s, "user{}:hello {i}", i % 5).unwrap();
        s
    });
    let produced = broker.cli(&["produce", "greetings", "--key-separator", ":"], &input);
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));

    let json = stdout(&broker.cli(&["consume", "greetings", "--count", "30", "--format", "json"], ""));
    let records: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 30);
    // One key, one partition; per partition, offsets in order.
    let mut partition_of = std::collections::HashMap::new();
    let mut last_offset = std::collections::HashMap::new();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_string();
        let p = r["partition"].as_u64().unwrap();
        assert_eq!(*partition_of.entry(key).or_insert(p), p);
        let o = r["offset"].as_u64().unwrap();
        if let Some(prev) = last_offset.insert(p, o) {
            assert_eq!(o, prev + 1);
        }
        assert!(r["value"].as_str().unwrap().starts_with("hello "));
    }

    // One partition, from an offset, as text with keys.
    let p = records[0]["partition"].as_u64().unwrap().to_string();
    let text =
        stdout(&broker.cli(
            &["consume", "greetings", "--partition", &p, "--from", "1", "--count", "1", "--key-separator", "="],
            "",
        ));
    let second =
        records.iter().find(|r| r["partition"].as_u64().unwrap().to_string() == p && r["offset"] == 1).unwrap();
    assert_eq!(text, format!("{}={}\n", second["key"].as_str().unwrap(), second["value"].as_str().unwrap()));

    // acks none: no acknowledgements, but the records arrive all the same.
    let produced = broker.cli(&["produce", "greetings", "--acks", "none", "--partition", "0"], "fire\nforget\n");
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));
    let before = records.iter().filter(|r| r["partition"] == 0).count().to_string();
    let tail =
        stdout(&broker.cli(&["consume", "greetings", "--partition", "0", "--from", &before, "--count", "2"], ""));
    assert_eq!(tail, "fire\nforget\n");

    let offsets = stdout(&broker.cli(&["offsets", "greetings"], ""));
    let total: u64 = offsets.lines().skip(1).map(|l| l.split('\t').nth(2).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 32, "{offsets}");

    let topic_dirs = || -> Vec<String> {
        std::fs::read_dir(broker.data_dir().join("topics"))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    assert!(topic_dirs().iter().any(|d| d.starts_with("greetings@")), "{:?}", topic_dirs());
    stdout(&broker.cli(&["topic", "delete", "greetings"], ""));
    assert_eq!(stdout(&broker.cli(&["topic", "list"], "")), "");
    assert!(!topic_dirs().iter().any(|d| d.starts_with("greetings@")), "the deleted topic's files are gone");
}

fn setting(described: &str, name: &str) -> (String, String) {
    let line = described
        .lines()
        .find(|l| l.starts_with(&format!("{name}\t")))
        .unwrap_or_else(|| panic!("{name} in {described}"));
    let mut parts = line.split('\t').skip(1);
    (parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
}

#[test]
fn topic_settings_by_kafka_names_with_their_sources_and_changed_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(&config, "[log]\nretention_bytes = 1073741824\n").unwrap();
    let broker = Broker::start(&["--config", config.to_str().unwrap()]);
    let created = broker.cli(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--config",
            "retention.ms=7d",
            "--config",
            "segment.bytes=2097152",
        ],
        "",
    );
    stdout(&created);
    let d = stdout(&broker.cli(&["topic", "describe", "orders"], ""));
    assert_eq!(setting(&d, "retention.ms"), ("604800000".into(), "topic".into()), "units resolved: {d}");
    assert_eq!(setting(&d, "segment.bytes"), ("2097152".into(), "topic".into()));
    assert_eq!(setting(&d, "retention.bytes"), ("1073741824".into(), "broker".into()), "the broker's file: {d}");
    assert_eq!(setting(&d, "cleanup.policy"), ("delete".into(), "default".into()));
    assert_eq!(setting(&d, "message.timestamp.type"), ("CreateTime".into(), "default".into()));
    for name in ["max.message.bytes", "segment.ms", "message.timestamp.after.max.ms", "message.timestamp.before.max.ms"]
    {
        setting(&d, name);
    }
    stdout(
        &broker
            .cli(&["topic", "alter", "orders", "--config", "retention.ms=1h", "--delete-config", "segment.bytes"], ""),
    );
    let d = stdout(&broker.cli(&["topic", "describe", "orders"], ""));
    assert_eq!(setting(&d, "retention.ms"), ("3600000".into(), "topic".into()));
    assert_eq!(setting(&d, "segment.bytes"), ((1u64 << 30).to_string(), "default".into()));
    stdout(&broker.cli(&["topic", "create", "short", "--retention", "12h"], ""));
    let d = stdout(&broker.cli(&["topic", "describe", "short"], ""));
    assert_eq!(setting(&d, "retention.ms").0, "43200000");
    for (args, expected) in [
        (vec!["topic", "create", "x", "--config", "retention.fortnights=1"], "unknown topic setting"),
        (vec!["topic", "create", "x", "--config", "segment.bytes=10"], "segment.bytes must be"),
        (vec!["topic", "create", "x", "--config", "cleanup.policy=shred"], "cleanup.policy must be"),
        (vec!["topic", "create", "x", "--config", "retention.ms"], "KEY=VALUE"),
        (vec!["topic", "create", "x", "--retention", "soon"], "--retention"),
        (vec!["topic", "alter", "orders", "--config", "retention.ms=often"], "retention.ms"),
        (vec!["topic", "alter", "missing", "--config", "retention.ms=1"], "UNKNOWN_TOPIC"),
    ] {
        let out = broker.cli(&args, "");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expected) && err.lines().count() == 1, "{args:?}: {err}");
    }
    assert!(!stdout(&broker.cli(&["topic", "list"], "")).contains('x'), "nothing refused was created");
    let out = stdout(&broker.cli(&["partition", "recover", "orders"], ""));
    assert_eq!(out, "no partition of orders needed recovery\n");
}

#[test]
fn a_partition_that_cannot_open_is_recovered_from_the_command_line_without_a_restart() {
    let mut broker = Broker::start(&[]);
    stdout(&broker.cli(&["topic", "create", "r", "--config", "segment.bytes=1052672"], ""));
    let value = "v".repeat(1000);
    let input = (0..4000).fold(String::new(), |mut s, i| {
        writeln!(s, "{i}:{value}").unwrap();
        s
    });
    stdout(&broker.cli(&["produce", "r"], &input));
    assert!(broker.terminate().success());
    // A segment in the middle goes missing (a bad disk, an operator's slip):
    // the partition cannot open, and says so; the broker serves the rest.
    let dir = std::fs::read_dir(broker.data_dir().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("r@"))
        .unwrap()
        .join("0");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let aside = broker.data_dir().join("aside.log");
    std::fs::rename(&segments[1], &aside).unwrap();
    broker.restart();
    let d = stdout(&broker.cli(&["topic", "describe", "r"], ""));
    assert!(d.lines().last().unwrap().ends_with("STORAGE_ERROR"), "{d}");
    let out = broker.cli(&["consume", "r", "--count", "1"], "");
    assert!(!out.status.success());
    // The operator puts it back and recovers the partition: no restart.
    std::fs::rename(&aside, &segments[1]).unwrap();
    assert_eq!(stdout(&broker.cli(&["partition", "recover", "r"], "")), "recovered r/0\n");
    let all = stdout(&broker.cli(&["consume", "r", "--count", "4000"], ""));
    assert_eq!(all.lines().count(), 4000);
    assert!(all.lines().next().unwrap().ends_with(&value));
}

#[test]
fn errors_print_one_line_and_exit_non_zero() {
    let broker = Broker::start(&[]);
    let long = "x".repeat(70_000);
    for (args, expected) in [
        (vec!["topic", "describe", long.as_str()], "topic name must be"),
        (vec!["consume", long.as_str(), "--count", "1"], "topic name must be"),
        (vec!["consume", "missing", "--count", "1"], "UNKNOWN_TOPIC"),
        (vec!["topic", "create", "a/b"], "contains '/'"),
        (vec!["topic", "delete", "missing"], "UNKNOWN_TOPIC"),
        (vec!["offsets", "missing"], "UNKNOWN_TOPIC"),
    ] {
        let out = broker.cli(&args, "");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
    }
    stdout(&broker.cli(&["topic", "create", "t"], ""));
    let out = broker.cli(&["produce", "t", "--key-separator", ":"], "no separator here\n");
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("line 1"));
    let out = broker.cli(&["consume", "t", "--from", "yesterday", "--count", "1"], "");
    assert!(!out.status.success());
    // No broker at all.
    let out = std::process::Command::new(cairn_tests::bin("cairn"))
        .args(["--bootstrap", "127.0.0.1:1", "topic", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot connect"));
}
