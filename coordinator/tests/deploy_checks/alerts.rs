//! Alert rules and the dashboard: the rules file's structure, each rule's runbook, and the metric
//! names their expressions use.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use super::{at, items, str_at};

/// The alerts issue 13 asks for, by name.
pub const REQUIRED: [&str; 5] =
    ["ArchiverErrorsRising", "ArchiverNoRecentSuccess", "ArchiverBacklogGrowing", "ArchiverDeadLetters", "ArchiverGovernorStuck"];

/// Metrics our binaries do not export, that a rule may use all the same, and where they come from.
/// Every other metric name in a rule or the dashboard must be on a live `/metrics` page of ours.
pub const EXTERNAL: [(&str, &str); 1] =
    [("rabbitmq_detailed_queue_messages", "RabbitMQ's rabbitmq_prometheus plugin, /metrics/detailed?family=queue_coarse_metrics")];

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// A Prometheus rules file (`groups:`), as `promtool check rules` would see its structure:
/// groups with a unique name and rules; each alerting rule with `alert`, a non-empty `expr` with
/// balanced brackets, a `for` duration, a `severity` label, a `summary` and a `runbook_url` that
/// names a heading of `runbook` (docs/troubleshooting.md's text); alert names unique; every
/// alert of [`REQUIRED`] present.
pub fn check_rules(file: &Value, runbook: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let groups = items(file, "groups");
    if groups.is_empty() {
        problems.push("no `groups`".to_string());
    }
    let anchors = super::heading_anchors(runbook);
    let mut names = BTreeSet::new();
    let mut group_names = BTreeSet::new();
    for (g, group) in groups.iter().enumerate() {
        let gname = str_at(group, "name");
        if gname.is_empty() || !group_names.insert(gname.to_string()) {
            problems.push(format!("groups[{g}]: missing or repeated `name` {gname:?}"));
        }
        if items(group, "rules").is_empty() {
            problems.push(format!("groups[{g}] ({gname}): no `rules`"));
        }
        for rule in items(group, "rules") {
            let name = str_at(rule, "alert");
            if name.is_empty() {
                problems.push(format!("groups[{g}]: a rule without `alert`"));
                continue;
            }
            if !names.insert(name.to_string()) {
                problems.push(format!("{name}: defined twice"));
            }
            problems.extend(check_rule(rule, &anchors).into_iter().map(|p| format!("{name}: {p}")));
        }
    }
    for required in REQUIRED {
        if !names.contains(required) {
            problems.push(format!("{required}: missing (issue 13 asks for it)"));
        }
    }
    problems
}

fn check_rule(rule: &Value, anchors: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let expr = str_at(rule, "expr");
    if expr.trim().is_empty() {
        problems.push("no `expr`".into());
    } else if let Err(e) = balanced(expr) {
        problems.push(format!("expr: {e}"));
    }
    let for_ = str_at(rule, "for");
    if !is_prom_duration(for_) {
        problems.push(format!("`for` {for_:?} is not a Prometheus duration"));
    }
    let severity = str_at(rule, "labels.severity");
    if !SEVERITIES.contains(&severity) {
        problems.push(format!("labels.severity {severity:?} is not one of {SEVERITIES:?}"));
    }
    if str_at(rule, "annotations.summary").is_empty() {
        problems.push("no annotations.summary".into());
    }
    let runbook = str_at(rule, "annotations.runbook_url");
    match runbook.split_once('#') {
        Some(("docs/troubleshooting.md", anchor)) if anchors.contains(anchor) => {}
        Some(("docs/troubleshooting.md", anchor)) => {
            problems.push(format!("runbook_url: docs/troubleshooting.md has no heading #{anchor}"))
        }
        _ => problems.push(format!("runbook_url {runbook:?} does not point at a section of docs/troubleshooting.md")),
    }
    let extra: Vec<_> = rule
        .as_mapping()
        .map(|m| m.keys().filter_map(Value::as_str).filter(|k| !["alert", "expr", "for", "labels", "annotations"].contains(k)).collect())
        .unwrap_or_default();
    if !extra.is_empty() {
        problems.push(format!("unknown keys {extra:?}"));
    }
    problems
}

/// `5m`, `1h30m`, `26h`: what Prometheus takes for `for`.
fn is_prom_duration(s: &str) -> bool {
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let unit = ["ms", "s", "m", "h", "d", "w", "y"].into_iter().find(|u| rest[digits..].starts_with(u));
        match (digits, unit) {
            (1.., Some(u)) => rest = &rest[digits + u.len()..],
            _ => return false,
        }
        any = true;
    }
    any
}

