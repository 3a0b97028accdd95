//! Keeping secrets out of everything printed: [`redact_url`] for URLs in logs and `Debug`, and
//! the keys whose values are never echoed in an error nor re-read from a substitution.

/// Keys whose values are secrets: never re-read, never echoed in an error.
const SECRET_KEYS: &[&str] = &["password", "secret_access_key", "aws_secret_access_key", "access_key_id", "aws_access_key_id", "url"];

/// Whether the value at this key path (`databases[0].password`) is a secret.
pub(super) fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    SECRET_KEYS.contains(&last)
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`, for anything printed.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL as written (`postgres//u:p@h`, `u:p@h/db`): hide everything before the last
        // `@` after the last `/` before it, where a password would be.
        return match url.rfind('@') {
            Some(at) => {
                let start = url[..at].rfind('/').map_or(0, |s| s + 1);
                format!("{}***{}", &url[..start], &url[at..])
            }
            None => url.to_string(),
        };
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{}{}@{}", &url[..scheme_end + 3], masked, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

    #[test]
    fn secrets_do_not_appear_in_errors_or_debug() {
        let text = "databases:\n  - name: app\n    url: postgres://u:hunter2@h/db\n    host: h\n    tables: []\n";
        let err = parse("c.yaml", text, &env_none).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let text = MINIMAL.replace("user: u", "user: u\n    password: hunter2");
        let c = parse("c.yaml", &text, &env_none).unwrap().config;
        assert!(!format!("{c:?}").contains("hunter2"));
        // A bad value next to a secret: the error names the key, never echoes the secret.
        let text = MINIMAL.replace("user: u", "user: u\n    password: [hunter2]");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let text = MINIMAL.replace("user: u", "user: u\n    password: {hunter2: 1}");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert!(!err.to_string().contains("hunter2") && err.path.ends_with("password"), "{err}");
        // A numeric password from the environment stays text instead of failing with its value.
        let text = MINIMAL.replace("user: u", "user: u\n    password: ${DB_PW}");
        let env = |k: &str| (k == "DB_PW").then(|| "123456".to_string());
        let c = parse("c.yaml", &text, &env).unwrap().config;
        assert_eq!(c.databases[0].password.as_deref(), Some("123456"));
    }

    #[test]
    fn redact_url_masks_password_only() {
        assert_eq!(redact_url("postgres://u:p@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        // Mistyped URLs: the password is still hidden.
        assert_eq!(redact_url("postgres//app:S3cretPW@127.0.0.1:5432/x"), "postgres//***@127.0.0.1:5432/x");
        assert_eq!(redact_url("app:S3cretPW@127.0.0.1:5432/x"), "***@127.0.0.1:5432/x");
    }
}
