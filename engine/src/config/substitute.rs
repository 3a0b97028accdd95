//! Environment substitution: `${VAR}` and `${VAR:-default}` in every string value of the parsed
//! YAML, before it is read into the sections; plus the key-path helpers the YAML walks share.

use serde_yaml_ng::Value;

use super::redact::is_secret_path;

/// Replaces `${VAR}` and `${VAR:-default}` in every string value. A value that is exactly one
/// substitution is re-read as YAML, so `port: ${PGPORT:-5432}` is a number (secrets stay text).
pub(super) fn substitute(v: &mut Value, path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), (String, String)> {
    match v {
        Value::String(s) if s.contains("${") => {
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let out = expand(s, env).map_err(|m| (path.to_string(), m))?;
            *v = if whole && !is_secret_path(path) {
                match serde_yaml_ng::from_str::<Value>(&out) {
                    Ok(scalar @ (Value::Number(_) | Value::Bool(_))) => scalar,
                    _ => Value::String(out),
                }
            } else {
                Value::String(out)
            };
        }
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = key_name(k);
                substitute(val, &join(path, &key), env)?;
            }
        }
        Value::Sequence(items) => {
            for (i, val) in items.iter_mut().enumerate() {
                substitute(val, &format!("{path}[{i}]"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated ${...} substitution".to_string())?;
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {var:?} in ${{...}}"));
        }
        match (env(var), default) {
            (Some(val), _) => out.push_str(&val),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {var} is not set and has no default")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A mapping key as text (a non-string key as its YAML form).
pub(super) fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// `databases[0]` + `name` -> `databases[0].name`; at the root, just `name`.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

    #[test]
    fn env_substitution_with_defaults_and_numbers() {
        let text = MINIMAL.replace("host: localhost", "host: ${PGHOST:-db.local}\n    port: ${PGPORT:-5433}")
            .replace("user: u", "user: ${PGUSER}-x");
        let env = |k: &str| (k == "PGUSER").then(|| "alice".to_string());
        let c = parse("c.yaml", &text, &env).unwrap().config;
        assert_eq!(c.databases[0].host.as_deref(), Some("db.local"));
        assert_eq!(c.databases[0].port, Some(5433));
        assert_eq!(c.databases[0].user.as_deref(), Some("alice-x"));
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let text = MINIMAL.replace("user: u", "user: ${NOPE_NOT_SET}");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert_eq!(err.path, "databases[0].user");
        assert!(err.message.contains("NOPE_NOT_SET"), "{err}");
    }
}
