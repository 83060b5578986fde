//! [`PatchedFs`]: `s3s_fs::FileSystem` with the defects of 0.14.1 fixed.
//!
//! | defect in `s3s-fs` 0.14.1 | fix here |
//! |---|---|
//! | an empty `delimiter=` is used as a delimiter, so every key becomes a one-character common prefix (`aws-sdk-s3` can send `delimiter=`) | ListObjects / ListObjectsV2 treat an empty delimiter as none |
//! | HEAD / GET of a key that is a directory on disk (key `a/b` while `a/b/c` exists) fails with 500 | 404 `NoSuchKey` |
//! | GET reads the file 4 KiB at a time (about half the PUT rate) | GET bodies are read in 1 MiB chunks (`src/body.rs`) |
//! | a suffix range longer than the object (`bytes=-N`, N > size) fails with 500 | served as the whole object, as RFC 9110 says |
//! | ListObjectsV2 walks the whole bucket for every page, whatever the prefix | listings without a delimiter walk only the prefix's directory (`src/listing.rs`) |
//! | PutObject / CompleteMultipartUpload check `If-None-Match` / `If-Match` and then write, so two conditional writes can both succeed | a per-object lock held across check and rename (`src/locks.rs`); PUT writes to a temporary file first (`src/write.rs`) |
//! | PutObject renames the body into place before it checks `Content-MD5` and checksums, so a bad digest replaces the object and answers `BadDigest`; a GET meanwhile pairs the new body with the old ETag | digests are checked before the rename; body and sidecars are renamed under the lock that GET and HEAD read under (`src/write.rs`) |
//! | DeleteObject / DeleteObjects leave the object's two sidecar files behind for ever | deletes remove them; the orphans already on disk are swept at start (`src/delete.rs`, `src/sidecar.rs`) |
//! | a full disk (`ENOSPC`, `EDQUOT`) answers 500 `InternalError`, like any fault | 507 `XMinioStorageFull`, logged once per episode (`src/space.rs`) |
//! | ListMultipartUploads is not implemented; an unknown upload id answers 403 `AccessDenied` | uploads are listed (`src/uploads.rs`); an unknown upload is 404 `NoSuchUpload` |
//! | CompleteMultipartUpload consumes the upload before it finds a missing or too-small part, and keeps the previous version's checksums beside the new ETag | parts are checked first; the ETag is stored alone (`src/uploads.rs`) |
//! | a PUT into a bucket that does not exist creates the bucket | 404 `NoSuchBucket` |
//! | DeleteBucket leaves the sidecars of the objects it removed | they are swept with it |
//!
//! Writes of keys with `..` or a leading `/` are refused (`InvalidArgument`): on disk
//! they would alias another key, outside the per-object locks.
//!
//! The `S3` trait gives every operation a default that answers `NotImplemented`, so the
//! wrapper forwards, one by one, every operation `s3s-fs` implements.

use std::io;
use std::path::{Path, PathBuf};

use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;
use tokio::fs::File;
use tracing::info;

use crate::body;
use crate::config::TestOptions;
use crate::delete;
use crate::listing;
use crate::locks::KeyLocks;
use crate::sidecar;
use crate::space::{Disk, FullDiskLog, SimulatedCapacity, Space};
use crate::uploads;
use crate::write;

/// An S3 implementation over a directory: `s3s_fs::FileSystem` plus the fixes listed in
/// the [module docs](self). Each bucket is a subdirectory of the root.
#[derive(Debug)]
pub struct PatchedFs {
    pub(crate) inner: FileSystem,
    /// The canonical root, the same one `inner` resolves keys against.
    pub(crate) root: PathBuf,
    pub(crate) locks: KeyLocks,
    pub(crate) space: Box<dyn Space>,
    pub(crate) full: FullDiskLog,
}

