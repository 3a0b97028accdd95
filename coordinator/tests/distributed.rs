//! Distributed mode against real RabbitMQ, PostgreSQL and an S3 server: planning, publishing and
//! archiving exactly once, hostile messages, re-runs, a broker restart, ad-hoc ranges. Every test
//! has its own database, S3 server and queue names, so tests run in parallel; the broker-restart
//! test restarts a RabbitMQ node of its own (testkit's `RabbitNode`), never the machine's broker.
//! Workers that die or are stopped: `distributed_crash.rs`; health, metrics and traces:
//! `distributed_observe.rs`.

mod common;

use std::time::{Duration, Instant};

use archiver_coordinator::distributed;
use archiver_engine::queue::Broker;
use archiver_engine::setup::Scope;
use archiver_testkit::TestDb;
use common::distributed_env::*;
use common::*;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;

fn two_tables() -> [Table; 2] {
    [Table::audit("audit_a"), Table::audit("audit_b")]
}

async fn seed_two(db: &TestDb, rows: u64) {
    for t in ["audit_a", "audit_b"] {
        archiver_testkit::seed::create_audit_table(&db.pool, "public", t).await.unwrap();
        archiver_testkit::seed::insert_rows(&db.pool, "public", t, rows, 200.0, 0.0).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_archive_several_tables_exactly_once() {
    let env = Env::new().await;
    seed_two(&env.db, 3_000).await;
    let config = load(&env.builder().defaults("batch_size: 500").tables(two_tables()));
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
async fn malformed_unknown_and_hostile_messages_are_dead_lettered_and_touch_nothing() {
    let env = Env::new().await;
    seeded(&env.db, 500).await;
    let config = load(&env.builder().table(audit_table()));
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
    let env = Env::new().await;
    seeded(&env.db, 4_000).await;
    let config = load(&env.builder().defaults("batch_size: 200\nsleep_between_batches: 0.05").table(audit_table()));
    let before = snapshot(&env.db, "audit_log").await;
    let opts = || dist_opts(false, 300);
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
    // A node of the test's own: the machine's broker is never stopped.
    let node = archiver_testkit::rabbit::RabbitNode::start().await;
    let env = Env::on(&node.url()).await;
    seeded(&env.db, 3_000).await;
    let config = load(&env.builder().defaults("batch_size: 100\nsleep_between_batches: 0.05").table(audit_table()));
    let before = snapshot(&env.db, "audit_log").await;
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(&config, &shutdown);
    let run = {
        let config = config.clone();
        tokio::spawn(async move { run_wait(&config).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    node.ctl(&["stop_app"]).await;
    node.ctl(&["start_app"]).await;
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
    let env = Env::new().await;
    seeded(&env.db, 2_000).await;
    let config = load(&env.builder().table(audit_table()));
    let now = chrono::Utc::now();
    let d = |days| now - chrono::Duration::days(days);
    let err = distributed::enqueue(&config, &env.db.name, "nope", d(150), d(120)).await.unwrap_err();
    assert!(err.to_string().contains("not in the configuration"), "{err}");
    let err = distributed::enqueue(&config, &env.db.name, "audit_log", d(120), d(150)).await.unwrap_err();
    assert!(err.to_string().contains("is not before"), "{err}");
    let err = distributed::enqueue(&config, &env.db.name, "audit_log", d(100), d(10)).await.unwrap_err();
    assert!(err.to_string().contains("retention cutoff"), "{err}");
    let (_queue, items) = distributed::enqueue(&config, &env.db.name, "audit_log", d(150), d(120)).await.unwrap();
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

/// `run --wait` vacuums as standalone mode does, once the items ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_vacuums_where_configured() {
    let env = Env::new().await;
    seed_vacuum_tables(&env.db, 2_000).await;
    let config = load(&env.builder().tables(vacuum_tables()));
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
    let env = Env::new().await;
    seeded(&env.db, 2_000).await;
    let config = load(&env.builder().defaults("range_interval: 30d").table(audit_table()));
    let before = snapshot(&env.db, "audit_log").await;
    let opts = dist_opts(false, 200);
    distributed::run(&config, opts, CancellationToken::new()).await.unwrap();
    let broker = Broker::connect(config.queue.as_ref().unwrap(), "test purge").await.unwrap();
    let purged = broker.channel.queue_purge(env.queue.as_str().into(), lapin::options::QueuePurgeOptions::default()).await.unwrap();
    broker.close().await;
    assert!(purged >= 2, "the published messages are gone: {purged}");
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished(), "{summary}");
    assert_exactly_once(&before, &snapshot(&env.db, "audit_log").await, &*open_store(&config).await).await;
}
