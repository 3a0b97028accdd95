//! The KEDA objects, with the fields KEDA documents for the `rabbitmq` scaler, and the database
//! connections the scaled-out workers may open.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use super::{at, items, str_at};

/// What the ScaledObject must agree with.
pub struct Target<'a> {
    /// The worker Deployment's name.
    pub deployment: &'a str,
    /// The TriggerAuthentication's name.
    pub auth: &'a str,
    /// The configuration's `queue.name`.
    pub queue: &'a str,
    /// The workers' `--concurrency` (their prefetch).
    pub concurrency: u64,
}

/// A `keda.sh/v1alpha1` ScaledObject on the worker Deployment with one `rabbitmq` trigger on the
/// work queue, in `QueueLength` mode over the management API (`protocol: http`, which counts
/// unacknowledged messages too), a numeric `value` no larger than `--concurrency` per replica,
/// scaling to zero, a `maxReplicaCount` above the minimum, and the TriggerAuthentication as
/// `authenticationRef`.
pub fn check_scaled_object(so: &Value, t: &Target) -> Vec<String> {
    let mut problems = Vec::new();
    if str_at(so, "apiVersion") != "keda.sh/v1alpha1" || str_at(so, "kind") != "ScaledObject" {
        problems.push("not a keda.sh/v1alpha1 ScaledObject".to_string());
    }
    if str_at(so, "spec.scaleTargetRef.name") != t.deployment {
        problems.push(format!("scaleTargetRef.name {:?} is not the Deployment {:?}", str_at(so, "spec.scaleTargetRef.name"), t.deployment));
    }
    let kind = str_at(so, "spec.scaleTargetRef.kind");
    if !(kind.is_empty() || kind == "Deployment") {
        problems.push(format!("scaleTargetRef.kind {kind:?} is not Deployment"));
    }
    let min = at(so, "spec.minReplicaCount").as_u64();
    let max = at(so, "spec.maxReplicaCount").as_u64();
    if min != Some(0) {
        problems.push(format!("minReplicaCount {min:?}: scale to zero when idle needs 0"));
    }
    if max.is_none_or(|m| m < 1) {
        problems.push(format!("maxReplicaCount {max:?} must be set, at least 1"));
    }
    let triggers = items(so, "spec.triggers");
    if triggers.len() != 1 {
        problems.push(format!("{} triggers; expected one (rabbitmq)", triggers.len()));
    }
    if let Some(trigger) = triggers.first() {
        problems.extend(check_trigger(trigger, t));
    }
    problems
}

fn check_trigger(trigger: &Value, t: &Target) -> Vec<String> {
    let mut problems = Vec::new();
    let meta = |k: &str| str_at(trigger, &format!("metadata.{k}"));
    if str_at(trigger, "type") != "rabbitmq" {
        problems.push(format!("triggers[0].type {:?} is not rabbitmq", str_at(trigger, "type")));
    }
    if meta("queueName") != t.queue {
        problems.push(format!("queueName {:?} is not the configuration's queue.name {:?}", meta("queueName"), t.queue));
    }
    if meta("mode") != "QueueLength" {
        problems.push(format!("mode {:?} is not QueueLength", meta("mode")));
    }
    if meta("protocol") != "http" {
        problems.push(format!(
            "protocol {:?}: only the management API (http) counts unacknowledged messages, which busy workers hold",
            meta("protocol")
        ));
    }
    if !at(trigger, "metadata.excludeUnacknowledged").is_null() && meta("excludeUnacknowledged") != "false" {
        problems.push("excludeUnacknowledged would count ready messages only".to_string());
    }
    match meta("value").parse::<f64>() {
        Ok(v) if v > 0.0 && v <= t.concurrency as f64 => {}
        _ => problems.push(format!("value {:?} must be a number in (0, --concurrency {}] (messages per replica)", meta("value"), t.concurrency)),
    }
    if at(trigger, "metadata.host").as_str().is_some_and(|h| h.contains('@')) {
        problems.push("metadata.host holds credentials: use the TriggerAuthentication".to_string());
    }
    if str_at(trigger, "authenticationRef.name") != t.auth {
        problems.push(format!("authenticationRef.name {:?} is not the TriggerAuthentication {:?}", str_at(trigger, "authenticationRef.name"), t.auth));
    }
    problems
}

/// A `keda.sh/v1alpha1` TriggerAuthentication that gives the rabbitmq scaler its `host` from a
/// key of Secret `secret`, one of `keys` (the keys the Secret is documented to hold).
pub fn check_trigger_auth(ta: &Value, secret: &str, keys: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if str_at(ta, "apiVersion") != "keda.sh/v1alpha1" || str_at(ta, "kind") != "TriggerAuthentication" {
        problems.push("not a keda.sh/v1alpha1 TriggerAuthentication".to_string());
    }
    let host = items(ta, "spec.secretTargetRef").iter().find(|r| str_at(r, "parameter") == "host");
    match host {
        None => problems.push("no secretTargetRef for the parameter `host`".to_string()),
        Some(r) if str_at(r, "name") != secret || !keys.contains(str_at(r, "key")) => problems.push(format!(
            "secretTargetRef `host` reads {}/{}, not a key of Secret {secret} ({keys:?})",
            str_at(r, "name"),
            str_at(r, "key")
        )),
        Some(_) => {}
    }
    problems
}

/// Connections one process opens on a source database: its pool, its governor's and its presence
/// connection (docs/operations.md, "Connections"; a coordinator has no governor connection).
pub fn connections(max_replicas: u64, pool: u64) -> u64 {
    max_replicas * (pool + 2) + (pool + 1)
}

/// At most `maxReplicaCount` workers and one coordinator stay within `max_connections` less the
/// superuser reserve (PostgreSQL's defaults: 100 and 3) and `reserved` for everyone else.
pub fn check_connection_budget(max_replicas: u64, pool: u64, reserved: u64) -> Vec<String> {
    let available = 100 - 3 - reserved;
    let need = connections(max_replicas, pool);
    if need <= available {
        vec![]
    } else {
        vec![format!(
            "maxReplicaCount {max_replicas} x (connection_pool_size {pool} + 2) + coordinator {} = {need} source connections, over the {available} a default max_connections leaves",
            pool + 1
        )]
    }
}
