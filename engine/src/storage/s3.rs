//! S3 and S3-compatible servers through `aws-sdk-s3`.
//!
//! Contract: every upload carries the body's SHA-256 (`x-amz-checksum-sha256`, per part for
//! multipart uploads), so the server refuses a body damaged in transit; `head` asks the server for
//! the checksum it stored (`ChecksumMode::Enabled`), which verification compares with what we
//! computed. A PUT is atomic on S3; a multipart upload becomes visible only when completed, and is
//! aborted if any part fails.

use async_trait::async_trait;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::s3_error::storage_error;
use super::{check_key, join_prefix, sha256, ObjectMeta, ObjectStore, Result, StorageError};
use crate::config::S3Config;

const MIN_PART: u64 = 5 * 1024 * 1024;

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    multipart_threshold: u64,
    endpoint: Option<String>,
    region: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl S3Store {
    pub async fn new(cfg: &S3Config) -> Result<Self> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .http_client(http);
        if let (Some(ak), Some(sk)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(ak, sk, None, None, "archiver-config"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            // We send our own SHA-256 on every upload; no second checksum of the SDK's choosing.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(cfg.path_style.unwrap_or(cfg.endpoint.is_some()));
        if let Some(ep) = &cfg.endpoint {
            builder = builder.endpoint_url(ep);
        }
        let sse = match cfg.encryption.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("NONE") => None,
            Some("SSE-S3") | Some("AES256") => Some(ServerSideEncryption::Aes256),
            Some("SSE-KMS") | Some("AWS:KMS") => Some(ServerSideEncryption::AwsKms),
            Some(other) => return Err(StorageError::Config(format!("unsupported s3.encryption {other:?}"))),
        };
        let kms_key_id = if matches!(sse, Some(ServerSideEncryption::AwsKms)) { cfg.kms_key_id.clone() } else { None };
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.trim_matches('/').to_string(),
            storage_class: cfg.storage_class.as_deref().map(StorageClass::from),
            sse,
            kms_key_id,
            multipart_threshold: (cfg.multipart_threshold_mb * 1024 * 1024).max(MIN_PART),
            endpoint: cfg.endpoint.clone(),
            region: cfg.region.clone(),
        })
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(join_prefix(&self.prefix, key))
    }

    async fn put_multipart(&self, full: &str, body: Bytes) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_storage_class(self.storage_class.clone())
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .send()
            .await
            .map_err(|e| storage_error("create multipart upload", &self.bucket, full, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(full, &upload_id, &body).await;
        if result.is_err() {
            // Best effort: a dangling upload is invisible and expires by bucket lifecycle rules.
            let _ = self.client.abort_multipart_upload().bucket(&self.bucket).key(full).upload_id(&upload_id).send().await;
        }
        result
    }

    async fn upload_parts(&self, full: &str, upload_id: &str, body: &Bytes) -> Result<String> {
        let part_size = self.multipart_threshold as usize;
        let mut parts = Vec::new();
        let mut digests = Vec::new();
        for (i, start) in (0..body.len()).step_by(part_size).enumerate() {
            let chunk = body.slice(start..(start + part_size).min(body.len()));
            let digest = sha256(&chunk);
            digests.extend_from_slice(&digest);
            let number = i as i32 + 1;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_sha256(b64(&digest))
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| storage_error("upload part", &self.bucket, full, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .checksum_sha256(b64(&digest))
                    .build(),
            );
        }
        let count = parts.len();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| storage_error("complete multipart upload", &self.bucket, full, e))?;
        // S3's checksum of a multipart object: SHA-256 over the parts' digests, then "-N".
        Ok(format!("{}-{count}", b64(&Sha256::digest(&digests))))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<String> {
        let full = self.full_key(key)?;
        if body.len() as u64 > self.multipart_threshold {
            return self.put_multipart(&full, body).await;
        }
        let checksum = b64(&sha256(&body));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_length(body.len() as i64)
            .checksum_sha256(&checksum)
            .set_storage_class(self.storage_class.clone())
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| storage_error("put", &self.bucket, &full, e))?;
        Ok(checksum)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let full = self.full_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(&full).checksum_mode(ChecksumMode::Enabled).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                checksum: out.checksum_sha256().map(str::to_string),
            })),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(storage_error("head", &self.bucket, &full, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let full = self.full_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
            Ok(out) => {
                let data = out.body.collect().await.map_err(|e| StorageError::Transient {
                    op: "get",
                    key: full.clone(),
                    message: e.to_string(),
                })?;
                Ok(Some(data.into_bytes()))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(storage_error("get", &self.bucket, &full, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full_prefix = join_prefix(&self.prefix, prefix);
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full_prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| storage_error("list", &self.bucket, &full_prefix, e))?;
            for obj in page.contents() {
                if let Some(k) = obj.key() {
                    out.push(k[strip..].to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map(drop)
            .map_err(|e| storage_error("delete", &self.bucket, &full, e))
    }

    async fn check(&self) -> Result<()> {
        let at = self.endpoint.as_deref().unwrap_or("AWS S3");
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                let b = &self.bucket;
                Err(StorageError::Config(match status {
                    404 => format!("bucket {b:?} does not exist at {at}: create it, or correct s3.bucket"),
                    401 | 403 => format!(
                        "access to bucket {b:?} at {at} denied (HTTP {status}): check the credentials \
                         (s3.access_key_id and s3.secret_access_key), and that they may use this bucket"
                    ),
                    400 => format!(
                        "bucket {b:?} at {at}: the server refused the request (HTTP 400): a bucket name is 3 to 63 \
                         lowercase letters, digits, dots and hyphens; also check s3.region"
                    ),
                    301 => format!("bucket {b:?} is in another region than s3.region {:?}: correct s3.region", self.region),
                    _ => format!("bucket {b:?} at {at}: HTTP {status}"),
                }))
            }
            Err(e) => Err(StorageError::Config(format!("cannot reach the S3 endpoint {at}: {}", DisplayErrorContext(&e)))),
        }
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
