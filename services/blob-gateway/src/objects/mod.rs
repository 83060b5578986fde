//! What the v3 gateway needs from object storage, as one small trait:
//! conditional small writes (the commit record), a streamed upload of a
//! known length (a pack), ranged reads, listings with sizes and times, and
//! bulk deletes. [`s3`] implements it over `aws-sdk-s3`; [`memory`] in
//! memory, with faults to inject (a store that ignores write conditions,
//! one that fails after N calls) for unit tests of the commit protocol.

pub mod memory;
pub mod s3;

use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use crate::store::{ObjectInfo, StoreError};

/// A stream of object bytes, in or out.
pub type Body = BoxStream<'static, Result<Bytes, StoreError>>;

/// The precondition of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Write whatever is there.
    None,
    /// `If-None-Match: *`: only if no object exists at the key.
    IfNoneMatch,
    /// `If-Match: <etag>`: only if the object is still this version.
    IfMatch(String),
}

/// A small object read whole, with the version tag a conditional write
/// names.
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Bytes,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// One cheap request that succeeds only if the bucket answers.
    async fn check(&self) -> Result<(), StoreError>;

    /// Writes a small object in one request under `condition`; a lost
    /// condition is [`StoreError::PreconditionFailed`] (or
    /// [`StoreError::NotFound`] for `IfMatch` on a missing object). Returns
    /// the new version's etag.
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        condition: Condition,
    ) -> Result<String, StoreError>;

    /// Streams exactly `size` bytes from `body` to `key` (multipart above
    /// the part size). The object becomes visible whole or not at all: a
    /// body that fails, ends short or runs long drops the upload
    /// ([`StoreError::Aborted`] unless the body's own error says more).
    async fn put_stream(&self, key: &str, size: u64, body: Body) -> Result<(), StoreError>;

    /// A small object read whole, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError>;

    /// `len` bytes from `offset` (to the end when `None`), streamed. A range
    /// outside the object is [`StoreError::InvalidRange`].
    async fn get_range(&self, key: &str, offset: u64, len: Option<u64>)
    -> Result<Body, StoreError>;

    /// The object's size, or `None`.
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError>;

    /// Every object under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// The "directories" directly under `prefix` (keys up to the next `/`).
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Deletes `keys` (missing ones count as deleted); how many there were.
    async fn delete_many(&self, keys: Vec<String>) -> Result<u64, StoreError>;
}