impl PatchedFs {
    /// Serves the existing directory `root`.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        Self::with_test_options(root, &TestOptions::default())
    }

    /// Serves the existing directory `root`, with the hidden test options. Sidecar files
    /// that earlier deletes left behind are removed first.
    pub fn with_test_options(root: impl AsRef<Path>, test: &TestOptions) -> io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        // `s3s_fs::Error` implements neither `Display` nor `Error`.
        let inner = FileSystem::new(&root).map_err(|e| io::Error::other(format!("{e:?}")))?;
        let swept = sidecar::sweep_orphans(&root)?;
        if swept > 0 {
            info!(swept, root = %root.display(), "removed sidecar files of deleted objects");
        }
        let space: Box<dyn Space> = match test.test_capacity_bytes {
            Some(capacity) => Box::new(SimulatedCapacity {
                root: root.clone(),
                capacity,
            }),
            None => Box::new(Disk),
        };
        Ok(Self {
            inner,
            root,
            locks: KeyLocks::default(),
            space,
            full: FullDiskLog::default(),
        })
    }

    /// Where `s3s-fs` keeps `bucket`/`key`, for keys that are plain relative paths.
    /// Other keys (absolute, with `..`) are left to `s3s-fs` to accept or refuse.
    fn object_path(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        sidecar::plain_object_path(&self.root, bucket, key)
    }

    /// The path of an object that a request changes; keys that are not plain relative
    /// paths are refused, since on disk they would alias another key.
    pub(crate) fn writable_path(&self, bucket: &str, key: &str) -> S3Result<PathBuf> {
        self.object_path(bucket, key).ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "local-s3 stores keys as file paths and cannot store a key with '..' or a leading '/'"
            )
        })
    }

    pub(crate) fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    async fn is_directory(&self, bucket: &str, key: &str) -> bool {
        match self.object_path(bucket, key) {
            Some(path) => tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()),
            None => false,
        }
    }
}

/// `s3s` parses `?delimiter=` as `Some("")`; S3 treats it as no delimiter.
fn drop_empty_delimiter(delimiter: &mut Option<Delimiter>) {
    if delimiter.as_deref() == Some("") {
        *delimiter = None;
    }
}

/// A suffix range longer than the object selects the whole object (RFC 9110 §14.1.2).
/// `s3s-fs` would seek before the start of the file instead.
fn clamp_suffix_range(range: Range, object_len: u64) -> Range {
    match range {
        Range::Suffix { length } if object_len > 0 && length > object_len => Range::Int {
            first: 0,
            last: None,
        },
        other => other,
    }
}

#[async_trait::async_trait]
impl S3 for PatchedFs {
    // --- fixed operations ---

    async fn list_objects(
        &self,
        mut req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        drop_empty_delimiter(&mut req.input.delimiter);
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        drop_empty_delimiter(&mut req.input.delimiter);
        if req.input.delimiter.is_some() {
            return self.inner.list_objects_v2(req).await;
        }
        let output = listing::list_v2(&self.root, req.input).await?;
        Ok(S3Response::new(output))
    }