/// Brackets of every kind closed in order, outside string literals.
fn balanced(expr: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut quote = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '[' | '{') => stack.push(c),
            (None, ')' | ']' | '}') => {
                let open = stack.pop().ok_or_else(|| format!("unmatched {c:?}"))?;
                if !matches!((open, c), ('(', ')') | ('[', ']') | ('{', '}')) {
                    return Err(format!("{open:?} closed by {c:?}"));
                }
            }
            _ => {}
        }
    }
    match (stack.last(), quote) {
        (Some(open), _) => Err(format!("{open:?} never closed")),
        (None, Some(q)) => Err(format!("string opened with {q:?} never closed")),
        (None, None) => Ok(()),
    }
}

/// Every expression of a rules file, as (alert, expr).
pub fn rule_exprs(file: &Value) -> Vec<(String, String)> {
    items(file, "groups")
        .iter()
        .flat_map(|g| items(g, "rules"))
        .map(|r| (str_at(r, "alert").to_string(), str_at(r, "expr").to_string()))
        .collect()
}

/// Every `expr` of a Grafana dashboard, as (panel title, expr).
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    for panel in &panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr.to_string()));
            }
        }
    }
    out
}

const KEYWORDS: [&str; 12] =
    ["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2"];
const AGGREGATIONS: [&str; 13] =
    ["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk"];
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression selects: every identifier that is not a function or
/// aggregation (followed by `(`), a keyword, a label inside `{…}` or a grouping list, a duration
/// inside `[…]`, a string or a number.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_past(&chars, i + 1, c);
        } else if c == '{' {
            i = skip_past(&chars, i + 1, '}');
        } else if c == '[' {
            i = skip_past(&chars, i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let rest: String = chars[next..].iter().take(8).collect();
            let grouped = AGGREGATIONS.contains(&word.as_str()) && (rest.starts_with("by") || rest.starts_with("without"));
            let call = chars.get(next) == Some(&'(') || grouped;
            if call && LABEL_LISTS.contains(&word.as_str()) {
                i = skip_past(&chars, next + 1, ')');
            } else if !call && !KEYWORDS.contains(&word.as_str()) && !["inf", "nan"].contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn skip_past(chars: &[char], from: usize, close: char) -> usize {
    chars[from.min(chars.len())..].iter().position(|&c| c == close).map_or(chars.len(), |p| from + p + 1)
}

/// Each metric an expression of `exprs` uses that is neither in `exported` (the names of our
/// binaries' live `/metrics` pages) nor listed in [`EXTERNAL`]; `origin` says where the
/// expressions are (a file).
pub fn unexported(origin: &str, exprs: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, expr) in exprs {
        for name in metric_names(expr) {
            if !exported.contains(&name) && !EXTERNAL.iter().any(|(n, _)| *n == name) {
                problems.push(format!("{origin}: {what}: {name} is not exported by archiver-worker or archiver-coordinator"));
            }
        }
    }
    problems
}

/// The dead-letter alert watches `{queue}.dead` of the configuration's work queue.
pub fn check_dead_letter_queue(file: &Value, work_queue: &str) -> Vec<String> {
    let want = format!("queue=\"{work_queue}.dead\"");
    let rule = items(file, "groups")
        .iter()
        .flat_map(|g| items(g, "rules"))
        .find(|r| str_at(r, "alert") == "ArchiverDeadLetters");
    match rule.map(|r| str_at(r, "expr")) {
        Some(expr) if expr.contains(&want) => vec![],
        Some(expr) => vec![format!("ArchiverDeadLetters: expr {expr:?} does not select {want}")],
        None => vec!["ArchiverDeadLetters: missing".into()],
    }
}

/// A PrometheusRule carries exactly the groups of the plain rules file.
pub fn check_prometheus_rule(rule: &Value, plain: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if str_at(rule, "apiVersion") != "monitoring.coreos.com/v1" || str_at(rule, "kind") != "PrometheusRule" {
        problems.push("not a monitoring.coreos.com/v1 PrometheusRule".to_string());
    }
    if at(rule, "spec.groups") != at(plain, "groups") {
        problems.push("spec.groups differ from deploy/prometheus/alerts.yaml's groups".to_string());
    }
    problems
}
