//! The Kubernetes manifests: schemas (by `kubernetes-validate`), the kustomizations' references,
//! the worker Deployment, its PodDisruptionBudget and the coordinator CronJob.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml_ng::Value;

use super::{args, at, bytes, flag, items, metrics_port, seconds, str_at};

/// The `kubernetes-validate` release `.ci/run` installs; the Kubernetes version validated against.
pub const VALIDATOR: &str = "kubernetes-validate==1.37.0";
pub const KUBERNETES: &str = "1.30.0";

/// Peak resident memory measured for one process (docs/performance.md; `archiver-loadtest
/// compare`): 70.4 MB.
pub const MEASURED_PEAK_RSS: u64 = 70_400_000;

/// Whether a manifest is of a core Kubernetes API group (one `kubernetes-validate` has a schema
/// for), rather than a custom resource (KEDA, the Prometheus Operator) or a kustomization.
pub fn is_core(doc: &Value) -> bool {
    let api = str_at(doc, "apiVersion");
    match api.split_once('/') {
        None => api == "v1",
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io") && !group.starts_with("kustomize."),
    }
}

/// Runs `kubernetes-validate --strict` on `files`; Err with its output if any is invalid, or
/// with what to install if the tool is missing.
pub fn kubernetes_validate(files: &[&Path]) -> Result<(), String> {
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .args(files)
        .output()
        .map_err(|e| {
            format!("cannot run kubernetes-validate ({e}): install it with `pip install {VALIDATOR}` (.ci/run does)")
        })?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && !said.contains("ERROR") {
        Ok(())
    } else {
        Err(format!("kubernetes-validate failed ({}):\n{said}", out.status))
    }
}

/// A kustomization's `resources`, generator files and patches name files (or directories with a
/// kustomization) that exist next to it.
pub fn check_kustomization(dir: &Path, k: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if str_at(k, "kind") != "Kustomization" {
        problems.push(format!("{}: not a Kustomization", dir.display()));
    }
    let mut named: Vec<&str> = items(k, "resources").iter().filter_map(Value::as_str).collect();
    for generator in ["configMapGenerator", "secretGenerator"] {
        for g in items(k, generator) {
            named.extend(items(g, "files").iter().chain(items(g, "envs")).filter_map(Value::as_str));
        }
    }
    named.extend(items(k, "patches").iter().filter_map(|p| p.get("path")).filter_map(Value::as_str));
    for rel in named {
        let path = dir.join(rel.rsplit_once('=').map_or(rel, |(_, file)| file));
        let ok = if path.is_dir() { path.join("kustomization.yaml").is_file() } else { path.is_file() };
        if !ok {
            problems.push(format!("{}: {rel} does not exist", dir.display()));
        }
    }
    problems
}

/// The names of a kustomization's configMapGenerator entries.
pub fn generated_config_maps(k: &Value) -> BTreeSet<String> {
    items(k, "configMapGenerator").iter().map(|g| str_at(g, "name").to_string()).collect()
}

/// The first container of a pod spec.
pub fn container(pod: &Value) -> &Value {
    items(pod, "containers").first().unwrap_or(&Value::Null)
}

/// The worker Deployment: probes on the endpoints `--metrics-addr` serves, a port named
/// `metrics` on that address's port, `terminationGracePeriodSeconds` above `--shutdown-grace`,
/// memory sized from the measured peak, no fixed `replicas` (KEDA owns them), and the config
/// mounted from a ConfigMap of `config_maps`.
pub fn check_worker(d: &Value, config_maps: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if str_at(d, "kind") != "Deployment" {
        problems.push("not a Deployment".to_string());
    }
    let pod = at(d, "spec.template.spec");
    let c = container(pod);
    let a = args(at(c, "args"));
    if a.first().map(String::as_str) != Some("archiver-worker") {
        problems.push(format!("the container does not run archiver-worker: {a:?}"));
    }
    problems.extend(check_metrics_port(c, &a));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        if str_at(c, &format!("{probe}.httpGet.path")) != path || str_at(c, &format!("{probe}.httpGet.port")) != "metrics" {
            problems.push(format!("{probe} is not an HTTP GET of {path} on the metrics port"));
        }
    }
    let grace = flag(&a, "--shutdown-grace").map_or(Some(60), |g| g.parse().ok());
    let termination = at(pod, "terminationGracePeriodSeconds").as_u64().unwrap_or(30);
    match grace {
        Some(g) if termination > g => {}
        _ => problems.push(format!("terminationGracePeriodSeconds {termination} is not above --shutdown-grace {grace:?}")),
    }
    problems.extend(check_memory(c));
    if !at(d, "spec.replicas").is_null() {
        problems.push("spec.replicas is set: KEDA's ScaledObject sets the replicas".to_string());
    }
    problems.extend(check_config_mount(pod, c, config_maps));
    problems
}

/// A port named `metrics` whose containerPort is the `--metrics-addr` port.
fn check_metrics_port(c: &Value, a: &[String]) -> Vec<String> {
    let port = items(c, "ports").iter().find(|p| str_at(p, "name") == "metrics").and_then(|p| p["containerPort"].as_u64());
    match (metrics_port(a), port) {
        (Some(want), Some(got)) if u64::from(want) == got => vec![],
        (want, got) => vec![format!("port `metrics` {got:?} is not the --metrics-addr port {want:?}")],
    }
}

