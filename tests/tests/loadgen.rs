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
    assert_eq!(s["version"], 2);
    assert_eq!(s["produce"]["records"], 20000, "{s}");
    assert_eq!(s["produce_errors"], 0);
    assert_eq!(s["produce_latency"]["count"], 20000);
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
