//! What every scenario needs: a scratch database, object storage, the archiver's binaries and
//! configuration, and the check that no row was lost or archived twice.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use archiver_proto::Compression;
use archiver_testkit::config::{ConfigBuilder, Queue, Storage, Table};
use archiver_testkit::{S3Server, TestDb};
use archiver_engine::pipeline::encode;
use serde::Serialize;

/// Where archived objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    /// A real S3 server (`s3s-fs`, started for the run; it validates checksums).
    S3s,
    /// A local directory inside the output directory.
    Local,
}

/// Options of the measured scenarios (not `seed`, `distributed` or `verdict`): where the report
/// goes, the storage, and the archiver's binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Where the report, its JSON and its plots go; default
    /// `loadtest-results/<scenario>-<UTC time>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where archived objects go.
    #[arg(long, value_enum, default_value_t = StorageKind::S3s)]
    pub storage: StorageKind,
    /// Directory of `archiver-coordinator` and `archiver-worker`; default: next to this binary.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The archiver's load governor: `on` (its defaults), `off`, a budget in database seconds
    /// per second (e.g. `0.1`), or a `defaults.governor` section as a YAML flow mapping (e.g.
    /// `{budget: 0.1, delete_chunk_time: 10ms}`). Default: on, except for `compare` and
    /// `large-batch`, which measure raw speed against the raw baseline, and `restore`, whose
    /// archiving is only its set-up (off).
    #[arg(long, value_parser = parse_governor)]
    pub governor: Option<Governor>,
}

/// `--governor`.
#[derive(Debug, Clone, PartialEq)]
pub enum Governor {
    On,
    Off,
    Budget(f64),
    Section(String),
}

impl Governor {
    /// The `defaults.governor` setting, as YAML.
    pub fn yaml(&self) -> String {
        match self {
            Governor::On => "{enabled: true}".into(),
            Governor::Off => "{enabled: false}".into(),
            Governor::Budget(b) => format!("{{enabled: true, budget: {b}}}"),
            Governor::Section(yaml) => yaml.clone(),
        }
    }
}

fn parse_governor(s: &str) -> Result<Governor, String> {
    match s {
        "on" => Ok(Governor::On),
        "off" => Ok(Governor::Off),
        section if section.trim_start().starts_with('{') => Ok(Governor::Section(section.to_string())),
        b => b
            .parse::<f64>()
            .ok()
            .filter(|b| *b > 0.0)
            .map(Governor::Budget)
            .ok_or_else(|| format!("{s:?}: expected on, off or a budget above 0 (database seconds per second)")),
    }
}

/// RabbitMQ, for the scenarios that run workers over a queue (and `distributed`).
#[derive(Debug, Clone, clap::Args)]
pub struct Amqp {
    /// RabbitMQ URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp: String,
}

/// One scenario's world: a scratch database on PGHOST/PGPORT/PGUSER (dropped at the end), its
/// storage, a queue name of its own, the binaries and the output directory.
pub struct Env {
    pub db: TestDb,
    pub s3: Option<S3Server>,
    pub out: PathBuf,
    /// RabbitMQ, for the scenarios that run workers.
    pub amqp: Option<String>,
    pub queue: String,
    pub coordinator: PathBuf,
    pub worker: PathBuf,
    storage: StorageKind,
    /// `--governor`, if given.
    pub governor: Option<Governor>,
}

