//! compose.yaml, the Dockerfile and .dockerignore, and the compose Prometheus' configuration:
//! services, ports and paths consistent with each other and with the repository.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

use super::{args, at, interpolate_defaults, items, metrics_port, seconds, str_at};

/// Host ports of services a developer's machine runs (this project's tests among them:
/// PostgreSQL and its replica, RabbitMQ and its management UI, MinIO/S3, Redis, MariaDB, MQTT,
/// NATS): compose.yaml must not publish them.
pub const LOCAL_PORTS: [u16; 9] = [5432, 5433, 5672, 15672, 9000, 6379, 3306, 1883, 4222];

/// A published port: (service, host port after interpolating defaults, as written).
pub fn published(compose: &Value) -> Vec<(String, Option<u16>, String)> {
    let mut out = Vec::new();
    for (name, svc) in services(compose) {
        for p in items(svc, "ports") {
            let (written, host) = match p.as_str() {
                Some(s) => {
                    let parts: Vec<String> = interpolate_defaults(s).split(':').map(str::to_string).collect();
                    let host = if parts.len() >= 2 { parts[parts.len() - 2].parse().ok() } else { None };
                    (s.to_string(), host)
                }
                None => (format!("{p:?}"), at(p, "published").as_u64().and_then(|n| u16::try_from(n).ok())),
            };
            out.push((name.clone(), host, written));
        }
    }
    out
}

/// The services by name.
pub fn services(compose: &Value) -> BTreeMap<String, &Value> {
    at(compose, "services")
        .as_mapping()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v))).collect())
        .unwrap_or_default()
}

/// Ports: none of [`LOCAL_PORTS`] published, each published port set from the shell (`${VAR:-N}`)
/// and bound to 127.0.0.1, and no host port published twice.
pub fn check_ports(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for (svc, host, written) in published(compose) {
        match host {
            Some(h) if LOCAL_PORTS.contains(&h) => {
                problems.push(format!("{svc}: publishes host port {h} ({written}), which a local service uses"))
            }
            None => problems.push(format!("{svc}: cannot read the host port of {written:?}")),
            Some(h) => {
                if let Some(other) = seen.insert(h, svc.clone()) {
                    problems.push(format!("{svc}: host port {h} is published by {other} too"));
                }
            }
        }
        if !written.starts_with("127.0.0.1:${") {
            problems.push(format!("{svc}: {written:?} is not `127.0.0.1:${{VAR:-port}}:…` (local only, and configurable)"));
        }
    }
    problems
}

/// Bind mounts (`./path:/target`) name files or directories of the repository (`root`); every
/// `build:` context has its Dockerfile.
pub fn check_paths(compose: &Value, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (svc, def) in services(compose) {
        for v in items(def, "volumes") {
            let source = v.as_str().and_then(|s| s.split(':').next()).or_else(|| v.get("source").and_then(Value::as_str));
            if let Some(source) = source.filter(|s| s.starts_with('.') || s.starts_with('/')) {
                if !root.join(source).exists() {
                    problems.push(format!("{svc}: bind mount source {source} does not exist"));
                }
            }
        }
        let build = at(def, "build");
        if !build.is_null() {
            let context = build.as_str().unwrap_or_else(|| str_at(build, "context"));
            let dockerfile = build.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile");
            if !root.join(context).join(dockerfile).is_file() {
                problems.push(format!("{svc}: build context {context:?} has no {dockerfile}"));
            }
        }
    }
    problems
}

/// Credentials come from the shell: every environment value whose name says password, secret or
/// key is a `${VAR…}` interpolation, never written out.
pub fn check_credentials(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (svc, def) in services(compose) {
        let Some(env) = at(def, "environment").as_mapping() else { continue };
        for (k, v) in env {
            let key = k.as_str().unwrap_or("");
            let upper = key.to_uppercase();
            let secret = ["PASS", "SECRET", "_KEY"].iter().any(|w| upper.contains(w));
            let value = v.as_str().unwrap_or("");
            if secret && !value.starts_with("${") {
                problems.push(format!("{svc}: {key} is written out ({value:?}); take it from the shell as ${{{key}:-…}}"));
            }
        }
    }
    problems
}

/// The archiver services serve metrics (`--metrics-addr`); the worker's stop grace period is
/// above its `--shutdown-grace`.
pub fn check_archiver_services(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let svcs = services(compose);
    for name in ["coordinator", "worker"] {
        let Some(svc) = svcs.get(name) else {
            problems.push(format!("no `{name}` service"));
            continue;
        };
        if metrics_port(&args(at(svc, "command"))).is_none() {
            problems.push(format!("{name}: its command sets no --metrics-addr"));
        }
    }
    if let Some(worker) = svcs.get("worker") {
        let a = args(at(worker, "command"));
        let grace = super::flag(&a, "--shutdown-grace").map_or(Some(60), |g| g.parse().ok());
        let stop = seconds(str_at(worker, "stop_grace_period")).unwrap_or(10);
        if grace.is_none_or(|g| stop <= g) {
            problems.push(format!("worker: stop_grace_period {stop}s is not above --shutdown-grace {grace:?}"));
        }
    }
    problems
}

