//! The governor against a real PostgreSQL: two processes on one database split the budget
//! between them, and together stay within it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_engine::config::{GovernorConfig, GovernorSettings};
use archiver_engine::governor::Governor;
use archiver_testkit::TestDb;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

fn settings(budget: f64) -> GovernorSettings {
    let mut s = GovernorConfig::default().over(&GovernorConfig::default());
    s.budget = budget;
    s.interval = Duration::from_millis(100);
    // These tests are about the budget and its sharing, not the probe (the controller's unit
    // tests cover that): a test machine busy with other suites must not slow the governors down.
    s.max_probe_ratio = 1_000.0;
    s
}

fn options(db: &TestDb) -> PgConnectOptions {
    (*db.pool.connect_options()).clone()
}

/// Runs `pg_sleep(work)` statements paced by `g` until `until`; returns the database time used.
async fn busy(g: Arc<Governor>, pool: sqlx::PgPool, work: Duration, until: Instant) -> Duration {
    let stop = CancellationToken::new();
    let mut used = Duration::ZERO;
    while Instant::now() < until {
        g.acquire(&stop).await;
        let t = Instant::now();
        sqlx::query("SELECT pg_sleep($1)").bind(work.as_secs_f64()).execute(&pool).await.unwrap();
        let took = t.elapsed();
        g.spent(took);
        used += took;
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_budget_and_together_stay_within_it() {
    let db = TestDb::new().await;
    let budget = 0.2;
    // Two governors on one database: what two archiver processes would have.
    let a = Arc::new(Governor::new(&db.name, settings(budget), options(&db), Vec::new()));
    let b = Arc::new(Governor::new(&db.name, settings(budget), options(&db), Vec::new()));
    let stop = CancellationToken::new();
    a.acquire(&stop).await;
    b.acquire(&stop).await;
    // Let both see each other and ramp up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.status().processes != 2 || b.status().processes != 2 || a.status().decision.factor < 1.0 || b.status().decision.factor < 1.0 {
        assert!(Instant::now() < deadline, "the governors never saw each other: {:?} / {:?}", a.status(), b.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for g in [&a, &b] {
        let s = g.status();
        assert!((s.rate - budget * s.decision.factor / 2.0).abs() < 1e-9, "{s:?}");
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(4);
    let work = Duration::from_millis(20);
    let (ua, ub) = tokio::join!(busy(a.clone(), db.pool.clone(), work, until), busy(b.clone(), db.pool.clone(), work, until));
    let elapsed = started.elapsed().as_secs_f64();
    let share = (ua + ub).as_secs_f64() / elapsed;
    eprintln!("database time {:.3}s + {:.3}s over {elapsed:.2}s: {share:.3} of a budget of {budget}", ua.as_secs_f64(), ub.as_secs_f64());
    // One statement each may start before the pacing has anything to go on.
    assert!(share <= budget * 1.25 + 2.0 * work.as_secs_f64() / elapsed, "over budget: {share:.3}");
    assert!(share >= budget * 0.5, "the budget is used, not wasted: {share:.3}");
    let fair = ua.as_secs_f64() / (ua + ub).as_secs_f64();
    assert!((0.3..=0.7).contains(&fair), "each takes about half: {fair:.2}");
}

#[tokio::test]
async fn off_it_never_waits() {
    let db = TestDb::new().await;
    let mut s = settings(0.01);
    s.enabled = false;
    let g = Governor::new(&db.name, s, options(&db), Vec::new());
    let stop = CancellationToken::new();
    g.spent(Duration::from_secs(5));
    let t = Instant::now();
    g.acquire(&stop).await;
    g.writes_allowed(&stop).await;
    assert!(t.elapsed() < Duration::from_secs(1));
}
