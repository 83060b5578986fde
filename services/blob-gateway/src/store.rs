//! The gateway's only door to object storage: `aws-sdk-s3` with an endpoint
//! override and path-style addressing, so the same code serves the local S3
//! server, MinIO, RustFS or AWS S3.

use std::time::SystemTime;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use aws_sdk_s3::config::timeout::TimeoutConfig;

use crate::config::{S3Args, S3Timeouts};

/// How many deletes run at once when a backup is removed.
const DELETE_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Timeouts, refused connections, 5xx: retrying may help.
    #[error("object storage is unreachable: {0}")]
    Unavailable(String),
    #[error("object not found")]
    NotFound,
    /// HTTP 507 (`XMinioStorageFull`, local S3 on a full disk): nothing can
    /// be written until the operator frees space.
    #[error("object storage is full: {0}")]
    Full(String),
    /// HTTP 403: the gateway's credentials or the bucket policy are wrong.
    #[error("object storage denied access: {0}")]
    Denied(String),
    /// HTTP 412: an `If-Match` / `If-None-Match` write lost its condition.
    #[error("a conditional write lost its condition")]
    PreconditionFailed,
    /// HTTP 416: a ranged read outside the object.
    #[error("the requested range is outside the object")]
    InvalidRange,
    /// The body a streamed upload read from failed or was refused; the
    /// upload was dropped and nothing became visible.
    #[error("the upload was abandoned: {0}")]
    Aborted(String),
    #[error("object storage error: {0}")]
    Other(String),
}

pub(crate) fn classify<E>(error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let text = DisplayErrorContext(&error).to_string();
    match (&error, status, code.as_deref()) {
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _, _) => {
            StoreError::Unavailable(text)
        }
        (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NotFound")) => StoreError::NotFound,
        (_, Some(412), _) | (_, _, Some("PreconditionFailed")) => StoreError::PreconditionFailed,
        (_, Some(416), _) | (_, _, Some("InvalidRange")) => StoreError::InvalidRange,
        (_, Some(507), _) | (_, _, Some("XMinioStorageFull")) => StoreError::Full(text),
        (_, Some(403), _) | (_, _, Some("AccessDenied")) => StoreError::Denied(text),
        (_, Some(500..=599), _) | (SdkError::ResponseError(_), _, _) => {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Other(text),
    }
}

/// One object in a listing.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was written, by the object store's clock.
    pub last_modified: Option<SystemTime>,
}

/// A bounded listing: the objects found, and whether keys may remain after
/// the last one (the listing stopped at its page budget).
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<ObjectInfo>,
    pub truncated: bool,
}

fn object_info(object: &aws_sdk_s3::types::Object) -> Option<ObjectInfo> {
    Some(ObjectInfo {
        key: object.key()?.to_string(),
        size: object.size().unwrap_or(0).max(0) as u64,
        last_modified: object
            .last_modified()
            .and_then(|t| SystemTime::try_from(*t).ok()),
    })
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    bucket: String,
    part_bytes: usize,
}

/// An `aws-sdk-s3` client for `args`: endpoint override, path-style
/// addressing, static credentials. Integrity is end to end (every chunk is
/// AEAD-sealed by the device), so the SDK's optional CRC checksums would only
/// cost CPU; they are sent and checked only where an S3 operation requires
/// them. Also used by the simulator's raw-S3 baseline, so both measure the
/// same client.
pub fn client(args: &S3Args) -> Client {
    client_with_timeouts(args, None)
}

/// [`client`] with the SDK's connect, read, attempt and operation timeouts,
/// so a stalled object store ends a call instead of hanging it.
pub fn client_with_timeouts(args: &S3Args, timeouts: Option<&S3Timeouts>) -> Client {
    let credentials = Credentials::new(
        &args.access_key,
        &args.secret_key,
        None,
        None,
        "blob-gateway-config",
    );
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&args.endpoint)
        .region(Region::new(args.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(timeouts) = timeouts {
        config = config.timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.read)
                .operation_attempt_timeout(timeouts.attempt)
                .operation_timeout(timeouts.operation)
                .build(),
        );
    }
    Client::from_conf(config.build())
}

impl Store {
    pub fn new(args: &S3Args, part_bytes: usize) -> Self {
        Self::with_client(client(args), args, part_bytes)
    }

