//! The two files `s3s-fs` keeps beside each object: naming, writing, removal, sweeping.
//!
//! For object `key` in `bucket`, `s3s-fs` 0.14.1 (pinned in the workspace) keeps, in the
//! data directory's root, `.bucket-<B>.object-<K>.metadata.json` (user metadata and
//! content headers) and `.bucket-<B>.object-<K>.internal.json` (ETag and checksums),
//! where `<B>` and `<K>` are the names in URL-safe base64 without padding. It never
//! deletes them: a day of fleet runs left 184,257 in one directory. This module writes
//! them for our own write path in the format `s3s-fs` reads, removes them with their
//! object, and at start sweeps those whose object is gone. A multipart upload keeps
//! its metadata in `.bucket-<B>.object-<K>.upload-<id>.metadata.json` until it ends.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use s3s::dto::{ETag, Metadata, Timestamp, TimestampFormat};
use serde::Serialize;

/// Which of an object's files a sidecar is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Content headers and user metadata (`.metadata.json`).
    Metadata,
    /// ETag and checksums (`.internal.json`).
    Internal,
    /// The metadata of a multipart upload in progress.
    Upload { upload_id: String },
}

/// A sidecar file's name, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub bucket: String,
    pub key: String,
    pub kind: Kind,
}

fn stem(bucket: &str, key: &str) -> String {
    format!(
        ".bucket-{}.object-{}",
        URL_SAFE_NO_PAD.encode(bucket),
        URL_SAFE_NO_PAD.encode(key)
    )
}

/// Where `s3s-fs` keeps the content headers and user metadata of `bucket`/`key`.
pub(crate) fn metadata_path(root: &Path, bucket: &str, key: &str) -> PathBuf {
    root.join(format!("{}.metadata.json", stem(bucket, key)))
}

/// Where `s3s-fs` keeps the ETag and checksums of `bucket`/`key`.
pub(crate) fn internal_path(root: &Path, bucket: &str, key: &str) -> PathBuf {
    root.join(format!("{}.internal.json", stem(bucket, key)))
}

/// Decodes a file name of the root directory, if it is a sidecar.
pub(crate) fn parse(file_name: &str) -> Option<Name> {
    let rest = file_name.strip_prefix(".bucket-")?;
    let (bucket, rest) = rest.split_once(".object-")?;
    let (key, kind) = if let Some(key) = rest.strip_suffix(".internal.json") {
        (key, Kind::Internal)
    } else {
        let rest = rest.strip_suffix(".metadata.json")?;
        match rest.split_once(".upload-") {
            Some((key, upload_id)) => (
                key,
                Kind::Upload {
                    upload_id: upload_id.to_owned(),
                },
            ),
            None => (rest, Kind::Metadata),
        }
    };
    let decode = |s: &str| {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        String::from_utf8(bytes).ok()
    };
    Some(Name {
        bucket: decode(bucket)?,
        key: decode(key)?,
        kind,
    })
}

