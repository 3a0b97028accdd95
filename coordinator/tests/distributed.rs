//! Distributed mode against real RabbitMQ, PostgreSQL and an S3 server. Every test has its own
//! database, S3 server and queue names, so tests run in parallel; only the broker-restart test
//! takes the broker away, and it holds a lock the other tests share.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_coordinator::distributed::{self, RunOptions as DistOptions};
use archiver_coordinator::summary::Summary;
use archiver_testkit::{S3Server, TestDb};
use archiver_engine::config::Config;
use archiver_worker::consumer::{self, WorkerOptions};
use archiver_engine::queue::Broker;
use archiver_engine::setup::Scope;
use common::*;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

/// Tests share the broker; the restart test takes it away and must run alone.
static BROKER: RwLock<()> = RwLock::const_new(());

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn queue_yaml(name: &str) -> String {
    format!("queue:\n  url: {AMQP}\n  name: {name}\n  retry_delay: 1s\n  max_attempts: 3\n")
}

fn unique_queue() -> String {
    format!("archiver.test.{}", uuid::Uuid::new_v4().simple())
}

struct Env {
    db: TestDb,
    s3: S3Server,
    queue: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        archiver_testkit::delete_queues(AMQP, &self.queue);
    }
}

impl Env {
    async fn new() -> Env {
        let (db, s3) = s3_and_db().await;
        Env { db, s3, queue: unique_queue() }
    }

    fn yaml(&self, defaults: &str, tables: &str) -> String {
        yaml(&self.db, &format!("{}{}", self.s3.yaml(""), queue_yaml(&self.queue)), defaults, tables)
    }

    fn config(&self, defaults: &str, tables: &str) -> Config {
        parse(&self.yaml(defaults, tables))
    }
}

/// A configuration written to a file, for the binaries.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

fn worker_bin() -> String {
    env!("CARGO_BIN_EXE_archiver-coordinator").replace("archiver-coordinator", "archiver-worker")
}

fn spawn_worker(config: &Config, shutdown: &CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let config = Arc::new(config.clone());
    let opts = WorkerOptions {
        concurrency: 2,
        shutdown_grace: Duration::from_secs(30),
        ..WorkerOptions::new(archiver_engine::default_worker_id())
    };
    tokio::spawn(consumer::run(config, opts, shutdown.child_token()))
}

/// `run --wait` with `n` in-process workers, which are stopped afterwards.
async fn run_with_workers(config: &Config, n: usize) -> Summary {
    let shutdown = CancellationToken::new();
    let workers: Vec<_> = (0..n).map(|_| spawn_worker(config, &shutdown)).collect();
    let summary = run_wait(config).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    summary
}

async fn run_wait(config: &Config) -> Summary {
    let opts = DistOptions { scope: Scope::default(), wait: true, progress: false, poll: Duration::from_millis(300) };
    tokio::time::timeout(Duration::from_secs(240), distributed::run(config, opts, CancellationToken::new()))
        .await
        .expect("the run finished in time")
        .expect("run")
}

const TWO_TABLES: &str = "      - name: audit_a\n        timestamp_column: created_at\n        primary_key: id\n      - name: audit_b\n        timestamp_column: created_at\n        primary_key: id\n";

