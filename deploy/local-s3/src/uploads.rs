//! Multipart uploads: listing them, telling a missing one apart, completing atomically.
//!
//! The gateway sweeps multipart uploads that a crashed writer left behind: it lists them
//! (ListMultipartUploads, which `s3s-fs` 0.14.1 does not implement) and aborts each. An
//! upload of `s3s-fs` is `.upload-<id>.json` (who started it) and
//! `.bucket-<B>.object-<K>.upload-<id>.metadata.json` (where it goes, see
//! [`crate::sidecar`]) in the data directory's root, plus `.upload_id-<id>.part-<n>`
//! per part; the listing reads those names. `s3s-fs` answers an unknown upload id
//! with 403 `AccessDenied`; S3 answers 404 `NoSuchUpload`, which is what a sweeper
//! that races another sweeper needs to see.
//!
//! CompleteMultipartUpload runs under the object's write lock (see [`crate::locks`]),
//! with the condition checked first, and its parts are checked before `s3s-fs`
//! consumes the upload, so a bad part list is refused with the upload intact.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::fixes::PatchedFs;
use crate::sidecar::{self, Kind};
use crate::write::{Conditions, write_error};

/// The smallest size of every part but the last (5 MiB), as in S3.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Whether `id` has the form of an `s3s-fs` upload id (a UUID), so that it is safe to
/// put in a file name.
fn well_formed(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether the upload `id` exists (started and neither completed nor aborted).
pub(crate) async fn exists(root: &Path, id: &str) -> bool {
    well_formed(id)
        && tokio::fs::metadata(root.join(format!(".upload-{id}.json")))
            .await
            .is_ok_and(|m| m.is_file())
}

/// Refuses an unknown upload with 404 `NoSuchUpload`.
pub(crate) async fn require(root: &Path, id: &str) -> S3Result<()> {
    if exists(root, id).await {
        Ok(())
    } else {
        Err(s3_error!(
            NoSuchUpload,
            "no such multipart upload: it was never started, or was completed or aborted"
        ))
    }
}

/// Checks a CompleteMultipartUpload part list against the parts on disk, the way
/// `s3s-fs` will read them (parts numbered 1, 2, ... in order; every part but the last
/// at least 5 MiB), so that it can be refused before `s3s-fs` starts consuming the
/// upload.
pub(crate) async fn check_parts(root: &Path, id: &str, parts: &[CompletedPart]) -> S3Result<()> {
    if parts.is_empty() {
        return Err(s3_error!(
            InvalidPart,
            "a multipart upload needs at least one part"
        ));
    }
    for (index, part) in parts.iter().enumerate() {
        let expected =
            i32::try_from(index + 1).map_err(|_| s3_error!(InvalidPart, "too many parts"))?;
        let number = part
            .part_number
            .ok_or_else(|| s3_error!(InvalidPart, "a part has no part number"))?;
        if number != expected {
            return Err(s3_error!(
                InvalidPartOrder,
                "parts must be numbered 1, 2, 3, ... in order; part {expected} is {number}"
            ));
        }
        let path = root.join(format!(".upload_id-{id}.part-{number}"));
        let size = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(s3_error!(InvalidPart, "part {number} was not uploaded"));
            }
            Err(e) => return Err(s3s::S3Error::internal_error(e)),
        };
        if index + 1 < parts.len() && size < MIN_PART_SIZE {
            return Err(s3_error!(
                EntityTooSmall,
                "part {number} is {size} bytes; every part but the last needs at least 5 MiB"
            ));
        }
    }
    Ok(())
}

/// One upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Upload {
    key: String,
    id: String,
    initiated: SystemTime,
}

/// Every upload in progress into `bucket` whose key starts with `prefix`, by key, then id.
fn uploads_in(root: &Path, bucket: &str, prefix: &str) -> io::Result<Vec<Upload>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(sidecar::parse) else {
            continue;
        };
        let Kind::Upload { upload_id } = name.kind else {
            continue;
        };
        if name.bucket != bucket || !name.key.starts_with(prefix) || !well_formed(&upload_id) {
            continue;
        }
        // Started, and neither completed nor aborted.
        let started = match std::fs::metadata(root.join(format!(".upload-{upload_id}.json"))) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found.push(Upload {
            key: name.key,
            id: upload_id,
            initiated: started.modified()?,
        });
    }
    found.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
    Ok(found)
}

