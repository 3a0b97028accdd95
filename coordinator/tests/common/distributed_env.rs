//! What the distributed-mode tests share: a database, an S3 server and queue names of their own
//! per test, in-process and out-of-process workers, and the broker lock.

use std::sync::Arc;
use std::time::Duration;

use archiver_coordinator::distributed::{self, Outcome, RunOptions as DistOptions};
use archiver_coordinator::summary::Summary;
use archiver_engine::config::Config;
use archiver_engine::setup::Scope;
use archiver_testkit::{S3Server, TestDb};
use archiver_worker::consumer::{self, WorkerOptions};
use tokio_util::sync::CancellationToken;

use super::{s3_and_db, test_config, ConfigBuilder, Queue, Storage};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn unique_queue() -> String {
    format!("archiver.test.{}", uuid::Uuid::new_v4().simple())
}

pub struct Env {
    pub db: TestDb,
    pub s3: S3Server,
    pub queue: String,
    pub amqp: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        archiver_testkit::delete_queues(&self.amqp, &self.queue);
    }
}

impl Env {
    /// A database, a bucket and a queue of the test's own on the machine's broker.
    pub async fn new() -> Env {
        Env::on(AMQP).await
    }

    /// The same on the broker at `amqp` (a test's private node).
    pub async fn on(amqp: &str) -> Env {
        let (db, s3) = s3_and_db().await;
        Env { db, s3, queue: unique_queue(), amqp: amqp.to_string() }
    }

    /// The tests' configuration with this test's bucket and queue (1 s retry delay, 3 attempts).
    pub fn builder(&self) -> ConfigBuilder {
        let queue = Queue::new(&self.amqp, &self.queue).set("retry_delay", "1s").set("max_attempts", 3);
        test_config(&self.db, Storage::s3(&self.s3, "")).queue(queue)
    }
}

pub fn worker_bin() -> String {
    env!("CARGO_BIN_EXE_archiver-coordinator").replace("archiver-coordinator", "archiver-worker")
}

pub fn spawn_worker(config: &Config, shutdown: &CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let config = Arc::new(config.clone());
    let opts = WorkerOptions {
        concurrency: 2,
        shutdown_grace: Duration::from_secs(30),
        ..WorkerOptions::new(archiver_engine::default_worker_id())
    };
    tokio::spawn(consumer::run(config, opts, shutdown.child_token()))
}

/// `run --wait` with `n` in-process workers, which are stopped afterwards.
pub async fn run_with_workers(config: &Config, n: usize) -> Summary {
    let shutdown = CancellationToken::new();
    let workers: Vec<_> = (0..n).map(|_| spawn_worker(config, &shutdown)).collect();
    let summary = run_wait(config).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    summary
}

/// Options of a run that plans and publishes; with `wait`, it waits until the items ended.
pub fn dist_opts(wait: bool, poll_ms: u64) -> DistOptions {
    DistOptions {
        scope: Scope::default(),
        wait,
        progress: false,
        poll: Duration::from_millis(poll_ms),
        timeout: None,
        metrics_addr: None,
    }
}

/// The summary of a run that waited.
pub fn waited(outcome: Outcome) -> Summary {
    match outcome {
        Outcome::Waited { summary, timed_out: false } => summary,
        Outcome::Waited { timed_out: true, .. } => panic!("the wait timed out"),
        Outcome::Published { .. } => panic!("a run that waits"),
    }
}

pub async fn run_wait(config: &Config) -> Summary {
    tokio::time::timeout(Duration::from_secs(240), distributed::run(config, dist_opts(true, 300), CancellationToken::new()))
        .await
        .map(|r| waited(r.expect("run")))
        .expect("the run finished in time")
}

pub fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    // SAFETY: plain syscall on our child's pid.
    unsafe {
        kill(pid, SIGTERM);
    }
}
