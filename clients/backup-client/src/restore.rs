//! Restore the committed backup onto an empty device directory. Files are
//! written into a staging directory beside the target and moved into place
//! only when every file verified, so a failed restore leaves nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use e2eb_proto::backup::v1::Manifest;
use futures::StreamExt;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tracing::info;

use crate::device_files;
use crate::gateway::{GatewayClient, GatewayError};
use crate::key::{KeyPurpose, RootKey};
use crate::names;
use crate::seal::{self, ObjectKind, OpenError, Opener};

/// Largest sealed manifest the device accepts (a manifest lists paths only).
const MAX_MANIFEST_LEN: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("this account has no backup to restore")]
    NoBackup,
    #[error("the restore target {path} is not empty; choose an empty or new directory")]
    TargetNotEmpty { path: String },
    #[error(
        "the backup cannot be opened with this key: the key is wrong, or the backup was altered or belongs to another account"
    )]
    WrongKeyOrForeignBackup,
    #[error(
        "the backup manifest names another account or backup; the gateway served the wrong backup"
    )]
    ManifestMismatch,
    #[error("the backup lists an unsafe path {path:?}; refusing to write outside the target")]
    UnsafePath { path: String },
    #[error("{path} is missing from the backup at the gateway; the backup is incomplete")]
    MissingFile { path: String },
    #[error(
        "{path} failed its integrity check ({reason}); the stored backup was damaged or tampered with"
    )]
    Integrity {
        path: String,
        reason: IntegrityFailure,
    },
    #[error("cannot write {path} on the device: {source}")]
    WriteDevice {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// What exactly failed when a file did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityFailure {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the stored blob has the wrong size")]
    WrongSize,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub backup_id: String,
    pub files: usize,
    /// Plaintext bytes written to the device.
    pub bytes: u64,
    /// Sealed bytes received from the gateway.
    pub downloaded_bytes: u64,
}

/// Restores the account's committed backup into `target`, which must be
/// absent or empty.
pub async fn restore(
    gateway: &GatewayClient,
    account: &str,
    key: &RootKey,
    target: &Path,
) -> Result<RestoreReport, RestoreError> {
    ensure_empty(target)?;
    let listing = gateway.get_backup().await?.ok_or(RestoreError::NoBackup)?;
    let backup_id = listing.backup_id.clone();
    let sizes: HashMap<&str, u64> = listing
        .blobs
        .iter()
        .map(|b| (b.name.as_str(), b.size))
        .collect();

    let manifest = fetch_manifest(gateway, account, key, &backup_id).await?;
    let staging = Staging::new(target)?;
    let file_key = key.derive(KeyPurpose::FileData);
    let mut report = RestoreReport {
        backup_id: backup_id.clone(),
        files: manifest.files.len(),
        bytes: 0,
        downloaded_bytes: 0,
    };
    for entry in &manifest.files {
        let destination = device_files::resolve(&staging.dir, &entry.path).ok_or_else(|| {
            RestoreError::UnsafePath {
                path: entry.path.clone(),
            }
        })?;
        let sealed_size = seal::sealed_len(entry.size);
        match sizes.get(entry.blob.as_str()) {
            None => {
                return Err(RestoreError::MissingFile {
                    path: entry.path.clone(),
                });
            }
            Some(&size) if size != sealed_size => {
                return Err(RestoreError::Integrity {
                    path: entry.path.clone(),
                    reason: IntegrityFailure::WrongSize,
                });
            }
            Some(_) => {}
        }
        let context = names::file_context(account, &backup_id, &entry.blob, &entry.path);
        let opener = Opener::new(&file_key, ObjectKind::File, &context);
        let written = download_file(
            gateway,
            &backup_id,
            &entry.blob,
            &entry.path,
            opener,
            &destination,
        )
        .await?;
        if written != entry.size {
            return Err(RestoreError::Integrity {
                path: entry.path.clone(),
                reason: IntegrityFailure::WrongSize,
            });
        }
        report.bytes += written;
        report.downloaded_bytes += sealed_size;
    }
    staging.commit(target)?;
    info!(
        backup_id,
        files = report.files,
        bytes = report.bytes,
        "restore verified"
    );
    Ok(report)
}