impl Env {
    /// `amqp`: RabbitMQ, for a scenario that runs workers over a queue.
    pub async fn new(scenario: &str, common: &Common, amqp: Option<&Amqp>) -> anyhow::Result<Env> {
        let dir = match &common.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?.parent().context("binary directory")?.to_path_buf(),
        };
        let (coordinator, worker) = (dir.join("archiver-coordinator"), dir.join("archiver-worker"));
        // Workers run only over a queue: without one, only the coordinator is needed.
        let needed = if amqp.is_some() { vec![&coordinator, &worker] } else { vec![&coordinator] };
        for b in needed {
            if !b.is_file() {
                bail!("{} not found; build it with `cargo build --release --workspace`, or pass --bin-dir", b.display());
            }
        }
        let out = match &common.out {
            Some(o) => o.clone(),
            None => PathBuf::from("loadtest-results").join(format!("{scenario}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))),
        };
        std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
        let (db, s3) = match common.storage {
            StorageKind::S3s => {
                let (db, s3) = tokio::join!(TestDb::new(), S3Server::start());
                (db, Some(s3))
            }
            StorageKind::Local => (TestDb::new().await, None),
        };
        let queue = format!("archiver.loadtest.{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let amqp = amqp.map(|a| a.amqp.clone());
        Ok(Env { db, s3, out, amqp, queue, coordinator, worker, storage: common.storage, governor: common.governor.clone() })
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.out.join("archive")
    }

    /// A configuration for the audit tables `tables`: this scenario's storage (objects under
    /// `load`) and database, `retention_days: 90`. Add settings and the queue, then `write_config`.
    pub fn config(&self, tables: &[String]) -> anyhow::Result<ConfigBuilder> {
        let storage = match &self.s3 {
            Some(s3) => Storage::s3(s3, "load"),
            None => Storage::local(std::path::absolute(self.archive_dir())?),
        };
        let mut builder = ConfigBuilder::new().storage(storage).set_default("retention_days", 90).database(&self.db);
        if let Some(g) = &self.governor {
            builder = builder.set_default("governor", g.yaml());
        }
        Ok(builder.tables(tables.iter().map(|t| Table::audit(t))))
    }

    /// This scenario's work queue, failed attempts retried after 2 s.
    pub fn queue(&self) -> anyhow::Result<Queue> {
        let amqp = self.amqp.as_deref().context("this scenario runs no queue (no --amqp)")?;
        Ok(Queue::new(amqp, &self.queue).set("retry_delay", "2s"))
    }

    /// Writes `config` to `config.yaml` in the output directory; returns its path.
    pub fn write_config(&self, config: &ConfigBuilder) -> anyhow::Result<PathBuf> {
        Ok(config.write(self.out.join("config.yaml"))?)
    }

    fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        Ok(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(self.out.join(name))?))
    }

    /// `archiver-coordinator --config C args…`, its log appended to `coordinator.log`.
    pub fn coordinator(&self, config: &Path, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(&self.coordinator);
        cmd.arg("--config").arg(config).args(args).env("RUST_LOG", "warn").stdout(self.log("coordinator.log")?);
        cmd.stderr(self.log("coordinator.log")?);
        Ok(cmd)
    }

    /// Runs the coordinator to the end; an error names the log to read.
    pub fn run_coordinator(&self, config: &Path, args: &[&str]) -> anyhow::Result<()> {
        let status = self.coordinator(config, args)?.status()?;
        if !status.success() {
            bail!("archiver-coordinator {} failed ({status}); see {}", args.join(" "), self.out.join("coordinator.log").display());
        }
        Ok(())
    }

    /// Starts an `archiver-worker` serving its metrics on `metrics_port`, its log in `worker-N.log`.
    pub fn spawn_worker(&self, config: &Path, n: usize, concurrency: usize, metrics_port: u16) -> anyhow::Result<Child> {
        let child = Command::new(&self.worker)
            .arg("--config")
            .arg(config)
            .args(["--concurrency", &concurrency.to_string(), "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log(&format!("worker-{n}.log"))?)
            .spawn()?;
        Ok(child)
    }

    pub fn describe_storage(&self) -> &'static str {
        match self.storage {
            StorageKind::S3s => "S3 (s3s-fs on loopback)",
            StorageKind::Local => "local directory",
        }
    }

    /// Rows archived and deleted so far, by the checkpoint store (0 before the first run).
    pub async fn archived_rows(&self) -> i64 {
        sqlx::query_as::<_, (i64,)>("SELECT coalesce(sum(row_count), 0)::bigint FROM archiver.batches WHERE state = 'deleted'")
            .fetch_one(&self.db.pool)
            .await
            .map(|r| r.0)
            .unwrap_or(0)
    }

    /// Work items that failed.
    pub async fn failed_items(&self) -> i64 {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM archiver.work_items WHERE state = 'failed'")
            .fetch_one(&self.db.pool)
            .await
            .map(|r| r.0)
            .unwrap_or(0)
    }

    /// Rows past the retention cutoff still in `table`.
    pub async fn eligible_left(&self, table: &str) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table} WHERE created_at < now() - interval '90 days'"))
            .fetch_one(&self.db.pool)
            .await?;
        Ok(n)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(amqp) = &self.amqp {
            archiver_testkit::delete_queues(amqp, &self.queue);
        }
    }
}