/// Memory requested at least the measured peak, limited to at least twice it.
fn check_memory(c: &Value) -> Vec<String> {
    let request = bytes(str_at(c, "resources.requests.memory"));
    let limit = bytes(str_at(c, "resources.limits.memory"));
    let mut problems = Vec::new();
    if request.is_none_or(|r| r < MEASURED_PEAK_RSS) {
        problems.push(format!("resources.requests.memory {request:?} is below the measured peak RSS of {MEASURED_PEAK_RSS} bytes"));
    }
    if !limit.is_some_and(|l| l >= 2 * MEASURED_PEAK_RSS && l >= request.unwrap_or(0)) {
        problems.push(format!("resources.limits.memory {limit:?} leaves less than twice the measured peak RSS"));
    }
    problems
}

/// `--config` names a file in a volume mounted from a ConfigMap of `config_maps`.
fn check_config_mount(pod: &Value, c: &Value, config_maps: &BTreeSet<String>) -> Vec<String> {
    let a = args(at(c, "args"));
    let Some(config) = flag(&a, "--config") else { return vec!["no --config".into()] };
    let mount = items(c, "volumeMounts").iter().find(|m| Path::new(config).parent() == Some(Path::new(str_at(m, "mountPath"))));
    let Some(mount) = mount else { return vec![format!("nothing is mounted where --config {config} is")] };
    let volume = items(pod, "volumes").iter().find(|v| str_at(v, "name") == str_at(mount, "name"));
    match volume.map(|v| str_at(v, "configMap.name")) {
        Some(name) if config_maps.contains(name) => vec![],
        other => vec![format!("the volume at {config} is not one of the generated ConfigMaps {config_maps:?}: {other:?}")],
    }
}

/// Every `${VAR}` without a default and every `password_env` of the archiver configuration
/// `config_text` is set in the container's `env`.
pub fn check_env_covers_config(what: &str, c: &Value, config_text: &str) -> Vec<String> {
    let set: BTreeSet<&str> = items(c, "env").iter().map(|e| str_at(e, "name")).collect();
    config_variables(config_text)
        .into_iter()
        .filter(|v| !set.contains(v.as_str()))
        .map(|v| format!("{what}: the configuration reads ${v}, which the container's env does not set"))
        .collect()
}

/// The variables a configuration needs from the environment.
pub fn config_variables(config_text: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let code: String = config_text.lines().map(|l| l.split(" #").next().unwrap_or("")).filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let mut rest = code.as_str();
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').unwrap_or(after.len());
        if !after[..end].contains(":-") {
            vars.insert(after[..end].to_string());
        }
        rest = &after[end..];
    }
    for line in code.lines() {
        if let Some(v) = line.trim().strip_prefix("password_env:") {
            vars.insert(v.trim().to_string());
        }
    }
    vars
}

/// The keys of Secret `secret` that the containers' env reads.
pub fn secret_keys_read(c: &Value, secret: &str) -> BTreeSet<String> {
    items(c, "env")
        .iter()
        .filter(|e| str_at(e, "valueFrom.secretKeyRef.name") == secret)
        .map(|e| str_at(e, "valueFrom.secretKeyRef.key").to_string())
        .collect()
}

/// The coordinator CronJob: `run --wait --timeout T`, `concurrencyPolicy: Forbid`,
/// `activeDeadlineSeconds` above T (so the run stops waiting and reports before it is killed),
/// and a `metrics` port on its `--metrics-addr`.
pub fn check_cronjob(cj: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if str_at(cj, "kind") != "CronJob" {
        problems.push("not a CronJob".to_string());
    }
    if str_at(cj, "spec.concurrencyPolicy") != "Forbid" {
        problems.push("concurrencyPolicy is not Forbid".to_string());
    }
    let c = container(at(cj, "spec.jobTemplate.spec.template.spec"));
    let a = args(at(c, "args"));
    let run = a.iter().position(|x| x == "run");
    if a.first().map(String::as_str) != Some("archiver-coordinator") || run.is_none() || !a.contains(&"--wait".to_string()) {
        problems.push(format!("the container does not run `archiver-coordinator … run --wait`: {a:?}"));
    }
    let timeout = flag(&a, "--timeout").and_then(seconds);
    let deadline = at(cj, "spec.jobTemplate.spec.activeDeadlineSeconds").as_u64();
    match (timeout, deadline) {
        (Some(t), Some(d)) if d > t => {}
        _ => problems.push(format!("activeDeadlineSeconds {deadline:?} is not above run --timeout {timeout:?} (seconds)")),
    }
    problems.extend(check_metrics_port(c, &a));
    problems
}

/// The PodDisruptionBudget selects exactly the Deployment's pods and allows a disruption.
pub fn check_pdb(pdb: &Value, deployment: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let selector = at(pdb, "spec.selector.matchLabels");
    let labels = at(deployment, "spec.template.metadata.labels");
    let selects = selector.as_mapping().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    if !selects || selector != at(deployment, "spec.selector.matchLabels") {
        problems.push("the PodDisruptionBudget's selector is not the worker Deployment's".to_string());
    }
    if at(pdb, "spec.maxUnavailable").is_null() {
        problems.push("no maxUnavailable: with minAvailable a single worker would block node drains".to_string());
    }
    problems
}
