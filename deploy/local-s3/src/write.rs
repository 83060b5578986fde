//! PutObject made atomic, and the condition check every write of an object shares.
//!
//! `s3s-fs` 0.14.1 checks `If-Match` / `If-None-Match`, then streams the body, renames it
//! into place, and only then verifies `Content-MD5` and the checksums and writes the
//! ETag: two conditional PUTs can both win, a PUT with a bad digest replaces the object
//! and still answers `BadDigest`, and a GET in between pairs the new body with the old
//! ETag. Here a new version is first written in full to temporary files in the data
//! directory's root (the same filesystem as every object, so a rename replaces
//! atomically), its digests are verified and its two sidecars prepared; only then is the
//! object's write lock taken, the condition checked against the current version, and
//! the three files renamed into place. A failed condition, a bad digest, a full disk or
//! a client that goes away leaves the current version as it was and no temporary file.
//! The temporary names match the pattern `s3s-fs` deletes at start, so a crash leaves
//! nothing behind either.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tracing::warn;

use crate::fixes::PatchedFs;
use crate::sidecar::{self, Attributes};
use crate::space::{is_full, no_room};

/// Buffered bytes per write to disk (each write of a `tokio::fs::File` is a round trip
/// through the blocking pool).
const WRITE_BUFFER: usize = 1024 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file under a temporary name in the data directory, removed on drop unless it
/// was renamed into place.
#[derive(Debug)]
pub(crate) struct Staged {
    path: PathBuf,
    placed: bool,
}

impl Staged {
    fn new(root: &Path) -> Self {
        // `.tmp.*.internal.part` is what `s3s_fs::FileSystem::new` removes at start.
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".tmp.local-s3-{}-{n}.internal.part", std::process::id());
        Self {
            path: root.join(name),
            placed: false,
        }
    }

    async fn place(&mut self, dest: &Path) -> io::Result<()> {
        tokio::fs::rename(&self.path, dest).await?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bytes that may still be written in this request (`None`: as many as the disk takes).
struct Budget(Option<u64>);

impl Budget {
    fn take(&mut self, len: usize) -> io::Result<()> {
        if let Some(room) = &mut self.0 {
            let len = u64::try_from(len).unwrap_or(u64::MAX);
            *room = room.checked_sub(len).ok_or_else(no_room)?;
        }
        Ok(())
    }
}

/// An I/O error of a write to `path`: a full disk is its own answer (see
/// [`crate::space`]), anything else an internal error, logged with the path.
pub(crate) fn write_error(fs: &PatchedFs, path: &Path, error: io::Error) -> S3Error {
    if is_full(&error) {
        return fs.full.full(path, &error);
    }
    warn!(path = %path.display(), %error, "write failed");
    S3Error::internal_error(error)
}

async fn stage_bytes(fs: &PatchedFs, budget: &mut Budget, bytes: &[u8]) -> S3Result<Staged> {
    let staged = Staged::new(&fs.root);
    let write = async {
        budget.take(bytes.len())?;
        tokio::fs::write(&staged.path, bytes).await
    };
    write.await.map_err(|e| write_error(fs, &staged.path, e))?;
    Ok(staged)
}

/// The preconditions of a write (`If-Match`, `If-None-Match`).
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
}

