//! The predecessor's keys we read and do not implement: they are removed from the document
//! before it is read into the sections, and loading warns once, naming them. Any other unknown
//! key stays in and is an error naming its path.

use serde_yaml_ng::Value;

use super::substitute::{join, key_name};

/// Keys of the predecessor's format that we read and do not implement. They load with one
/// warning that names them; everything else unknown is an error.
const PREDECESSOR_UNIMPLEMENTED: &[&str] = &[
    "s3.rate_limit_requests_per_second",
    "s3.local_fallback_dir",
    "s3.local_fallback_retention_days",
    "defaults.parallel_databases",
    "defaults.max_parallel_databases",
    "defaults.fail_on_schema_drift",
    "defaults.lock_type",
    "defaults.watermark_storage_type",
    "defaults.checkpoint_storage_type",
    "defaults.checkpoint_interval",
    "defaults.audit_trail_storage_type",
    "defaults.batch_retry_attempts",
    "defaults.batch_retry_delay",
    "defaults.skip_failed_batches",
    "defaults.max_failed_batches",
    "defaults.query_plan_analysis",
    "defaults.slow_query_threshold",
    "defaults.warn_on_seq_scan",
    "defaults.async_upload_pipeline",
    "defaults.max_concurrent_uploads",
    "databases[].tables[].critical",
    "legal_holds",
    "compliance",
    "monitoring",
    "notifications",
    "restore_watermark",
    "performance",
];

/// Removes the predecessor's unimplemented keys, recording where they were.
pub(super) fn strip_unimplemented(v: &mut Value, path: &str, found: &mut Vec<String>) {
    let generic = generic_path(path);
    match v {
        Value::Mapping(m) => {
            let keys: Vec<Value> = m.keys().cloned().collect();
            for k in keys {
                let key = key_name(&k);
                let pattern = join(&generic, &key);
                let here = join(path, &key);
                if PREDECESSOR_UNIMPLEMENTED.contains(&pattern.as_str()) {
                    m.remove(&k);
                    found.push(here);
                } else if let Some(child) = m.get_mut(&k) {
                    strip_unimplemented(child, &here, found);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strip_unimplemented(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// `databases[0].tables[3].x` -> `databases[].tables[].x`
fn generic_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::parse;
    use crate::config::tests::env_none;
    use crate::config::VacuumType;

    #[test]
    fn predecessor_example_loads_with_one_warning_naming_ignored_keys() {
        let text = include_str!("../../tests/data/predecessor-config-simple.yaml");
        let loaded = parse("simple.yaml", text, &env_none).expect("the predecessor's example loads");
        let c = &loaded.config;
        let s3 = c.s3.as_ref().unwrap();
        assert_eq!(s3.bucket, "audit-archives");
        assert_eq!(s3.prefix, "archives/");
        assert_eq!(s3.endpoint, None);
        assert_eq!(s3.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(c.defaults.sleep_between_batches.0, Duration::from_secs(2));
        let t = &c.tables()[0];
        assert_eq!((t.database.as_str(), t.schema.as_str(), t.table.as_str()), ("production_db", "public", "audit_logs"));
        assert_eq!(t.retention_days, 90);
        assert_eq!(t.batch_size, 10_000);
        // vacuum_after: true with vacuum_strategy: standard is honoured, not ignored.
        assert_eq!(t.vacuum, VacuumType::Standard);
        assert_eq!(loaded.ignored, vec!["performance".to_string(), "restore_watermark".to_string()]);
        let warning = loaded.warning(Path::new("simple.yaml")).unwrap();
        assert!(warning.contains("performance") && warning.contains("restore_watermark"), "{warning}");
    }

    #[test]
    fn generic_path_drops_indices() {
        assert_eq!(super::generic_path("databases[0].tables[3].x"), "databases[].tables[].x");
    }
}