/// Removes both sidecars of `bucket`/`key`; a missing one is not an error.
pub(crate) async fn remove(root: &Path, bucket: &str, key: &str) -> io::Result<()> {
    for path in [
        metadata_path(root, bucket, key),
        internal_path(root, bucket, key),
    ] {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes every object sidecar in `root` whose object is not a file: the ones
/// `s3s-fs` left behind. Returns how many were removed. Run before serving.
pub(crate) fn sweep_orphans(root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(parse) else {
            continue;
        };
        if matches!(name.kind, Kind::Upload { .. }) {
            continue;
        }
        let object = match plain_object_path(root, &name.bucket, &name.key) {
            Some(object) => object,
            // Not a key we can resolve safely: leave it alone.
            None => continue,
        };
        if !object.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// `root/bucket/key` when both are plain relative paths (no `..`, not absolute).
pub(crate) fn plain_object_path(root: &Path, bucket: &str, key: &str) -> Option<PathBuf> {
    use std::path::Component;
    let plain = |p: &Path| {
        p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    };
    let (bucket, key) = (Path::new(bucket), Path::new(key));
    (plain(bucket) && plain(key) && !bucket.as_os_str().is_empty())
        .then(|| root.join(bucket).join(key))
}

/// The content headers and user metadata of an object, as `s3s-fs` stores them
/// (its `ObjectAttributes`: absent fields are left out).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Attributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
}

impl Attributes {
    /// `Expires` as `s3s-fs` stores it (an RFC 3339 date-time string).
    pub(crate) fn set_expires(&mut self, expires: Option<Timestamp>) {
        self.expires = expires.and_then(|ts| {
            let mut out = Vec::new();
            ts.format(TimestampFormat::DateTime, &mut out).ok()?;
            String::from_utf8(out).ok()
        });
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("string fields always serialize")
    }
}

/// The `.internal.json` of an object: its ETag and the checksums it was stored with.
pub(crate) fn internal_json(e_tag: &str, checksum: &s3s::dto::Checksum) -> Vec<u8> {
    let mut info = serde_json::Map::new();
    info.insert("e_tag".to_owned(), e_tag.into());
    let fields = [
        ("checksum_crc32", &checksum.checksum_crc32),
        ("checksum_crc32c", &checksum.checksum_crc32c),
        ("checksum_sha1", &checksum.checksum_sha1),
        ("checksum_sha256", &checksum.checksum_sha256),
        ("checksum_crc64nvme", &checksum.checksum_crc64nvme),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            info.insert(name.to_owned(), value.as_str().into());
        }
    }
    serde_json::to_vec(&info).expect("a map of strings always serializes")
}

/// The stored ETag of `bucket`/`key`, if its `.internal.json` has one.
pub(crate) async fn stored_e_tag(root: &Path, bucket: &str, key: &str) -> io::Result<Option<ETag>> {
    let bytes = match tokio::fs::read(internal_path(root, bucket, key)).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let info: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    Ok(info
        .get("e_tag")
        .and_then(|v| v.as_str())
        .map(|v| ETag::Strong(v.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_parse() {
        let root = Path::new("/data");
        let key = "acct/7/commit+record?=";
        let meta = metadata_path(root, "e2e-backups", key);
        let internal = internal_path(root, "e2e-backups", key);
        for (path, kind) in [(meta, Kind::Metadata), (internal, Kind::Internal)] {
            let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8");
            assert_eq!(
                parse(name),
                Some(Name {
                    bucket: "e2e-backups".into(),
                    key: key.into(),
                    kind
                })
            );
        }
        let upload = format!("{}.upload-abc.metadata.json", stem("b", "k"));
        assert_eq!(
            parse(&upload).map(|n| n.kind),
            Some(Kind::Upload {
                upload_id: "abc".into()
            })
        );
        for other in [
            ".tmp.1.internal.part",
            ".upload-x.json",
            "plain",
            ".bucket-!!.object-a.internal.json",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn internal_json_keeps_etag_and_given_checksums_only() {
        let checksum = s3s::dto::Checksum {
            checksum_crc32: Some("AAAAAA==".into()),
            ..Default::default()
        };
        let json: serde_json::Value =
            serde_json::from_slice(&internal_json("abc", &checksum)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"e_tag": "abc", "checksum_crc32": "AAAAAA=="})
        );
    }

    #[test]
    fn sweep_removes_sidecars_of_missing_objects_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/dir")).expect("bucket");
        std::fs::write(root.join("b/live"), b"x").expect("object");
        for key in ["live", "gone", "dir"] {
            std::fs::write(metadata_path(root, "b", key), b"{}").expect("meta");
            std::fs::write(internal_path(root, "b", key), b"{}").expect("internal");
        }
        let upload = root.join(format!("{}.upload-u.metadata.json", stem("b", "gone")));
        std::fs::write(&upload, b"{}").expect("upload meta");

        assert_eq!(sweep_orphans(root).expect("sweep"), 4);
        assert!(metadata_path(root, "b", "live").exists());
        assert!(internal_path(root, "b", "live").exists());
        for key in ["gone", "dir"] {
            assert!(!metadata_path(root, "b", key).exists(), "{key}");
            assert!(!internal_path(root, "b", key).exists(), "{key}");
        }
        assert!(upload.exists(), "an upload's metadata is not an orphan");
    }
}
