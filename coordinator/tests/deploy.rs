//! What can be checked of the deployment files without a cluster or a Docker engine (issue 13):
//! deploy/kubernetes (kustomize base and overlay, KEDA), the alert rules (plain and as a
//! PrometheusRule), compose.yaml with its Dockerfile, .dockerignore, Prometheus and Grafana
//! files, and that every metric the alerts and docs/grafana-dashboard.json use is on a live
//! `/metrics` page of our binaries. Each check is a function of `deploy_checks` returning the
//! problems it finds; the `…_broken_on_purpose_…` tests feed it a damaged copy to show it fails.

mod common;
mod deploy_checks;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use deploy_checks::{alerts, compose, k8s, keda, parse_docs, repo, str_at, text, yaml, yaml_files};
use serde_yaml_ng::Value;

const BASE: &str = "deploy/kubernetes/base";
const OVERLAY: &str = "deploy/kubernetes/overlays/example";
const SECRET: &str = "archiver-credentials";

fn base(file: &str) -> Value {
    yaml(&format!("{BASE}/{file}"))
}

/// `doc` with the YAML `patch` (a mapping) merged into it at `path` (dotted; `.0` indexes).
fn patched(doc: &Value, path: &str, value: &str) -> Value {
    let mut doc = doc.clone();
    let mut at = &mut doc;
    let keys: Vec<&str> = path.split('.').collect();
    for key in &keys[..keys.len() - 1] {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*key],
        };
    }
    let last = keys[keys.len() - 1];
    let value: Value = serde_yaml_ng::from_str(value).unwrap();
    match (at.as_mapping_mut(), last.parse::<usize>()) {
        (Some(m), _) if value.is_null() => {
            m.remove(last);
        }
        (None, Ok(i)) => at[i] = value,
        _ => at[last] = value,
    }
    doc
}