async fn seed_two(db: &TestDb, rows: u64) {
    for t in ["audit_a", "audit_b"] {
        archiver_testkit::seed::create_audit_table(&db.pool, "public", t).await.unwrap();
        archiver_testkit::seed::insert_rows(&db.pool, "public", t, rows, 200.0, 0.0).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_archive_several_tables_exactly_once() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seed_two(&env.db, 3_000).await;
    let config = env.config("  batch_size: 500", TWO_TABLES);
    let before_a = snapshot(&env.db, "audit_a").await;
    let before_b = snapshot(&env.db, "audit_b").await;
    let summary = run_with_workers(&config, 3).await;
    assert!(summary.all_finished(), "{summary}");
    let store = open_store(&config).await;
    // Both tables' objects live in the same bucket; check each table against its own rows.
    let archived_a = archived_rows_of(&*store, "audit_a").await;
    let archived_b = archived_rows_of(&*store, "audit_b").await;
    check_table(&before_a, &snapshot(&env.db, "audit_a").await, &archived_a);
    check_table(&before_b, &snapshot(&env.db, "audit_b").await, &archived_b);
    assert_eq!(summary.rows(), (archived_a.len() + archived_b.len()) as i64);
    // Re-running the coordinator plans nothing new.
    let again = run_wait(&config).await;
    assert_eq!(again.rows(), 0);
}

async fn archived_rows_of(
    store: &dyn archiver_engine::storage::ObjectStore,
    table: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut out = std::collections::BTreeMap::new();
    for (key, rows) in archived(store).await {
        if !key.contains(&format!("/public.{table}/")) {
            continue;
        }
        for row in rows {
            let id = row["id"].to_string();
            assert!(out.insert(id.clone(), row).is_none(), "row {id} of {table} archived twice");
        }
    }
    out
}

fn check_table(
    before: &std::collections::BTreeMap<String, serde_json::Value>,
    after: &std::collections::BTreeMap<String, serde_json::Value>,
    archived: &std::collections::BTreeMap<String, serde_json::Value>,
) {
    for (id, row) in before {
        match (after.get(id), archived.get(id)) {
            (Some(_), Some(_)) => panic!("row {id} both archived and in the table"),
            (None, None) => panic!("row {id} LOST"),
            (None, Some(a)) => assert_eq!(a, row),
            (Some(_), None) => {}
        }
    }
    assert!(!archived.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_batch_is_finished_by_another_after_its_lease() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let config = env.config("  range_interval: 400d\n  batch_size: 150", AUDIT_TABLE);
    let (_dir, path) = config_file(&env.yaml("  range_interval: 400d\n  batch_size: 150", AUDIT_TABLE));
    let before = snapshot(&env.db, "audit_log").await;
    let bin = worker_bin();
    // Publish, then let a worker process die at several points, one after the other.
    let opts = DistOptions { scope: Scope::default(), wait: false, progress: false, poll: Duration::from_millis(300) };
    distributed::run(&config, opts, CancellationToken::new()).await.unwrap();
    let store = open_store(&config).await;
    for crash_at in ["uploaded:1", "recorded:3", "deleted:5"] {
        let status = tokio::process::Command::new(&bin)
            .args(["--config", &path, "--concurrency", "1"])
            .env("ARCHIVER_CRASH_AT", crash_at)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.code().is_none(), "the worker died by a signal at {crash_at}: {status:?}");
        assert_nothing_lost(&before, &snapshot(&env.db, "audit_log").await, &*store).await;
    }
    // A healthy worker finishes the work once the dead one's lease (3 s) ran out.
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&env.db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert_eq!(archived.len(), before.len() - after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_hostile_messages_are_dead_lettered_and_touch_nothing() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 500).await;
    let config = env.config("", AUDIT_TABLE);
    let q = config.queue.clone().unwrap();
    let broker = Broker::connect(&q, "test publisher").await.unwrap();
    let before = snapshot(&env.db, "audit_log").await;
    let item = |table: &str, schema: &str, id: i64| archiver_proto::WorkItem {
        id,
        database: env.db.name.clone(),
        schema: schema.into(),
        table: table.into(),
        range_start: chrono::Utc::now() - chrono::Duration::days(300),
        range_end: chrono::Utc::now() - chrono::Duration::days(100),
        generation: 0,
    };
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not a work-item message"),
        (br#"{"version":1,"item":{"id":1}}"#.to_vec(), "not a work-item message"),
        (archiver_proto::message::encode(&item("pg_authid", "pg_catalog", 1)), "not in this worker's configuration"),
        (archiver_proto::message::encode(&item("audit_log\"; DROP TABLE audit_log; --", "public", 1)), "not in this worker's configuration"),
        (archiver_proto::message::encode(&item("audit_log", "public", 987_654)), "no work item 987654"),
    ];
    let mut inverted = item("audit_log", "public", 1);
    std::mem::swap(&mut inverted.range_start, &mut inverted.range_end);
    let mut bad = bad;
    bad.push((archiver_proto::message::encode(&inverted), "invalid range"));
    for (body, _) in &bad {
        broker
            .channel
            .basic_publish("".into(), q.name.as_str().into(), Default::default(), body, Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(&config, &shutdown);
    // Read the dead-letter queue: every message is there with its reason.
    let mut dead = broker
        .channel
        .basic_consume(broker.names.dead.as_str().into(), "test".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < bad.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), dead.next()).await.expect("dead letter in time").unwrap().unwrap();
        let headers = d.properties.headers().clone().unwrap_or_default();
        let reason = match headers.inner().get("x-archiver-reason") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("no reason header: {other:?}"),
        };
        reasons.push((d.data.clone(), reason));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    for (body, expected) in &bad {
        let (_, reason) = reasons.iter().find(|(b, _)| b == body).expect("dead-lettered");
        assert!(reason.contains(expected), "reason {reason:?} should mention {expected:?}");
    }
    assert_eq!(snapshot(&env.db, "audit_log").await, before, "the database was not touched");
    let (items,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.work_items").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(items, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_rerun_while_workers_are_busy_adds_no_duplicate_items() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 4_000).await;
    let config = env.config("  batch_size: 200\n  sleep_between_batches: 0.05", AUDIT_TABLE);
    let before = snapshot(&env.db, "audit_log").await;
    let opts = || DistOptions { scope: Scope::default(), wait: false, progress: false, poll: Duration::from_millis(300) };
    distributed::run(&config, opts(), CancellationToken::new()).await.unwrap();
    let (planned,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.work_items").fetch_one(&env.db.pool).await.unwrap();
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(&config, &shutdown);
    tokio::time::sleep(Duration::from_millis(500)).await;
    distributed::run(&config, opts(), CancellationToken::new()).await.unwrap();
    distributed::run(&config, opts(), CancellationToken::new()).await.unwrap();
    let summary = run_wait(&config).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert!(summary.all_finished(), "{summary}");
    let (items, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (range_start, range_end)) FROM archiver.work_items",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(items, planned, "re-runs planned nothing new");
    assert_eq!(items, distinct, "no range twice");
    let store = open_store(&config).await;
    assert_exactly_once(&before, &snapshot(&env.db, "audit_log").await, &*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_run_the_run_completes() {
    let _broker = BROKER.write().await;
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let config = env.config("  batch_size: 100\n  sleep_between_batches: 0.05", AUDIT_TABLE);
    let before = snapshot(&env.db, "audit_log").await;
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(&config, &shutdown);
    let run = {
        let config = config.clone();
        tokio::spawn(async move { run_wait(&config).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    for args in [["stop_app"], ["start_app"]] {
        let out = tokio::process::Command::new("rabbitmqctl").args(args).output().await.unwrap();
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("broker restarted in {:.1}s", t.elapsed().as_secs_f64());
    let summary = run.await.unwrap();
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert!(summary.all_finished(), "{summary}");
    let store = open_store(&config).await;
    assert_exactly_once(&before, &snapshot(&env.db, "audit_log").await, &*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_validates_and_publishes_an_ad_hoc_range() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 2_000).await;
    let config = env.config("", AUDIT_TABLE);
    let now = chrono::Utc::now();
    let d = |days| now - chrono::Duration::days(days);
    let err = distributed::enqueue(&config, &env.db.name, "nope", d(150), d(120)).await.unwrap_err();
    assert!(err.to_string().contains("not in the configuration"), "{err}");
    let err = distributed::enqueue(&config, &env.db.name, "audit_log", d(120), d(150)).await.unwrap_err();
    assert!(err.to_string().contains("is not before"), "{err}");
    let err = distributed::enqueue(&config, &env.db.name, "audit_log", d(100), d(10)).await.unwrap_err();
    assert!(err.to_string().contains("retention cutoff"), "{err}");
    let items = distributed::enqueue(&config, &env.db.name, "audit_log", d(150), d(120)).await.unwrap();
    assert!((29..=31).contains(&items.len()), "{} items", items.len());
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(&config, &shutdown);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = distributed::status(&config, &Scope::default()).await.unwrap();
        let t = status.values().next().unwrap();
        if t.done as usize == items.len() {
            break;
        }
        assert!(Instant::now() < deadline, "items not done in time: {t:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let (left,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM audit_log WHERE created_at >= now() - interval '150 days' AND created_at < now() - interval '120 days'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert!(left <= 12, "about one day at the edges may remain: {left}");
    let (older,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE created_at < now() - interval '151 days'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(older > 0, "rows outside the range are untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_in_flight_items_back_and_exits_in_bounded_time() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let defaults = "  range_interval: 400d\n  batch_size: 50\n  sleep_between_batches: 0.2";
    let config = env.config(defaults, AUDIT_TABLE);
    let (_dir, path) = config_file(&env.yaml(defaults, AUDIT_TABLE));
    let before = snapshot(&env.db, "audit_log").await;
    let opts = DistOptions { scope: Scope::default(), wait: false, progress: false, poll: Duration::from_millis(300) };
    distributed::run(&config, opts, CancellationToken::new()).await.unwrap();
    let bin = worker_bin();
    let mut child = tokio::process::Command::new(&bin)
        .args(["--config", &path, "--concurrency", "2", "--shutdown-grace", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it is mid-item, then ask it to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.batches").fetch_one(&env.db.pool).await.unwrap();
        if n >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    libc_kill(child.id().unwrap() as i32);
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait()).await.expect("exited in bounded time").unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    eprintln!("stopped {:.1}s after SIGTERM", t.elapsed().as_secs_f64());
    let (running,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM archiver.work_items WHERE state = 'running'").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(running, 0, "in-flight items were handed back, not left under a lease");
    assert_nothing_lost(&before, &snapshot(&env.db, "audit_log").await, &*open_store(&config).await).await;
    // Another worker picks the handed-back items up right away (no lease to wait for).
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished(), "{summary}");
    assert_exactly_once(&before, &snapshot(&env.db, "audit_log").await, &*open_store(&config).await).await;
}

fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    // SAFETY: plain syscall on our child's pid.
    unsafe {
        kill(pid, SIGTERM);
    }
}

/// A plain HTTP/1.0 GET, enough for our own endpoints.
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_health_readiness_and_metrics() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 1_000).await;
    let defaults = "  range_interval: 4000d";
    let config = env.config(defaults, AUDIT_TABLE);
    let (_dir, path) = config_file(&env.yaml(defaults, AUDIT_TABLE));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let bin = worker_bin();
    let mut child = tokio::process::Command::new(&bin)
        .args(["--config", &path, "--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = http_get(&addr, "/healthz").await {
            break r;
        }
        assert!(Instant::now() < deadline, "the worker never served /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health.0, 200);
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    for check in [format!("database {}: ok", env.db.name), "object store: ok".into(), "broker: ok".into()] {
        assert!(body.contains(&check), "/readyz lacks {check:?}: {body}");
    }
    let opts = DistOptions { scope: Scope::default(), wait: true, progress: false, poll: Duration::from_millis(200) };
    let summary = distributed::run(&config, opts, CancellationToken::new()).await.unwrap();
    assert!(summary.all_finished(), "{summary}");
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    let line = format!("archiver_records_archived_total{{database=\"{}\",table=\"audit_log\"}} {}", env.db.name, summary.rows());
    assert!(metrics.contains(&line), "/metrics lacks {line:?}:\n{metrics}");
    for name in ["archiver_batch_duration_seconds_bucket{stage=\"delete\"", "archiver_bytes_uploaded_total", "archiver_batches_total", "archiver_items_in_flight", "archiver_last_success_timestamp_seconds", "archiver_db_connections_active"] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_fails_fast_naming_a_missing_bucket() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 10).await;
    let (_dir, path) = config_file(&env.yaml("", AUDIT_TABLE).replace("bucket: archive", "bucket: no-such-bucket"));
    let bin = worker_bin();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&bin).args(["--config", &path]).output(),
    )
    .await
    .expect("failed fast")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-bucket") && err.contains("does not exist"), "{err}");
    assert!(!err.contains(&env.s3.secret_key), "the secret key leaked: {err}");
}

/// An in-process OTLP collector: gRPC and HTTP/protobuf trace receivers keeping what they get,
/// as (service.name, span).
mod otlp {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    pub use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    #[derive(Clone, Default)]
    pub struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

    pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
    }

    pub fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
        match attr(attrs, key)? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    impl Collector {
        fn add(&self, req: ExportTraceServiceRequest) {
            let mut spans = self.0.lock().unwrap();
            for rs in req.resource_spans {
                let service = rs.resource.as_ref().and_then(|r| attr_str(&r.attributes, "service.name")).unwrap_or_default();
                for ss in rs.scope_spans {
                    spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }

        pub fn spans(&self) -> Vec<(String, Span)> {
            self.0.lock().unwrap().clone()
        }

        /// Serves OTLP/gRPC; returns the endpoint.
        pub async fn serve_grpc(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let incoming = futures::stream::unfold(listener, |l| async move {
                let next = l.accept().await.map(|(s, _)| s);
                Some((next, l))
            });
            let svc = TraceServiceServer::new(self.clone());
            tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
            format!("http://{addr}")
        }

        /// Serves OTLP/HTTP with protobuf bodies; returns the endpoint.
        pub async fn serve_http(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let me = self.clone();
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| async move {
                    me.add(ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body"));
                    ExportTraceServiceResponse { partial_success: None }.encode_to_vec()
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.add(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
        }
    }
}

/// One trace per work item from the coordinator process into the worker process: the worker's
/// `archive_item` span names the coordinator's `publish_item` span as its parent, and below it
/// every batch has a span per stage. The coordinator exports over gRPC, the worker over
/// HTTP/protobuf, and the worker's spans arrive only because SIGTERM flushes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_item_from_coordinator_to_worker_process() {
    use otlp::{attr_str, Collector};
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let defaults = "  range_interval: 60d\n  batch_size: 400";
    let (_dir, path) = config_file(&env.yaml(defaults, AUDIT_TABLE));
    let collector = Collector::default();
    let (grpc, http) = (collector.serve_grpc().await, collector.serve_http().await);
    let quiet = || std::process::Stdio::null();
    let mut worker = tokio::process::Command::new(worker_bin())
        .args(["--config", &path])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &http)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .stdout(quiet())
        .stderr(quiet())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let coordinator = tokio::process::Command::new(env!("CARGO_BIN_EXE_archiver-coordinator"))
        .args(["--config", &path, "run", "--wait"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &grpc)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "coordinator-under-test")
        .stdout(quiet())
        .stderr(quiet())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), coordinator).await.expect("the run finished").unwrap();
    assert!(status.success(), "run --wait: {status:?}");
    libc_kill(worker.id().unwrap() as i32);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.expect("the worker exited").unwrap();
    assert!(status.success(), "worker after SIGTERM: {status:?}");

    let items: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM archiver.work_items").fetch_all(&env.db.pool).await.unwrap();
    assert!(items.len() >= 2 && items.iter().all(|(s,)| s == "done"), "{items:?}");
    let (archived,): (i64,) = sqlx::query_as("SELECT coalesce(sum(row_count), 0)::bigint FROM archiver.batches")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(archived > 0);

    let spans = collector.spans();
    let named = |service: &str, name: &str| -> Vec<otlp::Span> {
        spans.iter().filter(|(s, sp)| s == service && sp.name == name).map(|(_, sp)| sp.clone()).collect()
    };
    let publishes = named("coordinator-under-test", "publish_item");
    let archives = named("archiver-worker", "archive_item");
    assert_eq!(publishes.len(), items.len(), "one publish span per item");
    assert_eq!(archives.len(), items.len(), "one archive_item span per item");
    let traces: std::collections::HashSet<_> = publishes.iter().map(|p| p.trace_id.clone()).collect();
    assert_eq!(traces.len(), items.len(), "each item has a trace of its own");
    for a in &archives {
        let parent = publishes
            .iter()
            .find(|p| p.span_id == a.parent_span_id)
            .unwrap_or_else(|| panic!("archive_item {:?} has no coordinator parent", attr_str(&a.attributes, "item")));
        assert_eq!(a.trace_id, parent.trace_id, "the worker continues the coordinator's trace");
        assert_eq!(attr_str(&a.attributes, "item"), attr_str(&parent.attributes, "item"));
    }
    // Batches below the items, stages below the batches, all in the item's trace.
    let batches = named("archiver-worker", "batch");
    assert!(!batches.is_empty());
    let mut rows = 0;
    for b in &batches {
        let item = archives.iter().find(|a| a.span_id == b.parent_span_id).expect("a batch belongs to an item");
        assert_eq!(b.trace_id, item.trace_id);
        assert_eq!(attr_str(&b.attributes, "table"), Some(format!("{}/public.audit_log", env.db.name)));
        assert!(attr_str(&b.attributes, "bytes").is_some_and(|v| v.parse::<i64>().unwrap() > 0), "{:?}", b.attributes);
        rows += attr_str(&b.attributes, "rows").expect("rows attribute").parse::<i64>().unwrap();
        let mut stages: Vec<String> =
            spans.iter().filter(|(_, s)| s.parent_span_id == b.span_id).map(|(_, s)| s.name.clone()).collect();
        stages.sort();
        assert_eq!(stages, ["checkpoint", "delete", "encode", "extract", "upload", "verify"], "stages of a batch");
    }
    assert_eq!(rows, archived, "the batch spans account for every archived row");
}

/// `archiver_rows_eligible` is what is left to archive: counted when the run plans, and again
/// when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_reports_rows_eligible() {
    let _broker = BROKER.read().await;
    let metrics = archiver_engine::observe::install_recorder();
    let env = Env::new().await;
    seeded(&env.db, 1_000).await;
    let config = env.config("  range_interval: 4000d", AUDIT_TABLE);
    let (eligible,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE created_at < now() - interval '90 days'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(eligible > 0);
    let gauge = |n: i64| format!("archiver_rows_eligible{{database=\"{}\",table=\"audit_log\"}} {n}\n", env.db.name);
    let opts = DistOptions { scope: Scope::default(), wait: false, progress: false, poll: Duration::from_millis(200) };
    distributed::run(&config, opts, CancellationToken::new()).await.unwrap();
    assert!(metrics.render().contains(&gauge(eligible)), "{}", metrics.render());
    let summary = run_with_workers(&config, 1).await;
    assert_eq!(summary.rows(), eligible);
    assert!(metrics.render().contains(&gauge(0)), "{}", metrics.render());
}

/// `run --wait` vacuums as standalone mode does, once the items ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_vacuums_where_configured() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seed_vacuum_tables(&env.db, 2_000).await;
    let config = env.config("", VACUUM_TABLES);
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished() && summary.rows() > 0, "{summary}");
    assert_eq!(manual_vacuums(&env.db, "audit_vacuumed", 1).await, 1);
    assert_eq!(manual_vacuums(&env.db, "audit_plain", 0).await, 0);
}

/// Messages lost after they were published (here: the queue purged) do not strand their items:
/// `run --wait` sees pending items with no message waiting, publishes them again, and the rows
/// are archived exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_messages_are_published_again() {
    let _broker = BROKER.read().await;
    let env = Env::new().await;
    seeded(&env.db, 2_000).await;
    let config = env.config("  range_interval: 30d", AUDIT_TABLE);
    let before = snapshot(&env.db, "audit_log").await;
    let opts = DistOptions { scope: Scope::default(), wait: false, progress: false, poll: Duration::from_millis(200) };
    distributed::run(&config, opts, CancellationToken::new()).await.unwrap();
    let broker = Broker::connect(config.queue.as_ref().unwrap(), "test purge").await.unwrap();
    let purged = broker.channel.queue_purge(env.queue.as_str().into(), lapin::options::QueuePurgeOptions::default()).await.unwrap();
    broker.close().await;
    assert!(purged >= 2, "the published messages are gone: {purged}");
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished(), "{summary}");
    assert_exactly_once(&before, &snapshot(&env.db, "audit_log").await, &*open_store(&config).await).await;
}