    /// Under the object's read lock: the size and ETag of one version.
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let Some(path) = self.object_path(&req.input.bucket, &req.input.key) else {
            return self.inner.head_object(req).await;
        };
        let _guard = self.locks.read(&path).await;
        if self.is_directory(&req.input.bucket, &req.input.key).await {
            return Err(s3_error!(NoSuchKey));
        }
        self.inner.head_object(req).await
    }

    /// `s3s-fs` answers with its metadata, ETag, checksums, `Content-Range` and errors;
    /// the body is replaced with one read in large chunks from a handle opened under the
    /// same read lock, so it is the version the ETag describes (a later PUT renames a
    /// new file into place and leaves the open one as it was).
    async fn get_object(
        &self,
        mut req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let Some(path) = self.object_path(&req.input.bucket, &req.input.key) else {
            return self.inner.get_object(req).await;
        };
        let guard = self.locks.read(&path).await;
        let file = match File::open(&path).await {
            Ok(file) => file,
            // No such key or bucket: `s3s-fs` gives the right error.
            Err(_) => return self.inner.get_object(req).await,
        };
        let opened = file.metadata().await.map_err(S3Error::internal_error)?;
        if opened.is_dir() {
            return Err(s3_error!(NoSuchKey));
        }
        let object_len = opened.len();
        req.input.range = req.input.range.map(|r| clamp_suffix_range(r, object_len));
        let span = match req.input.range {
            None => 0..object_len,
            Some(range) => match range.check(object_len) {
                Ok(span) => span,
                // `s3s-fs` answers InvalidRange.
                Err(_) => return self.inner.get_object(req).await,
            },
        };
        let span_len = span.end - span.start;

        let mut resp = self.inner.get_object(req).await?;
        drop(guard);
        let stream = body::file_range(file, span.start, span_len, body::READ_CHUNK)
            .await
            .map_err(S3Error::internal_error)?;
        resp.output.body = Some(StreamingBlob::wrap(stream));
        Ok(resp)
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let object = self.writable_path(&req.input.bucket, &req.input.key)?;
        if req.input.key.ends_with('/') {
            // A directory object: `s3s-fs` creates the directory; its condition check
            // is atomic under the lock.
            self.require_bucket(&req.input.bucket)?;
            let _guard = self.locks.write(&object).await;
            let result = self.inner.put_object(req).await;
            return self.full.map(&object, result);
        }
        write::put_object(self, req, object).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let destination = self.writable_path(&req.input.bucket, &req.input.key)?;
        let source = match &req.input.copy_source {
            CopySource::Bucket { bucket, key, .. } => self.object_path(bucket, key),
            _ => None,
        };
        let _guards = match &source {
            Some(source) => self.locks.write_two(source, &destination).await,
            None => (self.locks.write(&destination).await, None),
        };
        let result = self.inner.copy_object(req).await;
        self.full.map(&destination, result)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        Ok(S3Response::new(
            delete::delete_object(self, req.input).await?,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        Ok(S3Response::new(
            delete::delete_objects(self, req.input).await?,
        ))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let path = self.root.join(&req.input.bucket);
        let result = self.inner.create_bucket(req).await;
        self.full.map(&path, result)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let result = self.inner.create_multipart_upload(req).await;
        self.full.map(&self.root, result)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        uploads::require(&self.root, &req.input.upload_id).await?;
        let result = self.inner.upload_part(req).await;
        self.full.map(&self.root, result)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        uploads::require(&self.root, &req.input.upload_id).await?;
        let result = self.inner.upload_part_copy(req).await;
        self.full.map(&self.root, result)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        uploads::require(&self.root, &req.input.upload_id).await?;
        self.inner.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        uploads::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        // Under the object's lock, so that it cannot remove parts while a complete of
        // the same upload reads them.
        let object = self.writable_path(&req.input.bucket, &req.input.key)?;
        let _guard = self.locks.write(&object).await;
        uploads::require(&self.root, &req.input.upload_id).await?;
        self.inner.abort_multipart_upload(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Ok(S3Response::new(uploads::list(&self.root, req.input).await?))
    }

    /// Removes the bucket's sidecar files with it.
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let result = self.inner.delete_bucket(req).await?;
        // `s3s-fs` removed the objects; their sidecars are in the root.
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || sidecar::sweep_orphans(&root))
            .await
            .map_err(S3Error::internal_error)?
            .map_err(S3Error::internal_error)?;
        Ok(result)
    }

    // --- forwarded unchanged: every other operation s3s-fs 0.14.1 implements ---

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_delimiter_becomes_none_and_others_stay() {
        let mut d = Some(String::new());
        drop_empty_delimiter(&mut d);
        assert_eq!(d, None);

        let mut d = Some("/".to_owned());
        drop_empty_delimiter(&mut d);
        assert_eq!(d.as_deref(), Some("/"));
    }

    #[test]
    fn long_suffix_range_selects_the_whole_object() {
        let whole = clamp_suffix_range(Range::Suffix { length: 500 }, 100);
        assert_eq!(whole.check(100).expect("satisfiable"), 0..100);

        let tail = Range::Suffix { length: 10 };
        assert_eq!(clamp_suffix_range(tail, 100), tail);
    }

    #[test]
    fn only_plain_relative_keys_get_a_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = PatchedFs::new(dir.path()).expect("root");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");

        assert_eq!(
            fs.object_path("b", "x/y.bin"),
            Some(root.join("b").join("x/y.bin"))
        );
        assert_eq!(fs.object_path("b", "../escape"), None);
        assert_eq!(fs.object_path("b", "/etc/passwd"), None);
        assert_eq!(fs.object_path("..", "k"), None);
    }
}
