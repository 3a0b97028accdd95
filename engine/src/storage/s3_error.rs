//! What an S3 error means for the run: worth retrying, or refused for good.
//!
//! S3 names its errors with a service code (`AccessDenied`, `NoSuchBucket`, `SlowDown`, ...).
//! Authentication, authorization, a missing or invalid bucket, a wrong region or a bad setting are
//! permanent: retrying each item would fail the same way, so the run stops with one clear line
//! saying what to fix. Throttling, server errors, timeouts and dropped connections are transient.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{Refusal, StorageError};

/// How one S3 failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Transient,
    /// Refused for good; the text says what to do.
    Permanent(&'static str),
}

const CREDENTIALS: &str = "check s3.access_key_id and s3.secret_access_key (or the AWS credentials the process sees)";
const PERMISSIONS: &str = "give these credentials s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject on the bucket";

/// The class of an error from its service code, else from its HTTP status.
pub fn classify(status: Option<u16>, code: Option<&str>) -> Class {
    use Class::*;
    match code.unwrap_or("") {
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AuthorizationHeaderMalformed" | "ExpiredToken" | "InvalidToken"
        | "TokenRefreshRequired" | "InvalidSecurity" => Permanent(CREDENTIALS),
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => Permanent(PERMISSIONS),
        "NoSuchBucket" => Permanent("create the bucket, or correct s3.bucket"),
        "InvalidBucketName" => Permanent("a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens: correct s3.bucket"),
        "PermanentRedirect" | "IllegalLocationConstraintException" | "AuthorizationQueryParametersError" => {
            Permanent("the bucket is in another region: correct s3.region")
        }
        "InvalidStorageClass" => Permanent("correct s3.storage_class"),
        "RequestTimeTooSkewed" => Permanent("this machine's clock is off by more than 15 minutes: fix its time"),
        c if c.starts_with("KMS.") => Permanent("check s3.kms_key_id and that these credentials may use the key"),
        "InvalidArgument" | "InvalidRequest" | "MethodNotAllowed" | "NotImplemented" => {
            Permanent("the server refused the request as configured: check the s3 section")
        }
        // A body damaged on the way, throttling, server trouble: the same call may pass.
        "BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest" | "SlowDown" | "InternalError" | "ServiceUnavailable"
        | "RequestTimeout" | "Throttling" | "ThrottlingException" => Transient,
        _ => match status {
            Some(401 | 403) => Permanent(CREDENTIALS),
            Some(400) => Permanent("the server refused the request as configured: check the s3 section"),
            _ => Transient,
        },
    }
}

/// A failed call as a [`StorageError`] naming the operation, bucket and key.
pub fn storage_error<E>(op: &'static str, bucket: &str, key: &str, e: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (status, code, message) = match &e {
        SdkError::ServiceError(se) => {
            (Some(se.raw().status().as_u16()), se.err().code().map(str::to_string), se.err().message().map(str::to_string))
        }
        _ => (None, None, None),
    };
    match (&e, classify(status, code.as_deref())) {
        // A request the SDK could not even build is a configuration problem.
        (SdkError::ConstructionFailure(_), _) => StorageError::Config(format!("{op} s3://{bucket}/{key}: {}", DisplayErrorContext(&e))),
        (SdkError::ServiceError(_), Class::Permanent(advice)) => StorageError::Refused(Box::new(Refusal {
            op,
            bucket: bucket.to_string(),
            key: key.to_string(),
            status: status.unwrap_or(0),
            code: code.unwrap_or_else(|| "(no code)".into()),
            message: message.unwrap_or_default(),
            advice,
        })),
        _ => StorageError::Transient {
            op,
            key: format!("s3://{bucket}/{key}"),
            message: match (code, message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c,
                _ => DisplayErrorContext(&e).to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_before_statuses() {
        assert_eq!(classify(Some(403), Some("SignatureDoesNotMatch")), Class::Permanent(CREDENTIALS));
        assert_eq!(classify(Some(403), Some("AccessDenied")), Class::Permanent(PERMISSIONS));
        assert!(matches!(classify(Some(404), Some("NoSuchBucket")), Class::Permanent(a) if a.contains("s3.bucket")));
        assert!(matches!(classify(Some(400), Some("InvalidBucketName")), Class::Permanent(a) if a.contains("63")));
        assert_eq!(classify(Some(503), Some("SlowDown")), Class::Transient);
        assert_eq!(classify(Some(400), Some("BadDigest")), Class::Transient);
        assert_eq!(classify(Some(400), Some("RequestTimeout")), Class::Transient);
    }

    #[test]
    fn statuses_decide_without_a_code() {
        assert_eq!(classify(Some(403), None), Class::Permanent(CREDENTIALS));
        assert!(matches!(classify(Some(400), None), Class::Permanent(_)));
        assert_eq!(classify(Some(500), None), Class::Transient);
        assert_eq!(classify(Some(429), None), Class::Transient);
        assert_eq!(classify(None, None), Class::Transient);
    }
}
