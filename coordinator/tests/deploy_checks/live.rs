//! A live scrape of both binaries: `archiver-coordinator run --wait --metrics-addr` while it
//! waits for a worker, then `archiver-worker --metrics-addr` after it archived the items.

use std::time::{Duration, Instant};

use crate::common::distributed_env::{libc_kill, worker_bin, Env};
use crate::common::{audit_table, config_file, seeded};

/// GET `path` from `addr`: the body of a 200 answer.
async fn get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// `/metrics` of `addr` once it holds `until`, within `secs` seconds.
async fn scrape_until(addr: &str, until: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match get(addr, "/metrics").await {
            Some(page) if page.contains(until) => return page,
            last => assert!(Instant::now() < deadline, "{addr}/metrics never held {until}; last: {last:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn quiet() -> std::process::Stdio {
    std::process::Stdio::null()
}

/// The `/metrics` pages of a coordinator (while `run --wait` waits for workers, after planning)
/// and of a worker (after it archived the run's items, governor on), on a database, bucket and
/// queue of this test's own.
pub async fn scrape_binaries() -> (String, String) {
    let env = Env::new().await;
    seeded(&env.db, 2_000).await;
    let (_dir, path) = config_file(&env.builder().defaults("range_interval: 60d\nbatch_size: 400").table(audit_table()));
    let (c_addr, w_addr) =
        (format!("127.0.0.1:{}", archiver_testkit::free_port()), format!("127.0.0.1:{}", archiver_testkit::free_port()));
    let mut coordinator = tokio::process::Command::new(env!("CARGO_BIN_EXE_archiver-coordinator"))
        .args(["--config", &path, "run", "--wait", "--timeout", "3m", "--metrics-addr", &c_addr])
        .stdout(quiet())
        .stderr(quiet())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let coordinator_page = scrape_until(&c_addr, "archiver_rows_eligible{", 60).await;
    let mut worker = tokio::process::Command::new(worker_bin())
        .args(["--config", &path, "--metrics-addr", &w_addr])
        .stdout(quiet())
        .stderr(quiet())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it: cargo build -p archiver-worker)", worker_bin()));
    let status = tokio::time::timeout(Duration::from_secs(200), coordinator.wait()).await.expect("run --wait ended").unwrap();
    assert!(status.success(), "run --wait: {status:?}");
    let worker_page = scrape_until(&w_addr, "archiver_governor_state{", 30).await;
    libc_kill(worker.id().unwrap() as i32);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    (coordinator_page, worker_page)
}
