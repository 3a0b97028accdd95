//! A RabbitMQ node of a test's own: another node name, ports, data and log directories, started
//! from the machine's RabbitMQ installation and stopped on drop. A test that must stop or restart
//! a broker does it to this node, never to the machine's shared broker.
//!
//! Everything is under one temporary directory: the configuration (`rabbitmq.conf`, listening on
//! 127.0.0.1 only, no plugins), the environment file, the Erlang cookie (`HOME`), data and logs.
//! Only `epmd`, the Erlang port mapper that every local node registers with, is shared.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

const BIN: &str = "/usr/lib/rabbitmq/bin";

/// A private RabbitMQ node; stopped (and its files removed) on drop.
pub struct RabbitNode {
    child: Child,
    dir: tempfile::TempDir,
    pub node: String,
    pub port: u16,
}

impl RabbitNode {
    /// Starts a node and waits until it accepts AMQP connections (up to 60 s).
    pub async fn start() -> RabbitNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let dist = free_port();
        let node = format!("archtest{}@localhost", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let p = dir.path();
        write(p, "rabbitmq.conf", &format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"));
        write(p, "rabbitmq-env.conf", "");
        write(p, "enabled_plugins", "[].\n");
        write(p, ".erlang.cookie", &uuid::Uuid::new_v4().simple().to_string());
        set_mode(&p.join(".erlang.cookie"), 0o400);
        let child = Command::new(format!("{BIN}/rabbitmq-server"))
            .envs(env(p, &node, port, dist))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}/rabbitmq-server ({e}); install the rabbitmq-server package"));
        let rabbit = RabbitNode { child, dir, node, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the private RabbitMQ node {} did not come up", rabbit.node);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rabbit
    }

    /// The AMQP URL of this node (guest/guest, allowed from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl <args>` against this node; panics with its output if it fails.
    pub async fn ctl(&self, args: &[&str]) {
        let out = tokio::process::Command::new(format!("{BIN}/rabbitmqctl"))
            .envs(env(self.dir.path(), &self.node, self.port, 0))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .await
            .expect("run rabbitmqctl");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a broker file");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn env(dir: &Path, node: &str, port: u16, dist: u16) -> Vec<(String, String)> {
    let d = |name: &str| -> String { PathBuf::from(dir).join(name).display().to_string() };
    let mut v = vec![
        ("HOME".into(), d("")),
        ("RABBITMQ_NODENAME".into(), node.to_string()),
        ("RABBITMQ_NODE_PORT".into(), port.to_string()),
        ("RABBITMQ_CONFIG_FILE".into(), d("rabbitmq.conf")),
        ("RABBITMQ_CONF_ENV_FILE".into(), d("rabbitmq-env.conf")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), d("enabled_plugins")),
        ("RABBITMQ_MNESIA_BASE".into(), d("mnesia")),
        ("RABBITMQ_LOG_BASE".into(), d("log")),
        ("RABBITMQ_PID_FILE".into(), d("rabbit.pid")),
        ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
        ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(), "-kernel inet_dist_use_interface {127,0,0,1}".into()),
    ];
    if dist != 0 {
        v.push(("RABBITMQ_DIST_PORT".into(), dist.to_string()));
    }
    v
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let stopped = Command::new(format!("{BIN}/rabbitmqctl"))
            .envs(env(self.dir.path(), &self.node, self.port, 0))
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
