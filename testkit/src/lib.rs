//! Test support shared by the integration tests of every crate.
//!
//! Each test gets its own PostgreSQL database (`TestDb`) and its own S3 server with its own bucket
//! (`S3Server`, a real `s3s-fs` process that validates checksums), so tests run in parallel
//! without touching each other. Set `PGHOST`/`PGPORT`/`PGUSER` to use another server and
//! `S3S_FS_BIN` to point at the `s3s-fs` binary (default: `s3s-fs` on PATH, then ~/.cargo/bin).
//!
//! `config::ConfigBuilder` writes the archiver's configuration file for them, `seed` fills audit
//! tables, and `free_port` finds a loopback port for a server under test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub mod config;
pub mod rabbit;
pub mod replica;
pub mod seed;

/// `"name"`, with embedded quotes doubled (test data has no hostile names, but stay correct).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

pub fn pg_host() -> String {
    std::env::var("PGHOST").unwrap_or_else(|_| "127.0.0.1".into())
}
pub fn pg_port() -> u16 {
    std::env::var("PGPORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5432)
}
pub fn pg_user() -> String {
    std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into())
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass().host(&pg_host()).port(pg_port()).username(&pg_user()).database("postgres")
}

/// A database created for one test and dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        // Short: the name is part of every object key, and s3s-fs stores a key's metadata under a
        // file named after the base64 of the whole key, which must fit in 255 bytes.
        let name = format!("arch_t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = PgPoolOptions::new().max_connections(1).connect_with(admin_options()).await.expect(
            "PostgreSQL must be reachable on PGHOST:PGPORT (default 127.0.0.1:5432) with trust auth for the tests",
        );
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&admin).await.expect("create test database");
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(admin_options().database(&name).options([("TimeZone", "UTC")]))
            .await
            .expect("connect to test database");
        TestDb { name, pool }
    }

    pub fn url(&self) -> String {
        format!("postgres://{}@{}:{}/{}", pg_user(), pg_host(), pg_port(), self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context possibly; use a private runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let admin = PgPoolOptions::new().max_connections(1).connect_with(admin_options()).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await.ok()
            })
        })
        .join();
    }
}

/// A real S3 server (`s3s-fs`) on a free loopback port, with one bucket, killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    pub access_key: String,
    pub secret_key: String,
}

pub fn s3s_fs_bin() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS_BIN") {
        return p.into();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("s3s-fs");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cargo/bin/s3s-fs")
}

/// A free loopback port (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().unwrap().port()
}

impl S3Server {
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = "archive".to_string();
        std::fs::create_dir(dir.path().join(&bucket)).unwrap();
        let bin = s3s_fs_bin();
        let (access_key, secret_key) = ("testkey".to_string(), "testsecret-not-a-real-secret".to_string());
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}); install it with `cargo install s3s-fs@0.14.1 --locked --features binary`",
                        bin.display()
                    )
                });
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if up {
                return S3Server {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
                    bucket,
                    dir,
                    access_key,
                    secret_key,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }

    /// YAML of an `s3:` section for this server, `prefix` written as given (YAML). Whole
    /// configurations come from `config::ConfigBuilder`.
    pub fn yaml(&self, prefix: &str) -> String {
        config::S3Storage::of(self, "").section(prefix)
    }

    /// Where the bucket's objects are on disk.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(&self.bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes a work queue and its `.retry` and `.dead` queues, from a thread of its own so it can
/// run in `Drop`; a broker that cannot be reached leaves them (they are harmless, only clutter).
pub fn delete_queues(amqp_url: &str, name: &str) {
    let (url, name) = (amqp_url.to_string(), name.to_string());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        rt.block_on(async {
            let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.ok()?;
            let channel = conn.create_channel().await.ok()?;
            for q in [name.clone(), format!("{name}.retry"), format!("{name}.dead")] {
                let _ = channel.queue_delete(q.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
            }
            let _ = conn.close(200, "bye".into()).await;
            Some(())
        })
    })
    .join();
}