/// ListMultipartUploads without a delimiter: uploads by key, then upload id, from
/// after (`key-marker`, `upload-id-marker`), at most `max-uploads` (1,000 by default).
pub(crate) async fn list(
    root: &Path,
    input: ListMultipartUploadsInput,
) -> S3Result<ListMultipartUploadsOutput> {
    if input.delimiter.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(s3_error!(
            NotImplemented,
            "local-s3 lists multipart uploads without a delimiter only"
        ));
    }
    if !root.join(&input.bucket).is_dir() {
        return Err(s3_error!(NoSuchBucket));
    }
    let (walk_root, bucket) = (root.to_path_buf(), input.bucket.clone());
    let prefix = input.prefix.clone().unwrap_or_default();
    let mut uploads = tokio::task::spawn_blocking(move || uploads_in(&walk_root, &bucket, &prefix))
        .await
        .map_err(s3s::S3Error::internal_error)?
        .map_err(s3s::S3Error::internal_error)?;

    if let Some(key_marker) = input.key_marker.as_deref().filter(|m| !m.is_empty()) {
        // With an upload id marker, the marker key's later uploads follow; without one,
        // listing resumes after the key.
        let id_marker = input.upload_id_marker.as_deref().unwrap_or("");
        uploads.retain(|u| {
            u.key.as_str() > key_marker
                || (u.key == key_marker && !id_marker.is_empty() && u.id.as_str() > id_marker)
        });
    }
    let max = input.max_uploads.unwrap_or(1000);
    let limit = usize::try_from(max).unwrap_or(0);
    let is_truncated = uploads.len() > limit;
    uploads.truncate(limit);
    let (next_key_marker, next_upload_id_marker) = match uploads.last() {
        Some(last) if is_truncated => (Some(last.key.clone()), Some(last.id.clone())),
        _ => (None, None),
    };
    let listed: Vec<MultipartUpload> = uploads
        .into_iter()
        .map(|u| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(u.id),
            initiated: Some(Timestamp::from(u.initiated)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    Ok(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max),
        is_truncated: Some(is_truncated),
        next_key_marker,
        next_upload_id_marker,
        uploads: Some(listed),
        ..Default::default()
    })
}

/// CompleteMultipartUpload: the upload and its parts checked first, then the condition
/// and `s3s-fs`'s assembly under the object's write lock.
pub(crate) async fn complete(
    fs: &PatchedFs,
    mut req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = &mut req.input;
    let (bucket, key) = (input.bucket.clone(), input.key.clone());
    let object = fs.writable_path(&bucket, &key)?;
    // Checked here, under the lock; `s3s-fs` would check again outside it.
    let conditions = Conditions {
        if_match: input.if_match.take(),
        if_none_match: input.if_none_match.take(),
    };

    let _guard = fs.locks.write(&object).await;
    // Under the lock too: a concurrent complete or abort of the same upload has
    // either finished (NoSuchUpload) or not started.
    require(&fs.root, &input.upload_id).await?;
    let parts = input
        .multipart_upload
        .as_ref()
        .and_then(|upload| upload.parts.as_deref())
        .unwrap_or_default();
    check_parts(&fs.root, &input.upload_id, parts).await?;
    conditions.check(&fs.root, &bucket, &key, &object).await?;
    let result = fs.inner.complete_multipart_upload(req).await;
    let mut resp = fs.full.map(&object, result)?;
    if let Some(future) = resp.output.future.take() {
        resp.output = future.await?;
    }
    // `s3s-fs` keeps the previous version's checksums beside the new ETag, and a GET
    // would serve them; keep the ETag alone.
    let e_tag = resp
        .output
        .e_tag
        .as_ref()
        .map(|e| e.value().to_owned())
        .ok_or_else(|| s3_error!(InternalError, "s3s-fs returned no ETag"))?;
    let internal = sidecar::internal_path(&fs.root, &bucket, &key);
    tokio::fs::write(
        &internal,
        sidecar::internal_json(&e_tag, &Default::default()),
    )
    .await
    .map_err(|e| write_error(fs, &internal, e))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuid_shaped_ids_are_well_formed() {
        assert!(well_formed("0b5e5a3c-6c3e-4a53-9d53-0e6f7b0f6a11"));
        assert!(!well_formed("../../etc/passwd-0000000000000000000000"));
        assert!(!well_formed("0b5e5a3c"));
        assert!(!well_formed("0b5e5a3c-6c3e-4a53-9d53-0e6f7b0f6a1/"));
    }
}