    /// A store over an already configured client (see [`client_with_timeouts`]).
    pub fn with_client(client: Client, args: &S3Args, part_bytes: usize) -> Self {
        Self {
            client,
            bucket: args.bucket.clone(),
            part_bytes: part_bytes.max(5 * 1024 * 1024),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks that the bucket answers, creating it if allowed.
    pub async fn ensure_bucket(&self, create: bool) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => match classify(error) {
                StoreError::NotFound if create => {
                    self.client
                        .create_bucket()
                        .bucket(&self.bucket)
                        .send()
                        .await
                        .map_err(classify)?;
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    /// Starts a streamed upload of `key`; nothing is visible until `finish`.
    pub fn writer(&self, key: String) -> BlobWriter {
        BlobWriter {
            store: self.clone(),
            key,
            buffer: BytesMut::new(),
            multipart: None,
        }
    }

    pub async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)?;
        Ok(object.body)
    }

    /// Reads a small object whole; `None` if it does not exist.
    pub async fn get_small(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let body = match self.get(key).await {
            Ok(body) => body,
            Err(StoreError::NotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let bytes = body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Some(bytes.into_bytes()))
    }

    /// Writes a small object in one PUT, which S3 makes atomic.
    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Lists every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            objects.extend(page.contents().iter().filter_map(object_info));
        }
        Ok(objects)
    }

    /// Lists objects under `prefix` whose keys sort after `start_after`, in
    /// key order, reading at most `max_pages` pages of 1,000 keys.
    pub async fn list_from(
        &self,
        prefix: &str,
        start_after: &str,
        max_pages: usize,
    ) -> Result<Listing, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .start_after(start_after)
            .into_paginator()
            .send();
        let mut listing = Listing::default();
        for _ in 0..max_pages {
            let Some(page) = pages.next().await else {
                return Ok(listing);
            };
            let page = page.map_err(classify)?;
            listing
                .objects
                .extend(page.contents().iter().filter_map(object_info));
            listing.truncated = page.is_truncated().unwrap_or(false);
            if !listing.truncated {
                break;
            }
        }
        Ok(listing)
    }

    /// The "directories" directly under `prefix` (keys up to the next `/`).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut dirs = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        }
        Ok(dirs)
    }

    /// The size of `key`, or `None` if it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(StoreError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Deletes `keys` with bounded concurrency; returns how many were deleted.
    pub async fn delete_all(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        let count = keys.len() as u64;
        futures::stream::iter(keys)
            .map(|key| async move { self.delete(&key).await })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }
}

/// A streamed upload: one PUT for a blob that fits in a part, an S3
/// multipart upload with bounded memory otherwise.
pub struct BlobWriter {
    store: Store,
    key: String,
    buffer: BytesMut,
    multipart: Option<Multipart>,
}

struct Multipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl BlobWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(data);
        while self.buffer.len() >= self.store.part_bytes {
            let part = self.buffer.split_to(self.store.part_bytes).freeze();
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let (client, bucket) = (&self.store.client, &self.store.bucket);
        if self.multipart.is_none() {
            let created = client
                .create_multipart_upload()
                .bucket(bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(classify)?;
            let upload_id = created
                .upload_id()
                .ok_or_else(|| StoreError::Other("multipart upload without an id".into()))?;
            self.multipart = Some(Multipart {
                upload_id: upload_id.to_string(),
                parts: Vec::new(),
            });
        }
        let multipart = self.multipart.as_mut().expect("created above");
        let number = multipart.parts.len() as i32 + 1;
        let uploaded = client
            .upload_part()
            .bucket(bucket)
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(classify)?;
        multipart.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    /// Makes the object visible, whole.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            let body = std::mem::take(&mut self.buffer).freeze();
            self.store
                .client
                .put_object()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(classify)?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer).freeze();
            self.upload_part(last).await?;
        }
        let multipart = self.multipart.take().expect("checked above");
        let completed = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(multipart.parts))
                    .build(),
            )
            .send()
            .await;
        if let Err(error) = completed {
            self.abort_upload(&multipart.upload_id).await;
            return Err(classify(error));
        }
        Ok(())
    }

    /// Drops whatever was uploaded; the object never becomes visible.
    pub async fn abort(mut self) {
        if let Some(multipart) = self.multipart.take() {
            self.abort_upload(&multipart.upload_id).await;
        }
    }

    async fn abort_upload(&self, upload_id: &str) {
        let _ = self
            .store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await;
    }
}
