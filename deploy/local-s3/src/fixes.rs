//! [`PatchedFs`]: `s3s_fs::FileSystem` with the defects of 0.14.1 fixed.
//!
//! | defect in `s3s-fs` 0.14.1 | fix here |
//! |---|---|
//! | an empty `delimiter=` is used as a delimiter, so every key becomes a one-character common prefix (`aws-sdk-s3` can send `delimiter=`) | ListObjects / ListObjectsV2 treat an empty delimiter as none |
//! | HEAD / GET of a key that is a directory on disk (key `a/b` while `a/b/c` exists) fails with 500 | 404 `NoSuchKey` |
//! | GET reads the file 4 KiB at a time (about half the PUT rate) | GET bodies are read in 1 MiB chunks (`src/body.rs`) |
//! | a suffix range longer than the object (`bytes=-N`, N > size) fails with 500 | served as the whole object, as RFC 9110 says |
//! | ListObjectsV2 walks the whole bucket for every page, whatever the prefix | listings without a delimiter walk only the prefix's directory (`src/listing.rs`) |
//!
//! The `S3` trait gives every operation a default that answers `NotImplemented`, so the
//! wrapper forwards, one by one, every operation `s3s-fs` implements.

use std::io;
use std::path::{Component, Path, PathBuf};

use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;
use tokio::fs::File;

use crate::body;
use crate::listing;

/// An S3 implementation over a directory: `s3s_fs::FileSystem` plus the fixes listed in
/// the [module docs](self). Each bucket is a subdirectory of the root.
#[derive(Debug)]
pub struct PatchedFs {
    inner: FileSystem,
    /// The canonical root, the same one `inner` resolves keys against.
    root: PathBuf,
}

impl PatchedFs {
    /// Serves the existing directory `root`.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        // `s3s_fs::Error` implements neither `Display` nor `Error`.
        let inner = FileSystem::new(&root).map_err(|e| io::Error::other(format!("{e:?}")))?;
        Ok(Self { inner, root })
    }

    /// Where `s3s-fs` keeps `bucket`/`key`, for keys that are plain relative paths.
    /// Other keys (absolute, with `..`) are left to `s3s-fs` to accept or refuse.
    fn object_path(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let plain = |p: &Path| {
            p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        };
        let (bucket, key) = (Path::new(bucket), Path::new(key));
        (plain(bucket) && plain(key)).then(|| self.root.join(bucket).join(key))
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

/// Whether `path` still names the file that `opened` describes (no rename since).
#[cfg(unix)]
async fn still_names(path: &Path, opened: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|now| now.dev() == opened.dev() && now.ino() == opened.ino())
}

#[cfg(not(unix))]
async fn still_names(_path: &Path, _opened: &std::fs::Metadata) -> bool {
    false
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

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        if self.is_directory(&req.input.bucket, &req.input.key).await {
            return Err(s3_error!(NoSuchKey));
        }
        self.inner.head_object(req).await
    }

    /// `s3s-fs` answers with its metadata, ETag, checksums, `Content-Range` and errors;
    /// the body is replaced with one read in large chunks from a handle opened before
    /// `s3s-fs` opened its own, kept only if the path still names that same file.
    async fn get_object(
        &self,
        mut req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let Some(path) = self.object_path(&req.input.bucket, &req.input.key) else {
            return self.inner.get_object(req).await;
        };
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

        let same_length = resp.output.content_length == i64::try_from(span_len).ok();
        if !same_length || !still_names(&path, &opened).await {
            // A PUT replaced the object between the two opens: keep `s3s-fs`'s body,
            // which matches the length it announced.
            return Ok(resp);
        }
        let stream = body::file_range(file, span.start, span_len, body::READ_CHUNK)
            .await
            .map_err(S3Error::internal_error)?;
        resp.output.body = Some(StreamingBlob::wrap(stream));
        Ok(resp)
    }

    // --- forwarded unchanged: every other operation s3s-fs 0.14.1 implements ---

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

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

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.inner.put_object(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.inner.copy_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.inner.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.inner.delete_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.inner.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.inner.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.inner.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.inner.abort_multipart_upload(req).await
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
