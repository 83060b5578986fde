//! DeleteObject and DeleteObjects that take the object's sidecars with it.
//!
//! `s3s-fs` 0.14.1 removes the object's file and leaves its two sidecar files (see
//! [`crate::sidecar`]) behind for ever. Here a delete holds the object's write lock,
//! removes the file, then both sidecars. Deleting a key that is not an object (never
//! stored, already deleted, or a directory that holds other keys) succeeds, as in S3,
//! and still removes any sidecars a past `s3s-fs` delete left. `If-Match` on a delete
//! is honoured under the same lock as on a write (412 on another ETag, 404 on a
//! missing object). DeleteObjects reports a failure per key, as S3 does, instead of
//! failing the whole request.

use std::io;
use std::path::Path;

use s3s::dto::*;
use s3s::{S3Error, S3Result, s3_error};

use crate::fixes::PatchedFs;
use crate::sidecar;
use crate::write::Conditions;

/// Deletes `bucket`/`key` and its sidecars, if `if_match` holds.
pub(crate) async fn delete_one(
    fs: &PatchedFs,
    bucket: &str,
    key: &str,
    if_match: Option<ETagCondition>,
) -> S3Result<()> {
    let path = fs.writable_path(bucket, key)?;
    let _guard = fs.locks.write(&path).await;
    let conditions = Conditions {
        if_match,
        if_none_match: None,
    };
    conditions.check(&fs.root, bucket, key, &path).await?;
    remove_object(&path, key.ends_with('/'))
        .await
        .map_err(S3Error::internal_error)?;
    sidecar::remove(&fs.root, bucket, key)
        .await
        .map_err(S3Error::internal_error)
}

/// Removes the object at `path`. A directory key (`a/`) is removed when empty, as
/// `s3s-fs` does; a missing file, or a directory where a file key points, is no object.
async fn remove_object(path: &Path, directory_key: bool) -> io::Result<()> {
    let removed = if directory_key {
        tokio::fs::remove_dir(path).await
    } else {
        tokio::fs::remove_file(path).await
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if directory_key && e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(_) if !directory_key && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) async fn delete_object(
    fs: &PatchedFs,
    input: DeleteObjectInput,
) -> S3Result<DeleteObjectOutput> {
    if input.if_match_last_modified_time.is_some() || input.if_match_size.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "local-s3 supports If-Match on DeleteObject, not the last-modified or size conditions"
        ));
    }
    fs.require_bucket(&input.bucket)?;
    delete_one(fs, &input.bucket, &input.key, input.if_match).await?;
    Ok(DeleteObjectOutput::default())
}

pub(crate) async fn delete_objects(
    fs: &PatchedFs,
    input: DeleteObjectsInput,
) -> S3Result<DeleteObjectsOutput> {
    fs.require_bucket(&input.bucket)?;
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in input.delete.objects {
        let if_match = object.e_tag.map(ETagCondition::ETag);
        match delete_one(fs, &input.bucket, &object.key, if_match).await {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(object.key),
                version_id: object.version_id,
                ..Default::default()
            }),
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_owned()),
                message: e.message().map(str::to_owned),
                key: Some(object.key),
                version_id: object.version_id,
            }),
        }
    }
    Ok(DeleteObjectsOutput {
        deleted: (!deleted.is_empty()).then_some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_objects_and_directories_under_file_keys_are_not_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("file");
        remove_object(&file, false).await.expect("remove file");
        assert!(!file.exists());
        remove_object(&file, false).await.expect("already gone");

        let sub = dir.path().join("d");
        std::fs::create_dir_all(sub.join("child")).expect("dirs");
        remove_object(&sub, false)
            .await
            .expect("a directory is no file object");
        remove_object(&sub, true)
            .await
            .expect("non-empty directory key stays");
        assert!(sub.is_dir());
        std::fs::remove_dir(sub.join("child")).expect("empty it");
        remove_object(&sub, true)
            .await
            .expect("empty directory key");
        assert!(!sub.exists());
    }
}
