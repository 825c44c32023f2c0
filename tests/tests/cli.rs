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

    stdout(&broker.cli(&["topic", "delete", "greetings"], ""));
    assert_eq!(stdout(&broker.cli(&["topic", "list"], "")), "");
    assert!(!broker.data_dir().join("topics/greetings").exists());
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
