//! Connections to the source databases and the checkpoint store.
//!
//! Every connection says `application_name = 'audit_archiver'` (operators' monitoring filters on
//! it) and runs in UTC, so day boundaries and `timestamp without time zone` columns read the same
//! on every machine.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{redact_url, DatabaseConfig, ReadReplicaConfig};

pub const APPLICATION_NAME: &str = "audit_archiver";

/// Quotes an identifier for SQL: `Audit "Log"` -> `"Audit ""Log"""`. Every identifier from the
/// configuration goes through here; none is ever pasted into SQL bare.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Connection options for a configured database. The password is read from `password_env` here,
/// at connect time, and never stored elsewhere.
pub fn source_options(db: &DatabaseConfig) -> Result<PgConnectOptions, String> {
    let mut opts = match &db.url {
        Some(url) => PgConnectOptions::from_str(url)
            .map_err(|e| format!("database {}: invalid url {}: {e}", db.name, redact_url(url)))?,
        None => {
            let mut o = PgConnectOptions::new_without_pgpass().host(db.host.as_deref().unwrap_or("localhost"));
            if let Some(port) = db.port {
                o = o.port(port);
            }
            if let Some(user) = &db.user {
                o = o.username(user);
            }
            o.database(&db.name)
        }
    };
    if let Some(var) = &db.password_env {
        opts = opts.password(&env_password(var, &format!("database {}", db.name))?);
    } else if let Some(pw) = &db.password {
        opts = opts.password(pw);
    }
    Ok(with_session(opts))
}

/// The password in the environment variable `var` (a `password_env`), read at connect time; the
/// error names `what` it is for.
fn env_password(var: &str, what: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("{what}: environment variable {var} (password_env) is not set"))
}

/// Options for a database's read replica: its own URL, or the primary's options with the host,
/// port, user and password it sets.
pub fn replica_options(db: &DatabaseConfig, r: &ReadReplicaConfig, primary: &PgConnectOptions) -> Result<PgConnectOptions, String> {
    if let Some(url) = &r.url {
        return url_options(url).map_err(|e| format!("database {} read_replica: {e}", db.name));
    }
    let mut o = primary.clone();
    if let Some(h) = &r.host {
        o = o.host(h);
    }
    if let Some(p) = r.port {
        o = o.port(p);
    }
    if let Some(u) = &r.user {
        o = o.username(u);
    }
    if let Some(var) = &r.password_env {
        o = o.password(&env_password(var, &format!("database {} read_replica", db.name))?);
    }
    Ok(o)
}

/// Options for a URL (the shared checkpoint store).
pub fn url_options(url: &str) -> Result<PgConnectOptions, String> {
    PgConnectOptions::from_str(url)
        .map(with_session)
        .map_err(|e| format!("invalid PostgreSQL url {}: {e}", redact_url(url)))
}

fn with_session(opts: PgConnectOptions) -> PgConnectOptions {
    use sqlx::ConnectOptions;
    // A 50,000-row batch takes about a second by design; sqlx would warn about each one.
    opts.application_name(APPLICATION_NAME)
        .options([("TimeZone", "UTC")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(30))
}

/// Opens one connection to check that the database is reachable and accepts us, within
/// `timeout`. The error names host, port and database, the cause in one line, and what to check.
pub async fn probe(opts: &PgConnectOptions, timeout: Duration) -> Result<(), String> {
    use sqlx::Connection;
    let _ = connect(opts, timeout).await?.close().await;
    Ok(())
}

/// One connection, opened as [`probe`] opens it (with the same errors), for a further check.
pub async fn connect(opts: &PgConnectOptions, timeout: Duration) -> Result<sqlx::PgConnection, String> {
    use sqlx::ConnectOptions;
    let place = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default database)"));
    match tokio::time::timeout(timeout, opts.connect()).await {
        Err(_) => Err(format!(
            "{place}: no answer within {}s: check the host and port, and that no firewall drops the connection",
            timeout.as_secs()
        )),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(sqlx::Error::Io(e))) => Err(format!("{place}: cannot connect: {e}: check that PostgreSQL runs there and listens on TCP")),
        Ok(Err(sqlx::Error::Tls(e))) => Err(format!("{place}: TLS failed: {e}")),
        Ok(Err(sqlx::Error::Database(e))) => {
            let advice = match e.code().as_deref() {
                Some("28P01" | "28000") => ": check the user and password (password_env)",
                Some("3D000") => ": check the database name",
                Some("53300") => ": the server has no connection slot left",
                Some("57P03") => ": the server is starting up or shutting down; try again shortly",
                _ => "",
            };
            Err(format!("{place}: {}{advice}", e.message()))
        }
        Ok(Err(e)) => Err(format!("{place}: {e}")),
    }
}

/// Checks, on `conn` to the read replica at `opts`, that it is a standby in recovery: reading from
/// a primary (a promoted replica, a wrong host) would wait for ever for a replay that never happens.
pub async fn standby(mut conn: sqlx::PgConnection, opts: &PgConnectOptions) -> Result<(), String> {
    use sqlx::Connection;
    let place = format!("{}:{}", opts.get_host(), opts.get_port());
    let (recovering,): (bool,) =
        sqlx::query_as("SELECT pg_is_in_recovery()").fetch_one(&mut conn).await.map_err(|e| format!("{place}: {e}"))?;
    let _ = conn.close().await;
    if recovering {
        Ok(())
    } else {
        Err(format!("{place} is not a standby (pg_is_in_recovery() is false): point read_replica at a streaming replica"))
    }
}

/// A pool of at most `size` connections, none kept open once unused for `idle`. Connecting is
/// lazy: errors show at first use, where the caller names the database.
pub fn pool(opts: PgConnectOptions, size: u32, idle: Duration) -> PgPool {
    pool_options(size, idle).connect_lazy_with(opts)
}

fn pool_options(size: u32, idle: Duration) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(size).min_connections(0).acquire_timeout(Duration::from_secs(30)).idle_timeout(Some(idle))
}

/// A duration as a PostgreSQL setting in milliseconds (at least 1: 0 would turn a timeout off).
pub fn ms_setting(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// A pool for reading batches (on the primary or a read replica): its connections are read-only
/// and carry `statement_timeout` from the start, so a page read is one statement and one round
/// trip (the governor's pages are small, and each extra round trip, a `BEGIN`, a `SET`, a
/// `COMMIT` or the pool's liveness ping, cost about as much as the rows). A connection that died
/// while idle fails its read, which is retried.
pub fn read_pool(opts: PgConnectOptions, size: u32, idle: Duration, statement_timeout: Duration) -> PgPool {
    let opts = opts.options([
        ("default_transaction_read_only", "on".to_string()),
        ("statement_timeout", ms_setting(statement_timeout)),
    ]);
    pool_options(size, idle).test_before_acquire(false).connect_lazy_with(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("audit"), "\"audit\"");
        assert_eq!(quote_ident("Audit \"Log\""), "\"Audit \"\"Log\"\"\"");
        assert_eq!(qualified("my schema", "t;drop"), "\"my schema\".\"t;drop\"");
    }
}