impl Conditions {
    /// Checks the conditions against the object's current version. Call it holding the
    /// object's write lock, and make the change before releasing it.
    ///
    /// As S3 answers: `If-None-Match: *` on an existing object and `If-Match` with
    /// another ETag fail with 412 `PreconditionFailed`; `If-Match` on a missing object
    /// fails with 404 `NoSuchKey`; `If-None-Match` with an ETag is not a write
    /// condition (501 `NotImplemented`).
    pub(crate) async fn check(
        &self,
        root: &Path,
        bucket: &str,
        key: &str,
        object: &Path,
    ) -> S3Result<()> {
        let exists = tokio::fs::metadata(object).await.is_ok_and(|m| m.is_file());
        match &self.if_none_match {
            None => {}
            Some(ETagCondition::Any) if exists => {
                return Err(s3_error!(
                    PreconditionFailed,
                    "If-None-Match: * but an object already exists at this key"
                ));
            }
            Some(ETagCondition::Any) => {}
            Some(ETagCondition::ETag(_)) => {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on a write accepts only *"
                ));
            }
        }
        match &self.if_match {
            None => {}
            Some(_) if !exists => {
                return Err(s3_error!(
                    NoSuchKey,
                    "If-Match names a version of an object that does not exist"
                ));
            }
            Some(ETagCondition::Any) => {}
            Some(ETagCondition::ETag(expected)) => {
                let current = current_e_tag(root, bucket, key, object)
                    .await
                    .map_err(S3Error::internal_error)?;
                if !current.strong_cmp(expected) {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "If-Match ETag is not the object's current ETag"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The ETag `s3s-fs` serves for an object: the stored one, else the body's MD5.
async fn current_e_tag(root: &Path, bucket: &str, key: &str, object: &Path) -> io::Result<ETag> {
    if let Some(stored) = sidecar::stored_e_tag(root, bucket, key).await? {
        return Ok(stored);
    }
    let mut file = File::open(object).await?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(ETag::Strong(hex::encode(md5.finalize())))
}

/// The checksums a PUT asked for, by header or by `x-amz-checksum-algorithm`.
fn requested_checksums(input: &PutObjectInput) -> S3Result<ChecksumHasher> {
    let mut hasher = ChecksumHasher::default();
    let algorithm = input
        .checksum_algorithm
        .as_ref()
        .map(ChecksumAlgorithm::as_str);
    if input.checksum_crc32.is_some() || algorithm == Some(ChecksumAlgorithm::CRC32) {
        hasher.crc32 = Some(Default::default());
    }
    if input.checksum_crc32c.is_some() || algorithm == Some(ChecksumAlgorithm::CRC32C) {
        hasher.crc32c = Some(Default::default());
    }
    if input.checksum_sha1.is_some() || algorithm == Some(ChecksumAlgorithm::SHA1) {
        hasher.sha1 = Some(Default::default());
    }
    if input.checksum_sha256.is_some() || algorithm == Some(ChecksumAlgorithm::SHA256) {
        hasher.sha256 = Some(Default::default());
    }
    if input.checksum_crc64nvme.is_some() || algorithm == Some(ChecksumAlgorithm::CRC64NVME) {
        hasher.crc64nvme = Some(Default::default());
    }
    let known = [
        ChecksumAlgorithm::CRC32,
        ChecksumAlgorithm::CRC32C,
        ChecksumAlgorithm::SHA1,
        ChecksumAlgorithm::SHA256,
        ChecksumAlgorithm::CRC64NVME,
    ];
    if let Some(algorithm) = algorithm
        && !known.contains(&algorithm)
    {
        return Err(s3_error!(InvalidArgument, "unsupported checksum algorithm"));
    }
    Ok(hasher)
}

/// Fills the expected checksums from the trailing headers (`aws-chunked` uploads send
/// them after the body).
fn take_trailers(
    trailers: Option<s3s::TrailingHeaders>,
    input: &mut PutObjectInput,
) -> S3Result<()> {
    let Some(headers) = trailers.and_then(|t| t.take()) else {
        return Ok(());
    };
    let fields = [
        ("x-amz-checksum-crc32", &mut input.checksum_crc32),
        ("x-amz-checksum-crc32c", &mut input.checksum_crc32c),
        ("x-amz-checksum-sha1", &mut input.checksum_sha1),
        ("x-amz-checksum-sha256", &mut input.checksum_sha256),
        ("x-amz-checksum-crc64nvme", &mut input.checksum_crc64nvme),
    ];
    for (name, field) in fields {
        if let Some(value) = headers.get(name) {
            let value = value
                .to_str()
                .map_err(|_| s3_error!(InvalidArgument, "trailer {name} is not ASCII"))?;
            *field = Some(value.to_owned());
        }
    }
    Ok(())
}

/// Compares what the client said the body's digests are with what arrived.
fn verify_digests(
    input: &PutObjectInput,
    md5: &[u8; 16],
    got: &s3s::dto::Checksum,
) -> S3Result<()> {
    if let Some(content_md5) = &input.content_md5 {
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD
            .decode(content_md5)
            .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if expected != md5 {
            return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
        }
    }
    let pairs = [
        ("CRC32", &input.checksum_crc32, &got.checksum_crc32),
        ("CRC32C", &input.checksum_crc32c, &got.checksum_crc32c),
        ("SHA1", &input.checksum_sha1, &got.checksum_sha1),
        ("SHA256", &input.checksum_sha256, &got.checksum_sha256),
        (
            "CRC64NVME",
            &input.checksum_crc64nvme,
            &got.checksum_crc64nvme,
        ),
    ];
    for (name, expected, got) in pairs {
        if expected != got {
            return Err(s3_error!(
                BadDigest,
                "the {name} checksum does not match the body"
            ));
        }
    }
    Ok(())
}

/// An error from the request body: the client's own (bad chunk signature) or the
/// connection's.
fn body_error(error: s3s::StdError) -> S3Error {
    match error.downcast::<S3Error>() {
        Ok(s3) => *s3,
        Err(other) => S3Error::with_source(S3ErrorCode::IncompleteBody, other),
    }
}

/// Reads the rest of a body that will not be stored, so that the client gets the
/// answer rather than a reset connection (which `aws-sdk-s3` would retry).
async fn drain(body: &mut StreamingBlob) {
    while let Some(Ok(_)) = body.next().await {}
}

/// PutObject of a file key (not ending in `/`) at `object`, the key's path.
pub(crate) async fn put_object(
    fs: &PatchedFs,
    req: S3Request<PutObjectInput>,
    object: PathBuf,
) -> S3Result<S3Response<PutObjectOutput>> {
    let mut input = req.input;
    if let Some(class) = &input.storage_class
        && !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str())
    {
        return Err(s3_error!(InvalidStorageClass));
    }
    if !fs.root.join(&input.bucket).is_dir() {
        return Err(s3_error!(NoSuchBucket));
    }
    let mut body = input.body.take().ok_or_else(|| s3_error!(IncompleteBody))?;
    let mut checksum = requested_checksums(&input)?;
    let mut budget = Budget(fs.space.room().await.map_err(S3Error::internal_error)?);

    // 1. The body, in full, under a temporary name.
    let mut staged_body = Staged::new(&fs.root);
    let file = match File::create(&staged_body.path).await {
        Ok(file) => file,
        Err(e) => {
            drain(&mut body).await;
            return Err(write_error(fs, &staged_body.path, e));
        }
    };
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut md5 = Md5::new();
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk.map_err(body_error)?;
        md5.update(&chunk);
        checksum.update(&chunk);
        let written = async {
            budget.take(chunk.len())?;
            out.write_all(&chunk).await
        };
        if let Err(e) = written.await {
            drain(&mut body).await;
            return Err(write_error(fs, &staged_body.path, e));
        }
    }
    out.flush()
        .await
        .map_err(|e| write_error(fs, &staged_body.path, e))?;
    drop(out);

    // 2. What arrived is what the client sent.
    let md5 = md5.finalize();
    let checksum = checksum.finalize();
    take_trailers(req.trailing_headers, &mut input)?;
    verify_digests(&input, &md5, &checksum)?;
    let e_tag = hex::encode(md5);

    // 3. The sidecars, also under temporary names.
    let mut attributes = Attributes {
        user_metadata: input.metadata.take(),
        content_encoding: input.content_encoding.take(),
        content_type: input.content_type.take(),
        content_disposition: input.content_disposition.take(),
        content_language: input.content_language.take(),
        cache_control: input.cache_control.take(),
        expires: None,
        website_redirect_location: input.website_redirect_location.take(),
    };
    attributes.set_expires(input.expires.take());
    let mut staged_metadata = stage_bytes(fs, &mut budget, &attributes.to_json()).await?;
    let mut staged_internal =
        stage_bytes(fs, &mut budget, &sidecar::internal_json(&e_tag, &checksum)).await?;

    // 4. Check and replace, atomically for every request that goes through the locks.
    let conditions = Conditions {
        if_match: input.if_match.take(),
        if_none_match: input.if_none_match.take(),
    };
    let (bucket, key) = (&input.bucket, &input.key);
    let _guard = fs.locks.write(&object).await;
    conditions.check(&fs.root, bucket, key, &object).await?;
    if let Some(parent) = object.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| write_error(fs, parent, e))?;
    }
    let place = async {
        staged_body.place(&object).await?;
        staged_internal
            .place(&sidecar::internal_path(&fs.root, bucket, key))
            .await?;
        staged_metadata
            .place(&sidecar::metadata_path(&fs.root, bucket, key))
            .await
    };
    place.await.map_err(|e| write_error(fs, &object, e))?;
    fs.full.wrote();

    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(e_tag)),
        checksum_crc32: checksum.checksum_crc32,
        checksum_crc32c: checksum.checksum_crc32c,
        checksum_sha1: checksum.checksum_sha1,
        checksum_sha256: checksum.checksum_sha256,
        checksum_crc64nvme: checksum.checksum_crc64nvme,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_what_exceeds_the_room_and_unlimited_takes_all() {
        let mut budget = Budget(Some(10));
        budget.take(6).expect("fits");
        let err = budget.take(5).expect_err("exceeds");
        assert!(is_full(&err));
        budget.take(4).expect("the rest still fits");

        let mut unlimited = Budget(None);
        unlimited.take(usize::MAX).expect("no limit");
    }

    #[test]
    fn staged_files_are_removed_unless_placed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staged = Staged::new(dir.path());
        std::fs::write(&staged.path, b"x").expect("write");
        let name = staged
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        assert!(
            name.starts_with(".tmp.") && name.ends_with(".internal.part"),
            "{name}"
        );
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_wrong_content_md5_or_checksum_is_bad_digest() {
        let md5 = Md5::checksum(b"body");
        let input = |content_md5: &str, crc32: Option<&str>| PutObjectInput {
            content_md5: Some(content_md5.to_owned()),
            checksum_crc32: crc32.map(str::to_owned),
            ..PutObjectInput::builder()
                .bucket("b".into())
                .key("k".into())
                .build()
                .expect("input")
        };
        use base64::Engine as _;
        let good = base64::engine::general_purpose::STANDARD.encode(md5);
        let none = s3s::dto::Checksum::default();
        verify_digests(&input(&good, None), &md5, &none).expect("matches");

        let wrong = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        let err = verify_digests(&input(&wrong, None), &md5, &none).expect_err("wrong md5");
        assert_eq!(*err.code(), S3ErrorCode::BadDigest);

        let err = verify_digests(&input("%%%", None), &md5, &none).expect_err("not base64");
        assert_eq!(*err.code(), S3ErrorCode::InvalidDigest);

        let err = verify_digests(&input(&good, Some("AAAAAA==")), &md5, &none)
            .expect_err("checksum expected but not computed");
        assert_eq!(*err.code(), S3ErrorCode::BadDigest);
    }
}
