//! A short run of every scenario against real PostgreSQL, RabbitMQ and S3 (`s3s-fs`): every row
//! is archived once or still in its table, no error is counted, and the report, its JSON and its
//! plots are written. Timing criteria are the benchmark's business: their verdicts are not
//! asserted here, only that they were reported, and that runs this short earn no verdict: never
//! PASS, never "ready for production".

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn loadtest() -> &'static str {
    env!("CARGO_BIN_EXE_archiver-loadtest")
}

/// Runs a scenario (`args[0]`, then its options) into a fresh directory and returns its JSON
/// report.
fn run(storage: &str, args: &[&str]) -> (tempfile::TempDir, Value) {
    let out = tempfile::tempdir().unwrap();
    // A governor no test waits on, deaf to the probe: these runs check correctness and reports,
    // and a test machine busy with other suites would otherwise slow them to a crawl.
    let governor: &[&str] = if args.contains(&"--governor") { &[] } else { &["--governor", "{budget: 8.0, max_probe_ratio: 1000}"] };
    let output = Command::new(loadtest())
        .arg(args[0])
        .args(["--storage", storage, "--out"])
        .arg(out.path())
        .args(governor)
        .args(&args[1..])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 0: every criterion judged and passed; 1: a criterion failed; 2: lost rows or no run at all;
    // 3: no verdict (not every criterion could be judged). Runs this short are never 0.
    assert!(
        matches!(output.status.code(), Some(1 | 3)),
        "{args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(stdout.contains("# Load Test Report"), "the report is printed");
    assert!(md.contains("## Success Criteria") && md.contains("## Conclusion"), "{md}");
    assert!(md.contains("### Minimums for a verdict") && md.contains("NOT MET"), "{md}");
    assert!(!md.to_lowercase().contains("ready for production") && !md.contains("[PASS]"), "a short run claims nothing: {md}");
    for plot in json["plots"].as_array().unwrap() {
        let svg = std::fs::read_to_string(out.path().join(plot.as_str().unwrap())).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{plot} is a drawn plot");
    }
    (out, json)
}

/// Nothing lost, nothing twice, nothing eligible left, no error, and `rows` archived.
fn assert_correct(json: &Value, rows: u64) {
    let c = &json["correctness"];
    for field in ["lost", "duplicated", "archived_and_remaining", "eligible_left"] {
        assert_eq!(c[field], 0, "{field}: {c}");
    }
    assert_eq!(c["archived"], rows, "{c}");
    assert_eq!(json["errors"], 0, "{}", json["stability"]);
    let criteria = json["criteria"].as_array().unwrap();
    assert!(!criteria.is_empty());
    for k in criteria {
        // null where no threshold of ours is set (printed "n/a").
        assert!(k["ours_pass"].is_boolean() || k["ours"].is_null(), "{k}");
        assert!(k["conclusive"].is_boolean() && !k["measured"].as_str().unwrap().is_empty(), "{k}");
    }
    let verdict = json["verdict"].as_str().unwrap();
    assert!(verdict == "INCONCLUSIVE" || verdict == "FAIL", "{verdict}");
}

fn plots(json: &Value) -> Vec<&str> {
    json["plots"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect()
}

#[test]
fn sustained_archives_rows_that_keep_arriving() {
    let (_out, json) =
        run("s3s", &["sustained", "--duration", "12s", "--rows", "4000", "--insert-rate", "40", "--batch-size", "1000", "--interval", "1s"]);
    let c = &json["correctness"];
    let inserted = c["inserted"].as_u64().unwrap();
    // 4,000 seeded past the cutoff, 400 recent ones that stay, and those that arrived meanwhile.
    assert!(inserted > 4_400, "rows arrived while it ran: {c}");
    assert_correct(&json, inserted - 400);
    assert_eq!(c["remaining"], 400);
    assert!(json["figures"]["memory_growth_pct"].is_number());
    assert!(json["samples"].as_array().unwrap().len() >= 5, "sampled over time");
    assert!(plots(&json).contains(&"memory.svg"));
}

#[test]
fn concurrency_archives_several_tables_with_several_workers() {
    let (_out, json) = run("s3s", &["concurrency", "--tables", "3", "--rows", "3000", "--batch-size", "1000", "--workers", "2"]);
    assert_correct(&json, 9_000);
    assert!(json["figures"]["records_per_minute"].as_f64().unwrap() > 0.0);
}

#[test]
fn large_batch_reports_memory_and_the_baseline_ratio() {
    let (_out, json) = run("local", &["large-batch", "--rows", "20000", "--batch-size", "5000"]);
    assert_correct(&json, 20_000);
    let f = &json["figures"];
    assert!(f["peak_rss_mb"].as_f64().unwrap() > 1.0 && f["ratio"].as_f64().unwrap() > 0.0, "{f}");
}

#[test]
fn compare_measures_the_archiver_against_the_raw_baseline() {
    let (_out, json) = run("s3s", &["compare", "--rows", "10000", "--batch-size", "2000"]);
    assert_correct(&json, 10_000);
    assert!(json["figures"]["baseline_rows_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn restore_measures_the_restore_against_the_raw_baseline_and_checks_every_row() {
    let (_out, json) = run("s3s", &["restore", "--rows", "10000", "--batch-size", "2000"]);
    assert_correct(&json, 10_000);
    let f = &json["figures"];
    assert_eq!(f["restored_rows"], 10_000, "{f}");
    assert_eq!(f["restored_equal"], true, "{f}");
    assert!(f["baseline_rows_per_second"].as_f64().unwrap() > 0.0 && f["peak_rss_mb"].as_f64().unwrap() > 1.0, "{f}");
}

#[test]
fn pool_stability_counts_connections_after_each_run() {
    let (_out, json) = run("local", &["pool-stability", "--runs", "3", "--rows", "1500", "--batch-size", "500", "--idle-timeout", "1s"]);
    assert_correct(&json, 4_500);
    let after = json["figures"]["connections_after_runs"].as_array().unwrap();
    assert_eq!(after.len(), 3);
    assert!(json["figures"]["max_connections"].as_i64().unwrap() > 0, "the sampler saw the worker's connections");
}

#[test]
fn db_impact_probes_before_during_and_after() {
    let (out, json) = run("local", &["db-impact", "--rows", "12000", "--batch-size", "2000", "--phase", "2s", "--probe-rate", "20"]);
    assert_correct(&json, 12_000);
    let f = &json["figures"];
    for phase in ["before", "during", "after"] {
        assert!(f[format!("read_p99_ms_{phase}")].as_f64().unwrap() > 0.0, "{phase}: {f}");
    }
    assert!(plots(&json).contains(&"latency.svg"));
    assert!(Path::new(&out.path().join("latency.svg")).is_file());
}

#[test]
fn seed_creates_tables_and_keeps_inserting() {
    let db = format!("arch_seed_{}", std::process::id());
    let status = Command::new(loadtest())
        .args(["seed", "--database", &db, "--tables", "2", "--rows", "1000", "--wide", "--keep-inserting", "50", "--insert-for", "2s"])
        .status()
        .unwrap();
    assert!(status.success());
    let count = |table: &str, filter: &str| -> i64 {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &db, "-qAtc", &format!("SELECT count(*) FROM {table} {filter}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    for t in ["audit_load_1", "audit_load_2"] {
        let n = count(t, "");
        assert!(n > 1_000, "{t}: seeded rows and fresh ones: {n}");
        assert!(count(t, "WHERE created_at > now() - interval '1 minute'") >= 50, "{t}: fresh rows arrived");
        assert!(count(t, "WHERE length(details) > 0") > 0, "{t}: wide rows");
    }
    let _ = Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-qc", &format!("DROP DATABASE {db} WITH (FORCE)")]).status();
}
