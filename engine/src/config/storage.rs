//! Where the objects go: the predecessor's `s3` section and our `storage` section (a local
//! directory). They are exclusive; without either, objects go to `./archive`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::validate::Problems;

/// The predecessor's `s3` section, read unchanged.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Service URL for S3-compatible servers (MinIO, Ceph, ...); null or absent for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bucket that receives the objects. It must exist.
    pub bucket: String,
    /// Key prefix for every object, e.g. `archives/`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub prefix: String,
    /// Region; `us-east-1` by default.
    #[serde(default = "default_region")]
    pub region: String,
    /// Storage class of the data objects, e.g. `STANDARD`, `STANDARD_IA`, `GLACIER_IR`.
    /// Absent: the bucket's default.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Server-side encryption: `SSE-S3`, `SSE-KMS` (with `kms_key_id`) or `none`. Absent: none
    /// requested (the bucket's default applies).
    #[serde(default)]
    pub encryption: Option<String>,
    /// KMS key for `encryption: SSE-KMS`; absent uses the account's default key.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Objects larger than this many MiB are uploaded in parts (of this size, at least 5 MiB).
    #[serde(default = "default_multipart_threshold_mb")]
    pub multipart_threshold_mb: u64,
    /// Path-style addressing (`endpoint/bucket/key`). Default: on when `endpoint` is set.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Access key; prefer the standard AWS variables or roles. `aws_access_key_id` also works.
    #[serde(default, alias = "aws_access_key_id")]
    pub access_key_id: Option<String>,
    /// Secret key; never logged. `aws_secret_access_key` also works.
    #[serde(default, alias = "aws_secret_access_key")]
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_multipart_threshold_mb() -> u64 {
    10
}

impl S3Config {
    /// Records what is wrong with this section, found at `path`.
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if self.bucket.trim().is_empty() {
            problems.add(format!("{path}.bucket"), "must not be empty");
        }
        if let Some(problem) = super::prefix_problem(&self.prefix) {
            problems.add(format!("{path}.prefix"), problem);
        }
        if self.multipart_threshold_mb == 0 {
            problems.add(format!("{path}.multipart_threshold_mb"), "must be at least 1");
        }
        if let Some(enc) = &self.encryption {
            if !matches!(enc.to_ascii_uppercase().as_str(), "SSE-S3" | "SSE-KMS" | "NONE" | "AES256" | "AWS:KMS") {
                problems.add(format!("{path}.encryption"), format!("unsupported {enc:?}; expected SSE-S3, SSE-KMS or none"));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            problems.add(format!("{path}.secret_access_key"), "access_key_id and secret_access_key must be set together");
        }
    }
}

/// Our `storage` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A directory on this machine; objects are written atomically (temporary file, fsync, rename).
    Local {
        /// The directory; created if missing.
        path: PathBuf,
        /// Key prefix inside the directory.
        #[serde(default)]
        prefix: String,
    },
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{env_none, MINIMAL};
    use crate::config::{parse, StorageConfig};

    #[test]
    fn s3_defaults_and_errors() {
        let text = format!("s3:\n  bucket: b\n  prefix: null\n  aws_access_key_id: AKIA\n  aws_secret_access_key: shh\n{MINIMAL}");
        let s3 = parse("c", &text, &env_none).unwrap().config.s3.unwrap();
        assert_eq!((s3.prefix.as_str(), s3.region.as_str(), s3.multipart_threshold_mb), ("", "us-east-1", 10));
        assert!(!format!("{s3:?}").contains("shh"));
        let text = format!("s3:\n  bucket: \" \"\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "s3.bucket");
        let text = format!("s3:\n  bucket: b\n  encryption: rot13\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "s3.encryption");
        let text = format!("s3:\n  bucket: b\n  access_key_id: AKIA\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "s3.secret_access_key");
    }

    #[test]
    fn local_storage_reads_its_type() {
        let text = format!("storage:\n  type: local\n  path: /tmp/x\n{MINIMAL}");
        let c = parse("c", &text, &env_none).unwrap().config;
        assert!(matches!(c.storage, Some(StorageConfig::Local { ref path, ref prefix }) if path.to_str() == Some("/tmp/x") && prefix.is_empty()));
    }

    #[test]
    fn a_prefix_cannot_climb_out_of_its_directory_or_bucket() {
        for bad in ["../../escape", "a/../../b", "/../etc", "./x", "a\\..\\b", "a//b"] {
            let local = format!("storage:\n  type: local\n  path: /tmp/x\n  prefix: '{bad}'\n{MINIMAL}");
            assert_eq!(parse("c", &local, &env_none).unwrap_err().path, "storage.prefix", "{bad}");
            let s3 = format!("s3:\n  bucket: b\n  prefix: '{bad}'\n{MINIMAL}");
            assert_eq!(parse("c", &s3, &env_none).unwrap_err().path, "s3.prefix", "{bad}");
        }
        for good in ["archives/", "/archives/", "a/b.c/..d/", "x..y", ""] {
            let local = format!("storage:\n  type: local\n  path: /tmp/x\n  prefix: '{good}'\n{MINIMAL}");
            assert!(parse("c", &local, &env_none).is_ok(), "{good}");
        }
    }
}
