//! The worker binary as an operator meets it: start-up errors name what is wrong and exit non-zero
//! before anything is touched. (Building this test also builds the `archiver-worker` binary that
//! the coordinator's process-level tests run.)

use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_archiver-worker"))
}

fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archiver.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const TABLES: &str = "databases:\n  - name: db\n    host: 127.0.0.1\n    tables:\n      - name: audit_log\n        timestamp_column: created_at\n        primary_key: id\n";

#[test]
fn a_missing_config_file_is_named() {
    let out = worker().args(["--config", "/nonexistent/archiver.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/archiver.yaml"), "{err}");
}

#[test]
fn an_unknown_key_is_named_with_its_path() {
    let (_d, path) = config_file(&format!("version: \"2.0\"\nstorage:\n  type: local\n  path: /tmp/x\nqueue:\n  url: amqp://127.0.0.1:1/%2f\n  nmae: typo\n{TABLES}"));
    let out = worker().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue.nmae"), "{err}");
}

#[test]
fn a_config_without_a_queue_is_refused() {
    let (_d, path) = config_file(&format!("version: \"2.0\"\nstorage:\n  type: local\n  path: /tmp/x\n{TABLES}"));
    let out = worker().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no `queue` section"), "{err}");
}
