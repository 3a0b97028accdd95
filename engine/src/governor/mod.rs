//! The load governor: how fast the archiver may work on one source database, decided from what
//! it measures there. One per source database in every process.
//!
//! Two parts:
//! - **The budget, by construction.** Every statement the pipeline runs on the database (a batch
//!   read, a delete chunk) is timed, and the next one waits until the archiver's database time
//!   since it started is at most `budget` seconds per second ([`Governor::spent`],
//!   [`Governor::acquire`]). The budget is shared: each process takes `budget / n`, where `n` is
//!   the number of archiver processes governing this database, counted from their governor
//!   connections in `pg_stat_activity` (a signal every process reads from the same server, so
//!   they converge to equal shares without talking to each other).
//! - **The health of everyone else** ([`control`]): once an interval the governor reads its probe
//!   (latency against its idle baseline), sessions waiting on our locks, and replication lag;
//!   the controller turns them into a factor on the budget, or a pause of writes.
//!
//! Its state shows in `/metrics` (`archiver_governor_*`), in one log line per change of state,
//! and on each batch span.

pub mod control;
pub mod signals;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::control::{Controller, Decision, Reason, Signals, State};
use self::signals::{Conn, Probe};
use crate::config::GovernorSettings;

/// What the governor decided last, and the share of the budget this process has.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub decision: Decision,
    /// Archiver processes governing this database (this one included).
    pub processes: u32,
    /// Database seconds per second this process may use now: budget x factor / processes.
    pub rate: f64,
    /// Why, in words (for the log and `status`).
    pub detail: String,
}

/// The governor of one source database in this process.
pub struct Governor {
    database: String,
    settings: GovernorSettings,
    primary: PgConnectOptions,
    replicas: Vec<PgConnectOptions>,
    next_free: Mutex<Instant>,
    status: watch::Sender<Status>,
    started: tokio::sync::OnceCell<()>,
    stop: CancellationToken,
}