/// Prometheus' scrape targets name compose services; an archiver service's port is its
/// `--metrics-addr` port; every `rule_files` entry is mounted into the `prometheus` service.
pub fn check_prometheus(prom: &Value, compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let svcs = services(compose);
    for job in items(prom, "scrape_configs") {
        let jname = str_at(job, "job_name");
        let mut targets: Vec<(String, Option<u16>)> = Vec::new();
        for sd in items(job, "dns_sd_configs") {
            let port = at(sd, "port").as_u64().and_then(|p| u16::try_from(p).ok());
            targets.extend(items(sd, "names").iter().filter_map(Value::as_str).map(|n| (n.trim_start_matches("tasks.").to_string(), port)));
        }
        for sc in items(job, "static_configs") {
            for t in items(sc, "targets").iter().filter_map(Value::as_str) {
                let (host, port) = t.split_once(':').unwrap_or((t, ""));
                targets.push((host.to_string(), port.parse().ok()));
            }
        }
        if targets.is_empty() {
            problems.push(format!("job {jname}: no targets"));
        }
        for (host, port) in targets {
            let Some(svc) = svcs.get(&host) else {
                problems.push(format!("job {jname}: target {host} is not a compose service"));
                continue;
            };
            let serves = metrics_port(&args(at(svc, "command")));
            if serves.is_some() && serves != port {
                problems.push(format!("job {jname}: scrapes {host} on {port:?}, but it serves metrics on {serves:?}"));
            }
        }
    }
    let mounted: Vec<String> = svcs
        .get("prometheus")
        .map(|p| items(p, "volumes").iter().filter_map(Value::as_str).filter_map(|v| v.split(':').nth(1)).map(str::to_string).collect())
        .unwrap_or_default();
    for rule_file in items(prom, "rule_files").iter().filter_map(Value::as_str) {
        if !mounted.iter().any(|m| m == rule_file) {
            problems.push(format!("rule_files {rule_file} is not mounted into the prometheus service"));
        }
    }
    problems
}

/// The Dockerfile: every `COPY` source (of the build context, not `--from` a stage) exists and
/// is not excluded by .dockerignore, and every workspace member is copied (the build needs all).
pub fn check_dockerfile(dockerfile: &str, dockerignore: &str, members: &[String], root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let ignored: Vec<&str> =
        dockerignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| l.trim_end_matches('/')).collect();
    let mut copied = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("COPY ") else { continue };
        if rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for src in &words[..words.len().saturating_sub(1)] {
            copied.push(src.trim_end_matches('/').to_string());
            if !root.join(src).exists() {
                problems.push(format!("Dockerfile: COPY source {src} does not exist"));
            }
            if ignored.iter().any(|i| src.trim_end_matches('/') == *i || src.starts_with(&format!("{i}/"))) {
                problems.push(format!("Dockerfile: COPY source {src} is excluded by .dockerignore"));
            }
        }
    }
    for member in members {
        if !copied.contains(member) {
            problems.push(format!("Dockerfile: the workspace member {member} is not copied into the build"));
        }
    }
    for must in ["target", ".git"] {
        if !ignored.contains(&must) {
            problems.push(format!(".dockerignore does not exclude {must}/"));
        }
    }
    problems
}

/// The members of the workspace's Cargo.toml.
pub fn workspace_members(cargo_toml: &str) -> Vec<String> {
    let line = cargo_toml.lines().find(|l| l.trim_start().starts_with("members")).unwrap_or("");
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// Grafana: the provisioning directory has a Prometheus data source and a dashboard provider
/// whose path is where the dashboard file is mounted.
pub fn check_grafana(compose: &Value, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let svcs = services(compose);
    let Some(grafana) = svcs.get("grafana") else { return vec!["no `grafana` service".into()] };
    let mounts: Vec<(String, String)> = items(grafana, "volumes")
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|v| {
            let mut p = v.split(':');
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect();
    let Some((provisioning, _)) = mounts.iter().find(|(_, t)| t == "/etc/grafana/provisioning") else {
        return vec!["grafana: nothing is mounted at /etc/grafana/provisioning".into()];
    };
    let dir = root.join(provisioning);
    let read = |sub: &str| -> Vec<Value> {
        std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|t| super::parse_docs(sub, &t).ok())
            .flatten()
            .collect()
    };
    let sources = read("datasources");
    if !sources.iter().flat_map(|d| items(d, "datasources")).any(|s| str_at(s, "type") == "prometheus" && str_at(s, "url").contains("prometheus:9090")) {
        problems.push("grafana: no provisioned Prometheus data source at http://prometheus:9090".to_string());
    }
    let paths: Vec<String> =
        read("dashboards").iter().flat_map(|d| items(d, "providers")).map(|p| str_at(p, "options.path").to_string()).collect();
    let dashboard = mounts.iter().find(|(s, _)| s.ends_with("grafana-dashboard.json"));
    match dashboard {
        Some((_, target)) if paths.iter().any(|p| Path::new(target).parent() == Some(Path::new(p))) => {}
        _ => problems.push(format!("grafana: docs/grafana-dashboard.json is not mounted under a provider path {paths:?}")),
    }
    problems
}
