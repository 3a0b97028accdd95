//! The checks of `tests/deploy.rs`: each takes what it checks (parsed YAML, a file's text) and
//! returns the problems it found, one line each, so a test can apply it to the repository's files
//! and to a copy broken on purpose.
#![allow(dead_code)]

pub mod alerts;
pub mod compose;
pub mod k8s;
pub mod keda;
pub mod live;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// A file of the repository, as text.
pub fn text(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of `text` (a `---`-separated stream), with `<<` merge keys applied.
pub fn parse_docs(name: &str, text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut v = Value::deserialize(doc).map_err(|e| format!("{name}: not valid YAML: {e}"))?;
        v.apply_merge().map_err(|e| format!("{name}: merge keys: {e}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The one YAML document of a repository file.
pub fn yaml(rel: &str) -> Value {
    let mut docs = parse_docs(rel, &text(rel)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// Every `*.yaml`/`*.yml` file under `dir` (relative to the repository), sorted.
pub fn yaml_files(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let root = repo();
    let mut out = Vec::new();
    walk(&root, &root.join(dir), &mut out);
    out.sort();
    out
}

/// `v` at a dotted path (`spec.template.spec`), or Null.
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    path.split('.').try_fold(v, |v, key| v.get(key)).unwrap_or(&NULL)
}

/// `v` at `path` as text, or "" if absent or not text.
pub fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

/// A sequence's items (none if absent).
pub fn items<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_sequence().map_or(&[], |s| s.as_slice())
}

/// A list of command-line arguments as text.
pub fn args(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|a| a.as_str().map(str::to_string).unwrap_or_else(|| yaml_scalar(a))).collect())
        .unwrap_or_default()
}

fn yaml_scalar(v: &Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_default().trim().to_string()
}

/// The value after `flag` in `args`.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The port of a `--metrics-addr` value such as `0.0.0.0:9102`.
pub fn metrics_port(args: &[String]) -> Option<u16> {
    flag(args, "--metrics-addr")?.rsplit(':').next()?.parse().ok()
}

/// A duration as our binaries and Compose write it (`90s`, `5h`, `1h 30m`), in seconds.
pub fn seconds(text: &str) -> Option<u64> {
    humantime::parse_duration(text).ok().map(|d| d.as_secs())
}

/// A Kubernetes memory quantity (`128Mi`, `1Gi`, `100M`, plain bytes) in bytes.
pub fn bytes(quantity: &str) -> Option<u64> {
    let units: [(&str, u64); 6] =
        [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000)];
    for (suffix, factor) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<u64>().ok().map(|n| n * factor);
        }
    }
    quantity.parse().ok()
}

/// Replaces `${VAR:-default}` by its default and `${VAR}` by "" (Compose's interpolation with
/// nothing set in the shell).
pub fn interpolate_defaults(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, d)| d));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The metric names a Prometheus text exposition (a `/metrics` page) holds, with the histogram
/// series' suffixes as they appear (`_bucket`, `_sum`, `_count`).
pub fn exposition_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The anchors GitHub gives the headings of a Markdown file (`### Foo bar` -> `foo-bar`).
pub fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}