impl Drop for Governor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Governor {
    /// A governor for `database` (not yet reading signals: that starts with the first work).
    pub fn new(database: &str, settings: GovernorSettings, primary: PgConnectOptions, replicas: Vec<PgConnectOptions>) -> Self {
        let decision = Decision { factor: control::START_FACTOR, state: State::Running, reason: Reason::Healthy };
        let status = Status { decision, processes: 1, rate: settings.budget * control::START_FACTOR, detail: String::new() };
        Governor {
            database: database.to_string(),
            settings,
            primary,
            replicas,
            next_free: Mutex::new(Instant::now()),
            status: watch::Sender::new(status),
            started: Default::default(),
            stop: CancellationToken::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Database seconds per second shared by every archiver process on the database.
    pub fn budget(&self) -> f64 {
        self.settings.budget
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The target duration of one delete transaction.
    pub fn delete_chunk_time(&self) -> Duration {
        self.settings.delete_chunk_time
    }

    /// The target duration of one read statement.
    pub fn read_page_time(&self) -> Duration {
        self.settings.read_page_time
    }

    async fn start(&self) {
        if !self.settings.enabled {
            return;
        }
        self.started
            .get_or_init(|| async {
                let watcher = self.watcher();
                let mut first = self.status.subscribe();
                tokio::spawn(watcher.run(self.stop.clone()));
                // Nothing is written before the first reading of the signals (a replica gate may
                // already be closed); a reading that never comes is not waited for long.
                let _ = tokio::time::timeout(Duration::from_secs(10), first.changed()).await;
            })
            .await;
    }

    fn watcher(&self) -> Watcher {
        Watcher {
            database: self.database.clone(),
            settings: self.settings.clone(),
            primary: Conn::new(self.primary.clone(), "primary".into()),
            replicas: self.replicas.iter().map(|o| Conn::new(o.clone(), format!("{}:{}", o.get_host(), o.get_port()))).collect(),
            status: self.status.clone(),
        }
    }

    /// Reads the signals once, as the governors of the processes archiving this database do, and
    /// what a governor would decide from them alone (`status`; no probe history, so the probe
    /// never slows it). `processes` counts the archiving processes, this one not included, and
    /// `rate` is each one's share of the budget at full speed.
    pub async fn look(&self) -> Status {
        let mut watcher = self.watcher();
        let (signals, governors) = watcher.read(&mut Probe::default()).await;
        let decision = Controller::new(self.settings.max_probe_ratio, self.settings.max_replica_lag).step(&signals);
        let processes = governors.saturating_sub(1);
        let rate = self.settings.budget / processes.max(1) as f64;
        let detail = describe(&signals, processes);
        Status { decision, processes, rate, detail }
    }

    /// Waits until this process may run its next statement on the database within its budget.
    pub async fn acquire(&self, stop: &CancellationToken) {
        if !self.settings.enabled {
            return;
        }
        self.start().await;
        let until = *self.next_free.lock().expect("pace lock");
        let wait = until.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
        }
    }

    /// Accounts a statement that ran for `took`: the next may start once `took` is `rate` of the
    /// time since this one started.
    pub fn spent(&self, took: Duration) {
        metrics::histogram!(crate::observe::names::DB_STATEMENT, "database" => self.database.clone()).record(took.as_secs_f64());
        if !self.settings.enabled {
            return;
        }
        let rate = self.status.borrow().rate.max(1e-4);
        let idle = took.mul_f64((1.0 / rate - 1.0).max(0.0)).min(Duration::from_secs(600));
        let mut next = self.next_free.lock().expect("pace lock");
        *next = (*next).max(Instant::now()) + idle;
    }

    /// Waits while a hard gate (replica lag) holds writes; returns at once when it is open.
    pub async fn writes_allowed(&self, stop: &CancellationToken) {
        if !self.settings.enabled {
            return;
        }
        self.start().await;
        let mut rx = self.status.subscribe();
        while rx.borrow_and_update().decision.state == State::Paused {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// The size of the next chunk of work (rows of a read page, keys of a delete transaction) so that
/// it takes about `target`, given that `size` took `took`: at most twice or half the last size a
/// step, so one slow statement does not swing it, and within `min..=max`.
pub fn next_size(size: usize, took: Duration, target: Duration, (min, max): (usize, usize)) -> usize {
    let scale = (target.as_secs_f64() / took.as_secs_f64().max(1e-4)).clamp(0.5, 2.0);
    ((size as f64 * scale) as usize).clamp(min, max.max(min))
}

/// The loop that reads the signals and publishes decisions.
struct Watcher {
    database: String,
    settings: GovernorSettings,
    primary: Conn,
    replicas: Vec<Conn>,
    status: watch::Sender<Status>,
}

impl Watcher {
    async fn run(mut self, stop: CancellationToken) {
        let mut controller = Controller::new(self.settings.max_probe_ratio, self.settings.max_replica_lag);
        let mut probe = Probe::default();
        let mut last_state = (State::Running, Reason::Healthy);
        self.check_privileges().await;
        loop {
            let (signals, processes) = self.read(&mut probe).await;
            let decision = controller.step(&signals);
            let rate = self.settings.budget * decision.factor / processes as f64;
            let detail = describe(&signals, processes);
            if (decision.state, decision.reason) != last_state {
                log_change(&self.database, &decision, &detail);
                last_state = (decision.state, decision.reason);
            }
            publish_metrics(&self.database, &decision, rate, &signals);
            self.status.send_replace(Status { decision, processes, rate, detail });
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Warns once when the role cannot see other sessions' wait events or replication lag: those
    /// signals would read as nothing.
    async fn check_privileges(&mut self) {
        let Ok(conn) = self.primary.get().await else { return };
        let seen: Result<(bool,), _> = sqlx::query_as(
            "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')
                    OR coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)",
        )
        .fetch_one(conn)
        .await;
        if let Ok((false,)) = seen {
            tracing::warn!(
                database = %self.database,
                "governor: this role cannot see other sessions' lock waits or replication lag; \
                 GRANT pg_monitor (or pg_read_all_stats) to it, or those signals read as nothing"
            );
        }
    }

    /// This interval's signals, and the number of processes sharing the budget. Each server gets
    /// a few intervals to answer; one that does not is taken as stalled (a replica) or skipped
    /// (the primary: the pipeline's own statements time out there).
    async fn read(&mut self, probe: &mut Probe) -> (Signals, u32) {
        let limit = (self.settings.interval * 3).max(Duration::from_secs(2));
        let sample = tracing::debug_span!("governor_sample", database = %self.database);
        match tokio::time::timeout(limit, self.read_all(probe).instrument(sample)).await {
            Ok(read) => read,
            Err(_) => {
                self.primary.reset();
                self.replicas.iter_mut().for_each(Conn::reset);
                let s = Signals { replica_stalled: Some(format!("no answer within {}s", limit.as_secs())), ..Default::default() };
                (s, 1)
            }
        }
    }

    async fn read_all(&mut self, probe: &mut Probe) -> (Signals, u32) {
        let mut s = Signals::default();
        let mut processes = 1;
        match self.primary.probe().await {
            Ok(latency) => s.probe_ratio = Some(probe.add(latency)),
            Err(e) => {
                tracing::debug!(database = %self.database, error = %e, "governor probe failed");
                self.primary.reset();
            }
        }
        if let Ok(conn) = self.primary.get().await {
            match signals::primary(conn).await {
                Ok((waiters, governors, lag)) => {
                    s.lock_waiters = waiters;
                    processes = governors;
                    s.replica_lag = lag;
                }
                Err(_) => self.primary.reset(),
            }
        }
        for r in &mut self.replicas {
            let read = match r.get().await {
                Ok(conn) => signals::replica(conn).await,
                Err(e) => Err(e),
            };
            match read {
                Ok((true, _)) => s.replica_stalled = Some(format!("replica {}: replay is paused", r.name)),
                Ok((false, lag)) => s.replica_lag = Some(s.replica_lag.map_or(lag, |l| l.max(lag))),
                Err(e) => {
                    s.replica_stalled = Some(format!("replica {} cannot be read: {e}", r.name));
                    r.reset();
                }
            }
        }
        (s, processes)
    }
}

fn describe(s: &Signals, processes: u32) -> String {
    let mut parts = vec![format!("{processes} archiver process(es) share the budget")];
    if let Some(r) = s.probe_ratio {
        parts.push(format!("probe {r:.1}x its idle baseline"));
    }
    if s.lock_waiters > 0 {
        parts.push(format!("{} session(s) wait on the archiver's locks", s.lock_waiters));
    }
    if let Some(l) = s.replica_lag {
        parts.push(format!("replica lag {:.1}s", l.as_secs_f64()));
    }
    if let Some(why) = &s.replica_stalled {
        parts.push(why.clone());
    }
    parts.join(", ")
}

fn log_change(database: &str, d: &Decision, detail: &str) {
    match d.state {
        State::Paused => tracing::warn!(
            database,
            reason = d.reason.as_str(),
            "governor: holding writes (deletes, checkpoints) until the replicas catch up: {detail}"
        ),
        State::Throttled => tracing::info!(database, reason = d.reason.as_str(), factor = d.factor, "governor: slowing down: {detail}"),
        State::Running => tracing::info!(database, factor = d.factor, "governor: running: {detail}"),
    }
}

fn publish_metrics(database: &str, d: &Decision, rate: f64, s: &Signals) {
    use crate::observe::names;
    let db = database.to_string();
    metrics::gauge!(names::GOVERNOR_RATE, "database" => db.clone()).set(rate);
    metrics::gauge!(names::GOVERNOR_FACTOR, "database" => db.clone()).set(d.factor);
    for st in [State::Running, State::Throttled, State::Paused] {
        metrics::gauge!(names::GOVERNOR_STATE, "database" => db.clone(), "state" => st.as_str()).set(if st == d.state { 1.0 } else { 0.0 });
    }
    for r in [Reason::Healthy, Reason::ProbeLatency, Reason::LockWaits, Reason::ReplicaLag, Reason::ReplicaStalled] {
        metrics::gauge!(names::GOVERNOR_REASON, "database" => db.clone(), "reason" => r.as_str()).set(if r == d.reason { 1.0 } else { 0.0 });
    }
    if let Some(r) = s.probe_ratio {
        metrics::gauge!(names::GOVERNOR_PROBE_RATIO, "database" => db.clone()).set(r);
    }
    metrics::gauge!(names::REPLICA_LAG, "database" => db).set(s.replica_lag.map_or(0.0, |l| l.as_secs_f64()));
}

#[cfg(test)]
mod tests {
    use super::next_size;
    use std::time::Duration;

    #[test]
    fn a_chunk_is_sized_toward_its_target_time_a_bounded_step_at_a_time() {
        let ms = Duration::from_millis;
        assert_eq!(next_size(250, ms(1), ms(2), (50, 10_000)), 500, "twice as fast as wanted: twice as many");
        assert_eq!(next_size(1_000, ms(3), ms(2), (50, 10_000)), 666);
        assert_eq!(next_size(1_000, ms(40), ms(2), (50, 10_000)), 500, "one slow statement halves it, no more");
        assert_eq!(next_size(8_000, Duration::ZERO, ms(2), (50, 10_000)), 10_000, "never past the batch");
        assert_eq!(next_size(60, ms(100), ms(2), (50, 10_000)), 50, "never under the least");
        assert_eq!(next_size(300, ms(1), ms(2), (50, 40)), 50, "a batch smaller than the least page reads its least");
    }
}