async fn fetch_manifest(
    gateway: &GatewayClient,
    account: &str,
    key: &RootKey,
    backup_id: &str,
) -> Result<Manifest, RestoreError> {
    let mut sealed = Vec::new();
    let mut stream = gateway
        .download_blob(backup_id, names::MANIFEST_BLOB)
        .await
        .map_err(not_found_is_incomplete)?;
    while let Some(piece) = stream.next().await {
        sealed.extend_from_slice(&piece?);
        if sealed.len() > MAX_MANIFEST_LEN {
            return Err(RestoreError::WrongKeyOrForeignBackup);
        }
    }
    let plain = seal::open(
        &key.derive(KeyPurpose::Manifest),
        ObjectKind::Manifest,
        &names::manifest_context(account, backup_id),
        &sealed,
    )
    .map_err(|_| RestoreError::WrongKeyOrForeignBackup)?;
    let manifest =
        Manifest::decode(plain.as_slice()).map_err(|_| RestoreError::WrongKeyOrForeignBackup)?;
    if manifest.account_id != account || manifest.backup_id != backup_id {
        return Err(RestoreError::ManifestMismatch);
    }
    Ok(manifest)
}

fn not_found_is_incomplete(error: GatewayError) -> RestoreError {
    match error {
        GatewayError::NotFound(_) => RestoreError::MissingFile {
            path: names::MANIFEST_BLOB.to_string(),
        },
        other => other.into(),
    }
}

/// Streams one blob through the opener into `destination`; returns the
/// plaintext length.
async fn download_file(
    gateway: &GatewayClient,
    backup_id: &str,
    blob: &str,
    path: &str,
    mut opener: Opener,
    destination: &Path,
) -> Result<u64, RestoreError> {
    let write_error = |source| RestoreError::WriteDevice {
        path: path.to_string(),
        source,
    };
    let integrity = |reason: OpenError| RestoreError::Integrity {
        path: path.to_string(),
        reason: reason.into(),
    };
    if let Some(parent) = destination.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(write_error)?;
    }
    let mut file = tokio::fs::File::create(destination)
        .await
        .map_err(write_error)?;
    let mut stream = gateway
        .download_blob(backup_id, blob)
        .await
        .map_err(|e| match e {
            GatewayError::NotFound(_) => RestoreError::MissingFile {
                path: path.to_string(),
            },
            other => other.into(),
        })?;
    let mut plain = Vec::new();
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        opener.push(&piece?, &mut plain).map_err(integrity)?;
        file.write_all(&plain).await.map_err(write_error)?;
        written += plain.len() as u64;
        plain.clear();
    }
    opener.finish(&mut plain).map_err(integrity)?;
    file.write_all(&plain).await.map_err(write_error)?;
    written += plain.len() as u64;
    file.sync_all().await.map_err(write_error)?;
    Ok(written)
}

fn ensure_empty(target: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(target).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(RestoreError::TargetNotEmpty {
            path: target.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::WriteDevice {
            path: target.display().to_string(),
            source,
        }),
    }
}

/// A directory beside the target that is removed unless committed.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(target: &Path) -> Result<Self, RestoreError> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "restore".into());
        let dir = target.with_file_name(format!(".{name}.restoring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| RestoreError::WriteDevice {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            dir,
            committed: false,
        })
    }

    fn commit(mut self, target: &Path) -> Result<(), RestoreError> {
        let error = |source| RestoreError::WriteDevice {
            path: target.display().to_string(),
            source,
        };
        if target.exists() {
            std::fs::remove_dir(target).map_err(error)?;
        }
        std::fs::rename(&self.dir, target).map_err(error)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