/// Asks a child to stop (SIGTERM) and waits up to `grace`; true if it exited cleanly.
pub fn stop(child: &mut Child, grace: Duration) -> bool {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// The sum of a counter over all its label sets, from a Prometheus text page.
pub fn counter_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/metrics` of a process serving on `port`.
pub async fn scrape(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    Ok(buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Waits until a process serves `/metrics` (it passed its start-up checks).
pub async fn wait_ready(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if scrape(port).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start-up ({status}); see its log");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not come up within 60 s")
}

/// Whether every row is accounted for: each id ever inserted is either still in its table or
/// archived, never both, and archived at most once.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Correctness {
    /// Rows ever inserted (the tables' sequences).
    pub inserted: u64,
    pub archived: u64,
    pub remaining: u64,
    /// Gone from the table and not in the archive.
    pub lost: u64,
    /// Archived more than once.
    pub duplicated: u64,
    /// Archived and still in the table.
    pub archived_and_remaining: u64,
    /// Eligible rows still in the table when the scenario ended.
    pub eligible_left: u64,
}

impl Correctness {
    /// Counts one table: ids `1..=last` were inserted, `remaining` are still in it, `archived`
    /// were read back from the store (duplicates included).
    fn add(&mut self, last: i64, remaining: &HashSet<i64>, archived: Vec<i64>) {
        let mut seen = HashSet::new();
        for id in archived {
            if !seen.insert(id) {
                self.duplicated += 1;
            }
            if remaining.contains(&id) {
                self.archived_and_remaining += 1;
            }
        }
        self.inserted += last as u64;
        self.archived += seen.len() as u64;
        self.remaining += remaining.len() as u64;
        self.lost += (1..=last).filter(|id| !remaining.contains(id) && !seen.contains(id)).count() as u64;
    }

    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.archived_and_remaining == 0 && self.eligible_left == 0
    }
}

/// Reads back every archived object of `tables` and checks each id of each table.
pub async fn verify(env: &Env, config: &Path, tables: &[String]) -> anyhow::Result<Correctness> {
    let cfg = archiver_engine::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?.config;
    let store = archiver_engine::storage::open(&cfg).await?;
    let mut archived: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for key in store.list("").await? {
        if key.contains("/_manifests/") {
            continue;
        }
        let compression = if key.ends_with(".zst") { Compression::Zstd } else { Compression::Gzip };
        let body = store.get(&key).await?.with_context(|| format!("{key} listed but missing"))?;
        let text = encode::decode(compression, &body)?;
        let table = tables.iter().find(|t| key.contains(&format!("/public.{t}/"))).cloned().unwrap_or_default();
        let ids = archived.entry(table).or_default();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: serde_json::Value = serde_json::from_slice(line).with_context(|| format!("a line of {key}"))?;
            ids.push(row["id"].as_i64().with_context(|| format!("a row of {key} without an integer id"))?);
        }
    }
    let mut c = Correctness::default();
    for t in tables {
        let (last,): (i64,) = sqlx::query_as(&format!("SELECT last_value FROM {t}_id_seq")).fetch_one(&env.db.pool).await?;
        let remaining: HashSet<i64> =
            sqlx::query_as::<_, (i64,)>(&format!("SELECT id FROM {t}")).fetch_all(&env.db.pool).await?.into_iter().map(|r| r.0).collect();
        c.add(last, &remaining, archived.remove(t).unwrap_or_default());
        c.eligible_left += env.eligible_left(t).await? as u64;
    }
    if let Some((t, ids)) = archived.into_iter().find(|(_, ids)| !ids.is_empty()) {
        bail!("the archive holds {} rows of a table the scenario did not create ({t:?})", ids.len());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_wrong_row_is_counted() {
        let mut c = Correctness::default();
        // Ids 1..=6: 1, 2 archived; 3 archived twice; 4 archived and still there; 5 still there;
        // 6 neither: lost.
        c.add(6, &HashSet::from([4, 5]), vec![1, 2, 3, 3, 4]);
        assert_eq!((c.inserted, c.archived, c.remaining), (6, 4, 2));
        assert_eq!((c.lost, c.duplicated, c.archived_and_remaining), (1, 1, 1));
        assert!(!c.ok());
        let mut fine = Correctness::default();
        fine.add(3, &HashSet::from([3]), vec![1, 2]);
        assert!(fine.ok(), "{fine:?}");
    }
}
