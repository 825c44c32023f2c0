//! `cairn-loadgen --embedded` end to end: a short run whose report must
//! account for every record produced and consumed.

use std::process::Command;

fn run(args: &[&str], report: &std::path::Path) -> serde_json::Value {
    let out = Command::new(cairn_tests::bin("cairn-loadgen"))
        .args(["--embedded", "--report-dir", report.to_str().unwrap()])
        .args(args)
        .env_remove("CAIRN_LOG")
        .output()
        .expect("running cairn-loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The embedded broker's INFO lines would bury the table and the progress bar.
    assert!(!stderr.contains(" INFO "), "the broker's logs leak into the run: {stderr}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("latency ms") && table.contains("produce"), "{table}");
    serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn an_embedded_run_reports_every_record_produced_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let report = dir.path().join("report");
    let s = run(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--records",
            "20000",
            // Durations take units.
            "--duration",
            "1m",
            "--warmup",
            "0ms",
            "--linger",
            "5ms",
            "--consumers",
            "2",
            "--keys",
            "100",
            "--key-distribution",
            "zipf",
            "--record-bytes",
            "10..200",
            "--replay",
        ],
        &report,
    );
    assert_eq!(s["version"], 3);
    assert_eq!(s["mode"], "client+broker");
    assert_eq!(s["produce"]["records"], 20000, "{s}");
    assert_eq!(s["produce_errors"], 0);
    assert_eq!(s["produce_latency"]["count"], 20000);
    // The split covers every measured record, and its parts fit in the whole.
    assert_eq!(s["produce_queue_latency"]["count"], 20000);
    assert_eq!(s["produce_request_latency"]["count"], 20000);
    let us = |k: &str, q: &str| s[k][q].as_u64().unwrap();
    assert!(us("produce_request_latency", "max_us") <= us("produce_latency", "max_us") + 1, "{s}");
    assert!(us("fetch_latency", "count") > 0 && us("replay_fetch_latency", "count") > 0, "fetches are timed: {s}");
    // Clock ticks are 10 ms and this run is short: the split is there, and
    // together it is some CPU.
    let (broker, client) = (s["cpu_broker_cores"].as_f64().unwrap(), s["cpu_client_cores"].as_f64().unwrap());
    assert!(broker >= 0.0 && client >= 0.0 && broker + client > 0.0, "{s}");
    assert_eq!(s["consumed"]["records"], 20000, "the tail consumers read everything: {s}");
    assert_eq!(s["end_to_end_latency"]["count"], 20000);
    assert_eq!(s["replay"]["records"], 20000, "the replay reads everything: {s}");
    let bytes = s["produce"]["bytes_per_sec"].as_f64().unwrap() * s["produce"]["seconds"].as_f64().unwrap();
    assert!((10.0 * 20000.0..=200.0 * 20000.0).contains(&bytes), "value bytes {bytes}");
    let timeline: u64 = s["timeline"].as_array().unwrap().iter().map(|t| t["produced"].as_u64().unwrap()).sum();
    assert!(timeline <= 20000);
    for file in ["produce.hgrm", "end_to_end.hgrm", "produce.hlog", "latency.svg", "throughput.svg"] {
        let path = report.join(file);
        assert!(path.metadata().is_ok_and(|m| m.len() > 0), "{} is missing", path.display());
    }
    let hgrm = std::fs::read_to_string(report.join("produce.hgrm")).unwrap();
    assert!(hgrm.contains("Total count    =        20000"), "{hgrm}");
    // No temporary broker directory is left behind.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

#[test]
fn broker_only_mode_sends_prebuilt_batches_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let s = run(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--broker-only",
            "--records",
            "50000",
            "--duration",
            "1m",
            "--warmup",
            "0ms",
        ],
        &report,
    );
    assert_eq!(s["mode"], "broker-only");
    assert_eq!(s["produce_errors"], 0, "{s}");
    // Whole requests: the last one may carry the limit past 50,000.
    let records = s["produce"]["records"].as_u64().unwrap();
    assert!(records >= 50_000, "{s}");
    assert_eq!(s["produce_latency"]["count"].as_u64().unwrap(), records);
}

#[test]
fn rate_discovery_reports_its_trials_and_the_highest_rate_under_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let s = run(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--find-max-rate",
            "--p99-max",
            "1s",
            "--trials",
            "3",
            "--duration",
            "1s",
            "--warmup",
            "0ms",
            "--flush",
            "never",
        ],
        &report,
    );
    let d = &s["rate_discovery"];
    let trials = d["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3, "{s}");
    let ceiling = d["closed_loop_records_per_sec"].as_f64().unwrap();
    assert!(ceiling > 0.0);
    let first = trials[0]["rate"].as_f64().unwrap();
    assert!((first - 0.9 * ceiling).abs() < 1.0, "the first trial runs at 90 % of the closed loop: {s}");
    let best = trials.iter().filter(|t| t["passed"] == true).map(|t| t["rate"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!((d["max_rate"].as_f64().unwrap() - best).abs() < 1e-6, "{s}");
    for t in trials.iter().filter(|t| t["passed"] == true) {
        assert!(t["p99_us"].as_u64().unwrap() <= 1_000_000);
    }
    // The second and third trials run at 45 % and 22 % (or 67 %) of the
    // closed loop under a 1 s bound: one of them passes.
    assert!(best > 0.0, "{s}");
    assert!((s["rate"].as_f64().unwrap() - best).abs() < 1e-6, "the summary is the best passing trial's");
}

#[test]
fn compare_prints_two_runs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let common = ["--data-dir", data.to_str().unwrap(), "--records", "2000", "--duration", "60", "--warmup", "0"];
    run(&common, &a);
    run(&[&common[..], &["--acks", "none"]].concat(), &b);
    let out = Command::new(cairn_tests::bin("cairn-loadgen"))
        .args(["compare", a.join("summary.json").to_str().unwrap(), b.join("summary.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("acks leader") && text.contains("acks none"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("produce records/s")), "{text}");
}
