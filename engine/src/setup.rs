//! Start-up: connect to everything a run needs and check it before any work.
//!
//! Input: the configuration and which tables are in scope. Output: the object store, a pool and
//! checkpoint store per source database, and every table in scope inspected. Invariant: if
//! anything is wrong (unreachable database, missing table, missing bucket, a table without a
//! unique key) the error names each problem and nothing has been changed.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use crate::config::{Config, DatabaseConfig, TableSettings};
use crate::governor::Governor;
use crate::source::db;
use crate::checkpoint::CheckpointStore;
use crate::source::Source;
use crate::storage::{self, ObjectStore};
use crate::source::table::TableInfo;

/// Which tables a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub database: Option<String>,
    pub table: Option<String>,
}

impl Scope {
    fn admits(&self, t: &TableSettings) -> bool {
        self.database.as_ref().is_none_or(|d| *d == t.database)
            && self.table.as_ref().is_none_or(|n| *n == t.table || *n == format!("{}.{}", t.schema, t.table))
    }
}

#[derive(Clone)]
pub struct Prepared {
    pub store: Arc<dyn ObjectStore>,
    pub sources: HashMap<String, Source>,
    pub tables: Vec<Arc<TableInfo>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SetupError(pub Vec<String>);

/// Connects and checks. `writable`: create the checkpoint tables and check that the store accepts
/// writes; a dry run passes false and changes nothing.
pub async fn prepare(config: &Config, scope: &Scope, writable: bool) -> Result<Prepared, SetupError> {
    let tables: Vec<TableSettings> = config.tables().into_iter().filter(|t| scope.admits(t)).collect();
    if tables.is_empty() {
        return Err(SetupError(vec![format!(
            "no configured table matches database={} table={}",
            scope.database.as_deref().unwrap_or("*"),
            scope.table.as_deref().unwrap_or("*")
        )]));
    }
    let mut problems = Vec::new();
    let store = storage::open(config).await.map_err(|e| SetupError(vec![e.to_string()]))?;
    if writable {
        if let Err(e) = store.check().await {
            problems.push(format!("object store {}: {e}", store.describe()));
        }
    }
    let shared = match &config.checkpoint.url {
        Some(url) => {
            let opts = db::url_options(url).map_err(|e| SetupError(vec![format!("checkpoint.url: {e}")]))?;
            if let Err(e) = db::probe(&opts, std::time::Duration::from_secs(10)).await {
                problems.push(format!("checkpoint store (checkpoint.url) {e}"));
            }
            Some(db::pool(opts, config.defaults.connection_pool_size.max(2), config.defaults.connection_idle_timeout.0))
        }
        None => None,
    };
    // One store value for all sources sharing `checkpoint.url`, so the process holds one presence there.
    let shared = shared.map(|p| CheckpointStore::new(p, &config.checkpoint.schema, false));
    let mut sources = HashMap::new();
    for dbc in &config.databases {
        if !tables.iter().any(|t| t.database == dbc.name) {
            continue;
        }
        match connect_source(config, dbc, shared.as_ref()).await {
            Ok(source) => {
                sources.insert(dbc.name.clone(), source);
            }
            Err(e) => problems.extend(e),
        }
    }
    let mut infos = Vec::new();
    for t in &tables {
        let Some(source) = sources.get(&t.database) else { continue };
        match TableInfo::inspect(&source.pool, t).await {
            Ok(info) => infos.push(Arc::new(info)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if writable && problems.is_empty() {
        if let Some(cp) = &shared {
            if let Err(e) = cp.migrate().await {
                problems.push(format!("checkpoint store: cannot prepare its tables: {e}"));
            }
        } else {
            for (name, s) in &sources {
                if let Err(e) = s.checkpoints.migrate().await {
                    problems.push(format!("database {name}: cannot prepare the checkpoint tables: {e}"));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(SetupError(problems));
    }
    Ok(Prepared { store, sources, tables: infos })
}

/// Connects to one source database (and its read replica, if any) and sets up its governor.
async fn connect_source(config: &Config, dbc: &DatabaseConfig, shared: Option<&CheckpointStore>) -> Result<Source, Vec<String>> {
    let opts = db::source_options(dbc).map_err(|e| vec![e])?;
    db::probe(&opts, Duration::from_secs(10)).await.map_err(|e| vec![format!("database {}: {e}", dbc.name)])?;
    let size = dbc.connection_pool_size.unwrap_or(config.defaults.connection_pool_size).max(2);
    let idle = config.defaults.connection_idle_timeout.0;
    let settings = dbc.governor.over(&config.defaults.governor);
    let mut watched = Vec::new();
    let timeout = config.defaults.statement_timeout.0;
    // Batches are read in a pool of their own (`db::read_pool`). On the primary it takes half of
    // the database's connections, so a process opens no more of them than `connection_pool_size`;
    // a read replica has a pool of that size of its own.
    let (main, read_pool) = match &dbc.read_replica {
        Some(r) => {
            let ropts = db::replica_options(dbc, r, &opts).map_err(|e| vec![e])?;
            let named = |e| vec![format!("database {} read_replica: {e}", dbc.name)];
            let conn = db::connect(&ropts, Duration::from_secs(10)).await.map_err(named)?;
            db::standby(conn, &ropts).await.map_err(named)?;
            watched.push(ropts.clone());
            (size, db::read_pool(ropts, size, idle, timeout))
        }
        None => (size - size / 2, db::read_pool(opts.clone(), size / 2, idle, timeout)),
    };
    let pool = db::pool(opts.clone(), main, idle);
    for (i, url) in settings.replicas.iter().enumerate() {
        watched.push(db::url_options(url).map_err(|e| vec![format!("database {} governor.replicas[{i}]: {e}", dbc.name)])?);
    }
    let checkpoints = match shared {
        Some(cp) => cp.clone(),
        None => CheckpointStore::new(pool.clone(), &config.checkpoint.schema, true),
    };
    let governor = Arc::new(Governor::new(&dbc.name, settings, opts, watched));
    Ok(Source { read_pool, replica: dbc.read_replica.is_some(), pool, checkpoints, governor })
}

impl Scope {
    /// The configured tables this scope admits.
    pub fn tables(&self, config: &Config) -> Vec<TableSettings> {
        config.tables().into_iter().filter(|t| self.admits(t)).collect()
    }
}

/// The checkpoint store of each configured database that `scope` names, or why it cannot be
/// reached; without `checkpoint.url` each database keeps its own. Nothing is created.
pub async fn checkpoint_stores(config: &Config, scope: &Scope) -> HashMap<String, Result<CheckpointStore, String>> {
    let timeout = Duration::from_secs(5);
    let schema = &config.checkpoint.schema;
    let shared = match &config.checkpoint.url {
        Some(url) => Some(match db::url_options(url) {
            Ok(opts) => match db::probe(&opts, timeout).await {
                Ok(()) => Ok(CheckpointStore::new(db::pool(opts, 2, Duration::from_secs(30)), schema, false)),
                Err(e) => Err(format!("checkpoint store (checkpoint.url) {e}")),
            },
            Err(e) => Err(format!("checkpoint.url: {e}")),
        }),
        None => None,
    };
    let mut out = HashMap::new();
    for dbc in config.databases.iter().filter(|d| scope.database.as_ref().is_none_or(|n| *n == d.name)) {
        let store = match &shared {
            Some(s) => s.clone(),
            None => match db::source_options(dbc) {
                Ok(opts) => match db::probe(&opts, timeout).await {
                    Ok(()) => Ok(CheckpointStore::new(db::pool(opts, 2, Duration::from_secs(30)), schema, true)),
                    Err(e) => Err(format!("database {}: {e}", dbc.name)),
                },
                Err(e) => Err(format!("database {}: {e}", dbc.name)),
            },
        };
        out.insert(dbc.name.clone(), store);
    }
    out
}