/// Asserts `problems` is empty, naming what was checked.
fn clean(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Asserts `problems` holds one that contains `needle`.
fn reported(what: &str, problems: Vec<String>, needle: &str) {
    assert!(problems.iter().any(|p| p.contains(needle)), "{what}: expected a problem with {needle:?}, got {problems:?}");
}

/// The example credentials file: the keys the Secret holds, with placeholder values.
fn credentials() -> BTreeMap<String, String> {
    text(&format!("{OVERLAY}/credentials.example.env"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn secret_keys() -> BTreeSet<String> {
    credentials().into_keys().collect()
}

/// An archiver configuration file, loaded as the binaries load it, with the environment the
/// Secret's example values give the pods.
fn archiver_config(rel: &str) -> archiver_engine::config::Config {
    let (text, env) = (text(rel), credentials());
    archiver_engine::config::parse(rel, &text, &|v: &str| env.get(v).cloned()).unwrap_or_else(|e| panic!("{rel}: {e}")).config
}

#[test]
fn every_manifest_parses_and_names_its_kind() {
    let mut files = yaml_files("deploy");
    files.push("compose.yaml".into());
    let mut problems = Vec::new();
    for file in &files {
        match parse_docs(file, &text(file)) {
            Err(e) => problems.push(e),
            Ok(docs) if docs.is_empty() => problems.push(format!("{file}: empty")),
            Ok(docs) if file.starts_with("deploy/kubernetes/") && !file.ends_with("/config.yaml") => {
                for d in docs {
                    let named = !str_at(&d, "metadata.name").is_empty() || str_at(&d, "kind") == "Kustomization";
                    if str_at(&d, "apiVersion").is_empty() || str_at(&d, "kind").is_empty() || !named {
                        problems.push(format!("{file}: a document without apiVersion, kind or metadata.name"));
                    }
                }
            }
            Ok(_) => {}
        }
    }
    assert!(files.len() >= 15, "{files:?}");
    clean("manifests", problems);
    // An unclosed flow sequence is reported, with the file's name.
    let broken = text(&format!("{BASE}/worker-pdb.yaml")).replace("maxUnavailable: 1", "maxUnavailable: [1");
    assert!(parse_docs("worker-pdb.yaml", &broken).unwrap_err().contains("worker-pdb.yaml: not valid YAML"));
}

#[test]
fn the_configmap_and_compose_configurations_load_as_archiver_configurations() {
    for rel in [format!("{BASE}/config.yaml"), "deploy/config.yaml".to_string()] {
        let config = archiver_config(&rel);
        assert_eq!(config.queue.as_ref().map(|q| q.name.as_str()), Some("archiver.items"), "{rel}");
    }
}

/// The core kinds (Deployment, CronJob, PodDisruptionBudget, Namespace) against the Kubernetes
/// schemas, strictly (unknown fields refused), by `kubernetes-validate`.
#[test]
fn core_kubernetes_kinds_validate_against_their_schemas() {
    let root = repo();
    let core: Vec<String> = yaml_files("deploy/kubernetes")
        .into_iter()
        .filter(|f| parse_docs(f, &text(f)).unwrap().iter().any(k8s::is_core))
        .collect();
    let names: BTreeSet<&str> = core.iter().filter_map(|f| f.rsplit('/').next()).collect();
    for want in ["worker-deployment.yaml", "worker-pdb.yaml", "coordinator-cronjob.yaml", "namespace.yaml"] {
        assert!(names.contains(want), "{want} is not taken for a core kind: {names:?}");
    }
    let paths: Vec<_> = core.iter().map(|f| root.join(f)).collect();
    k8s::kubernetes_validate(&paths.iter().map(|p| p.as_path()).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_core_manifest_broken_on_purpose_fails_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("spec.template.spec.terminationGracePeriodSeconds", "ninety"),
        ("spec.replica", "2"),
        ("spec.template.spec.containers.0.livenessProbe.httpGet.port", "[metrics]"),
    ];
    // The unbroken copy passes, so a failure below is the damage, not a missing tool.
    let intact = dir.path().join("intact.yaml");
    std::fs::write(&intact, serde_yaml_ng::to_string(&base("worker-deployment.yaml")).unwrap()).unwrap();
    k8s::kubernetes_validate(&[intact.as_path()]).unwrap_or_else(|e| panic!("{e}"));
    for (i, (path, value)) in cases.iter().enumerate() {
        let doc = patched(&base("worker-deployment.yaml"), path, value);
        let file = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        assert!(k8s::kubernetes_validate(&[file.as_path()]).is_err(), "{path}: {value} passed validation");
    }
}

#[test]
fn kustomizations_name_files_that_exist() {
    for dir in [BASE, OVERLAY] {
        let k = yaml(&format!("{dir}/kustomization.yaml"));
        clean(dir, k8s::check_kustomization(&repo().join(dir), &k));
    }
    let k = patched(&yaml(&format!("{BASE}/kustomization.yaml")), "configMapGenerator.0.files", "[config.yml]");
    reported("a missing generator file", k8s::check_kustomization(&repo().join(BASE), &k), "config.yml does not exist");
    let k = patched(&yaml(&format!("{OVERLAY}/kustomization.yaml")), "resources", "[../../bse]");
    reported("a missing base", k8s::check_kustomization(&repo().join(OVERLAY), &k), "../../bse does not exist");
}

fn config_maps() -> BTreeSet<String> {
    k8s::generated_config_maps(&yaml(&format!("{BASE}/kustomization.yaml")))
}

#[test]
fn worker_deployment_has_probes_metrics_port_grace_and_measured_memory() {
    clean("worker-deployment.yaml", k8s::check_worker(&base("worker-deployment.yaml"), &config_maps()));
}

#[test]
fn a_worker_deployment_broken_on_purpose_is_reported() {
    let d = base("worker-deployment.yaml");
    let c = "spec.template.spec.containers.0";
    let cases = [
        (format!("{c}.readinessProbe.httpGet.path"), "/healthz", "readinessProbe"),
        (format!("{c}.livenessProbe"), "null", "livenessProbe"),
        ("spec.template.spec.terminationGracePeriodSeconds".into(), "60", "terminationGracePeriodSeconds 60"),
        (format!("{c}.ports.0.containerPort"), "9100", "port `metrics`"),
        (format!("{c}.resources.limits.memory"), "100Mi", "limits.memory"),
        (format!("{c}.resources.requests"), "null", "requests.memory"),
        ("spec.replicas".into(), "3", "spec.replicas"),
        ("spec.template.spec.volumes.0.configMap.name".into(), "other", "not one of the generated ConfigMaps"),
    ];
    for (path, value, needle) in cases {
        reported(&path, k8s::check_worker(&patched(&d, &path, value), &config_maps()), needle);
    }
}

#[test]
fn coordinator_cronjob_runs_wait_with_a_deadline_and_forbids_overlap() {
    let cj = base("coordinator-cronjob.yaml");
    clean("coordinator-cronjob.yaml", k8s::check_cronjob(&cj));
    reported("Allow", k8s::check_cronjob(&patched(&cj, "spec.concurrencyPolicy", "Allow")), "Forbid");
    reported("deadline", k8s::check_cronjob(&patched(&cj, "spec.jobTemplate.spec.activeDeadlineSeconds", "3600")), "activeDeadlineSeconds");
    let args = "spec.jobTemplate.spec.template.spec.containers.0.args";
    let no_wait = "[archiver-coordinator, --config, /etc/archiver/config.yaml, run, --timeout, 5h, --metrics-addr, '0.0.0.0:9101']";
    reported("no --wait", k8s::check_cronjob(&patched(&cj, args, no_wait)), "run --wait");
}

#[test]
fn pod_disruption_budget_selects_the_workers() {
    let (pdb, d) = (base("worker-pdb.yaml"), base("worker-deployment.yaml"));
    clean("worker-pdb.yaml", k8s::check_pdb(&pdb, &d));
    let other = patched(&pdb, "spec.selector.matchLabels", "{app.kubernetes.io/name: archiver-coordinator}");
    reported("selector", k8s::check_pdb(&other, &d), "selector");
    let min = patched(&patched(&pdb, "spec.maxUnavailable", "null"), "spec.minAvailable", "1");
    reported("minAvailable", k8s::check_pdb(&min, &d), "maxUnavailable");
}

/// The pods' env sets every variable config.yaml reads, from keys the Secret holds.
#[test]
fn secrets_cover_what_the_configuration_reads() {
    let config = text(&format!("{BASE}/config.yaml"));
    let worker = k8s::container(deploy_checks::at(&base("worker-deployment.yaml"), "spec.template.spec")).clone();
    let cj = base("coordinator-cronjob.yaml");
    let coordinator = k8s::container(deploy_checks::at(&cj, "spec.jobTemplate.spec.template.spec")).clone();
    let keys = secret_keys();
    for (what, c) in [("worker", &worker), ("coordinator", &coordinator)] {
        clean(what, k8s::check_env_covers_config(what, c, &config));
        let missing: Vec<_> = k8s::secret_keys_read(c, SECRET).difference(&keys).cloned().collect();
        assert!(missing.is_empty(), "{what} reads keys the Secret does not hold: {missing:?}");
    }
    assert!(k8s::config_variables(&config).contains("PGPASSWORD"), "password_env is read");
    let no_amqp = patched(&worker, "env", "[{name: PGPASSWORD, value: x}, {name: S3_ACCESS_KEY, value: x}, {name: S3_SECRET_KEY, value: x}]");
    reported("AMQP_URL unset", k8s::check_env_covers_config("worker", &no_amqp, &config), "$AMQP_URL");
}

fn keda_target<'a>(queue: &'a str) -> keda::Target<'a> {
    keda::Target { deployment: "archiver-worker", auth: "archiver-rabbitmq", queue, concurrency: 2 }
}

#[test]
fn keda_objects_carry_the_fields_keda_documents() {
    let config = archiver_config(&format!("{BASE}/config.yaml"));
    let queue = &config.queue.as_ref().unwrap().name;
    let (so, ta, d) = (base("worker-scaledobject.yaml"), base("worker-triggerauthentication.yaml"), base("worker-deployment.yaml"));
    let concurrency = deploy_checks::flag(&deploy_checks::args(&k8s::container(deploy_checks::at(&d, "spec.template.spec"))["args"]), "--concurrency")
        .and_then(|c| c.parse().ok())
        .unwrap();
    let target = keda::Target { deployment: str_at(&d, "metadata.name"), auth: str_at(&ta, "metadata.name"), queue, concurrency };
    clean("worker-scaledobject.yaml", keda::check_scaled_object(&so, &target));
    clean("worker-triggerauthentication.yaml", keda::check_trigger_auth(&ta, SECRET, &secret_keys()));
}

#[test]
fn keda_objects_broken_on_purpose_are_reported() {
    let so = base("worker-scaledobject.yaml");
    let t = keda_target("archiver.items");
    let cases = [
        ("apiVersion", "keda.sh/v1", "keda.sh/v1alpha1"),
        ("spec.scaleTargetRef.name", "archiver", "scaleTargetRef.name"),
        ("spec.minReplicaCount", "1", "scale to zero"),
        ("spec.maxReplicaCount", "null", "maxReplicaCount"),
        ("spec.triggers.0.type", "rabbitmq-queue", "type"),
        ("spec.triggers.0.metadata.queueName", "archiver.items.dead", "queueName"),
        ("spec.triggers.0.metadata.protocol", "amqp", "unacknowledged"),
        ("spec.triggers.0.metadata.mode", "MessageRate", "QueueLength"),
        ("spec.triggers.0.metadata.value", "'20'", "value"),
        ("spec.triggers.0.authenticationRef.name", "rabbitmq", "authenticationRef"),
    ];
    for (path, value, needle) in cases {
        reported(path, keda::check_scaled_object(&patched(&so, path, value), &t), needle);
    }
    let ta = base("worker-triggerauthentication.yaml");
    let keys = secret_keys();
    reported("key", keda::check_trigger_auth(&patched(&ta, "spec.secretTargetRef.0.key", "HOST"), SECRET, &keys), "not a key");
    reported("parameter", keda::check_trigger_auth(&patched(&ta, "spec.secretTargetRef.0.parameter", "hst"), SECRET, &keys), "`host`");
}

/// maxReplicaCount x (connection_pool_size + 2) + the coordinator's connections fit a default
/// max_connections with room for the application (docs/deployment.md).
#[test]
fn scaled_out_workers_fit_the_source_database_connections() {
    let config = archiver_config(&format!("{BASE}/config.yaml"));
    let pool = config.databases.iter().filter_map(|d| d.connection_pool_size).max().unwrap_or(config.defaults.connection_pool_size);
    let overlay = text(&format!("{OVERLAY}/kustomization.yaml"));
    let patch = overlay.split("path: /spec/maxReplicaCount").nth(1).and_then(|p| p.split("value:").nth(1));
    let overlay_max = patch.and_then(|v| v.lines().next()).and_then(|v| v.trim().parse().ok()).expect("the overlay's maxReplicaCount");
    let base_max = deploy_checks::at(&base("worker-scaledobject.yaml"), "spec.maxReplicaCount").as_u64().unwrap();
    for max in [base_max, overlay_max] {
        clean("connections", keda::check_connection_budget(max, u64::from(pool), 20));
    }
    assert_eq!(keda::connections(8, 5), 62, "docs/deployment.md's example");
    reported("20 replicas", keda::check_connection_budget(20, 5, 20), "over the 77");
}

#[test]
fn alert_rules_parse_each_with_its_runbook_and_the_prometheus_rule_is_the_same() {
    let plain = yaml("deploy/prometheus/alerts.yaml");
    let runbook = text("docs/troubleshooting.md");
    clean("deploy/prometheus/alerts.yaml", alerts::check_rules(&plain, &runbook));
    clean("prometheusrule.yaml", alerts::check_prometheus_rule(&base("prometheusrule.yaml"), &plain));
    let config = archiver_config(&format!("{BASE}/config.yaml"));
    clean("dead letters", alerts::check_dead_letter_queue(&plain, &config.queue.as_ref().unwrap().name));
}

#[test]
fn alert_rules_broken_on_purpose_are_reported() {
    let plain = yaml("deploy/prometheus/alerts.yaml");
    let runbook = text("docs/troubleshooting.md");
    let rule = "groups.0.rules.0";
    let cases = [
        (format!("{rule}.annotations.runbook_url"), "docs/troubleshooting.md#no-such-section", "no heading #no-such-section"),
        (format!("{rule}.annotations.runbook_url"), "null", "runbook_url"),
        (format!("{rule}.for"), "10 minutes", "not a Prometheus duration"),
        (format!("{rule}.expr"), "sum(rate(archiver_errors_total[5m]) > 0", "never closed"),
        (format!("{rule}.labels.severity"), "page", "severity"),
        (format!("{rule}.alert"), "ArchiverErrors", "ArchiverErrorsRising: missing"),
        (format!("{rule}.exprr"), "x", "unknown keys"),
        ("groups.0.rules.1.alert".to_string(), "ArchiverErrorsRising", "defined twice"),
    ];
    for (path, value, needle) in cases {
        reported(&path, alerts::check_rules(&patched(&plain, &path, value), &runbook), needle);
    }
    let without_runbooks = runbook.replace("### ArchiverGovernorStuck", "### Governor stuck");
    reported("runbook heading", alerts::check_rules(&plain, &without_runbooks), "#archivergovernorstuck");
    let differs = patched(&base("prometheusrule.yaml"), "spec.groups.0.rules.0.for", "1m");
    reported("PrometheusRule", alerts::check_prometheus_rule(&differs, &plain), "differ");
    let dlq = patched(&plain, "groups.0.rules.3.expr", "rabbitmq_detailed_queue_messages{queue=\"archiver.dead\"} > 0");
    reported("dead letters", alerts::check_dead_letter_queue(&dlq, "archiver.items"), "archiver.items.dead");
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| alerts::metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(names("sum by (stage, kind) (increase(archiver_errors_total{kind!=\"x\"}[15m])) > 0"), ["archiver_errors_total"]);
    assert_eq!(
        names("histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m]))) / on(job) group_left(x) b offset 1d or absent_over_time(c[26h])"),
        ["a_bucket", "b", "c"]
    );
    assert_eq!(names("time() - max without (instance) (x:recorded) > 26 * 3600 and bool 1e3"), ["x:recorded"]);
    assert_eq!(names("avg_over_time(g{state=~\"paused|throttled\"}[10m]) > 0.9"), ["g"]);
}

#[test]
fn a_metric_no_binary_exports_is_reported() {
    let exported: BTreeSet<String> = ["archiver_errors_total".to_string()].into();
    let exprs = vec![("A".to_string(), "rate(archiver_errors_total[5m]) + archiver_made_up_total".to_string())];
    let problems = alerts::unexported("test", &exprs, &exported);
    assert_eq!(problems, ["test: A: archiver_made_up_total is not exported by archiver-worker or archiver-coordinator"]);
    let external = vec![("B".to_string(), "rabbitmq_detailed_queue_messages{queue=\"q\"} > 0".to_string())];
    assert!(alerts::unexported("test", &external, &exported).is_empty(), "a listed external metric is accepted");
    let unlisted = vec![("C".to_string(), "rabbitmq_queue_messages > 0".to_string())];
    assert_eq!(alerts::unexported("test", &unlisted, &exported).len(), 1, "an external metric must be listed");
}

/// Every metric name in the alert rules and the dashboard is on the `/metrics` page of a real
/// `archiver-coordinator run --wait` or `archiver-worker` process that archived rows (or is
/// listed in `alerts::EXTERNAL`, which our binaries must then not export).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_and_dashboard_metrics_are_exported_by_a_live_binary() {
    let (coordinator, worker) = deploy_checks::live::scrape_binaries().await;
    let exported: BTreeSet<String> =
        deploy_checks::exposition_names(&coordinator).into_iter().chain(deploy_checks::exposition_names(&worker)).collect();
    for name in ["archiver_rows_eligible", "archiver_records_archived_total", "archiver_governor_state"] {
        assert!(exported.contains(name), "the live scrape lacks {name}: the scrape is not what it should be:\n{worker}");
    }
    let rules = yaml("deploy/prometheus/alerts.yaml");
    let dashboard: serde_json::Value = serde_json::from_str(&text("docs/grafana-dashboard.json")).unwrap();
    let mut problems = alerts::unexported("deploy/prometheus/alerts.yaml", &alerts::rule_exprs(&rules), &exported);
    let rule = base("prometheusrule.yaml");
    problems.extend(alerts::unexported("prometheusrule.yaml", &alerts::rule_exprs(deploy_checks::at(&rule, "spec")), &exported));
    problems.extend(alerts::unexported("docs/grafana-dashboard.json", &alerts::dashboard_exprs(&dashboard), &exported));
    clean("metrics", problems);
    assert!(alerts::dashboard_exprs(&dashboard).len() >= 9, "the dashboard's expressions were not found");
    for (name, _) in alerts::EXTERNAL {
        assert!(!exported.contains(name), "{name} is listed as external but our binaries export it");
    }
}

#[test]
fn compose_publishes_no_local_service_port() {
    let c = yaml("compose.yaml");
    clean("compose.yaml ports", compose::check_ports(&c));
    let published: Vec<_> = compose::published(&c).into_iter().map(|(s, _, _)| s).collect();
    for ui in ["rabbitmq", "minio", "jaeger", "prometheus", "grafana"] {
        assert!(published.contains(&ui.to_string()), "{ui}'s UI is not published: {published:?}");
    }
    for (svc, ports, needle) in [
        ("postgres", "['5432:5432']", "host port 5432"),
        ("rabbitmq", "['127.0.0.1:${X:-5672}:5672']", "host port 5672"),
        ("minio", "['9000:9000']", "host port 9000"),
        ("grafana", "['3000:3000']", "configurable"),
        ("jaeger", "['127.0.0.1:${J:-19090}:16686']", "19090 is published by"),
    ] {
        reported(svc, compose::check_ports(&patched(&c, &format!("services.{svc}.ports"), ports)), needle);
    }
}

#[test]
fn compose_paths_exist_and_credentials_come_from_the_shell() {
    let c = yaml("compose.yaml");
    clean("compose.yaml paths", compose::check_paths(&c, &repo()));
    clean("compose.yaml credentials", compose::check_credentials(&c));
    let missing = patched(&c, "services.prometheus.volumes", "['./deploy/prometheus/missing.yml:/etc/prometheus/prometheus.yml:ro']");
    reported("mount", compose::check_paths(&missing, &repo()), "missing.yml does not exist");
    let build = patched(&c, "services.worker.build", "./worker");
    reported("build", compose::check_paths(&build, &repo()), "has no Dockerfile");
    let written = patched(&c, "services.postgres.environment.POSTGRES_PASSWORD", "postgres");
    reported("password", compose::check_credentials(&written), "POSTGRES_PASSWORD is written out");
}

#[test]
fn compose_archiver_services_serve_metrics_and_prometheus_scrapes_them() {
    let c = yaml("compose.yaml");
    let prom = yaml("deploy/prometheus/prometheus.yml");
    clean("compose.yaml archiver services", compose::check_archiver_services(&c));
    clean("prometheus.yml", compose::check_prometheus(&prom, &c));
    let jobs: Vec<&str> = deploy_checks::items(&prom, "scrape_configs").iter().map(|j| str_at(j, "job_name")).collect();
    assert!(jobs.contains(&"archiver-worker") && jobs.contains(&"archiver-coordinator"), "{jobs:?}");
    let no_metrics = patched(&c, "services.worker.command", "[archiver-worker, --config, /etc/archiver/config.yaml]");
    reported("worker", compose::check_archiver_services(&no_metrics), "worker: its command sets no --metrics-addr");
    let short = patched(&c, "services.worker.stop_grace_period", "30s");
    reported("grace", compose::check_archiver_services(&short), "stop_grace_period 30s");
    let port = patched(&prom, "scrape_configs.0.dns_sd_configs.0.port", "9100");
    reported("port", compose::check_prometheus(&port, &c), "serves metrics on Some(9102)");
    let name = patched(&prom, "scrape_configs.0.dns_sd_configs.0.names", "[workers]");
    reported("name", compose::check_prometheus(&name, &c), "workers is not a compose service");
    let rules = patched(&prom, "rule_files", "[/etc/prometheus/rules.yaml]");
    reported("rules", compose::check_prometheus(&rules, &c), "not mounted");
}

#[test]
fn compose_grafana_has_the_dashboard_provisioned() {
    let c = yaml("compose.yaml");
    clean("grafana", compose::check_grafana(&c, &repo()));
    let elsewhere = patched(&c, "services.grafana.volumes.1", "./docs/grafana-dashboard.json:/dashboards/archiver.json:ro");
    reported("dashboard", compose::check_grafana(&elsewhere, &repo()), "not mounted under a provider path");
}

#[test]
fn dockerfile_copies_every_workspace_member_and_dockerignore_keeps_target_out() {
    let (dockerfile, ignore, root) = (text("Dockerfile"), text(".dockerignore"), repo());
    let members = compose::workspace_members(&text("Cargo.toml"));
    assert!(members.contains(&"engine".to_string()), "{members:?}");
    clean("Dockerfile", compose::check_dockerfile(&dockerfile, &ignore, &members, &root));
    let without_engine = dockerfile.replace("COPY engine engine\n", "");
    reported("engine", compose::check_dockerfile(&without_engine, &ignore, &members, &root), "member engine is not copied");
    let typo = dockerfile.replace("COPY proto proto", "COPY protos proto");
    reported("typo", compose::check_dockerfile(&typo, &ignore, &members, &root), "protos does not exist");
    let ignored = format!("{ignore}\nengine/\n");
    reported("ignored", compose::check_dockerfile(&dockerfile, &ignored, &members, &root), "engine is excluded");
    let keeps_target = ignore.replace("target/\n", "");
    reported("target", compose::check_dockerfile(&dockerfile, &keeps_target, &members, &root), "target/");
    assert!(Path::new(&root.join("compose.yaml")).is_file());
}
