//! Back up a device: seal every file and the manifest, upload them as a new
//! staged backup, then commit it in place of the previous one.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use e2eb_proto::backup::v1::{FileEntry, Manifest};
use prost::Message;
use rand::RngCore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info};

use crate::device_files::{self, DeviceFile};
use crate::gateway::{GatewayClient, GatewayError, MESSAGE_DATA_LEN};
use crate::key::{KeyPurpose, RootKey};
use crate::names;
use crate::seal::{self, ObjectKind, Sealer};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read {path} on the device: {source}")]
    ReadDevice {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} changed while it was being backed up; run the backup again")]
    FileChanged { path: String },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// What a finished backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub backup_id: String,
    pub files: usize,
    /// Plaintext bytes read from the device.
    pub plain_bytes: u64,
    /// Sealed bytes sent to the gateway, manifest included.
    pub uploaded_bytes: u64,
    /// Blobs of the replaced backup the gateway deleted after the commit.
    pub deleted_blobs: u64,
}

/// Backs up every regular file under `device_root` for `account`.
pub async fn back_up(
    gateway: &GatewayClient,
    account: &str,
    key: &RootKey,
    device_root: &Path,
) -> Result<BackupReport, BackupError> {
    let files = device_files::list(device_root).map_err(|source| BackupError::ReadDevice {
        path: device_root.display().to_string(),
        source,
    })?;
    let previous = gateway.get_backup().await?.map(|b| b.backup_id);
    let backup_id = new_backup_id();
    let file_key = key.derive(KeyPurpose::FileData);

    let mut manifest = Manifest {
        account_id: account.to_string(),
        backup_id: backup_id.clone(),
        created_at: unix_now(),
        files: Vec::with_capacity(files.len()),
    };
    let mut report = BackupReport {
        backup_id: backup_id.clone(),
        files: files.len(),
        plain_bytes: 0,
        uploaded_bytes: 0,
        deleted_blobs: 0,
    };
    for (index, file) in files.iter().enumerate() {
        let blob = names::file_blob(index);
        let context = names::file_context(account, &backup_id, &blob, &file.path);
        upload_file(
            gateway,
            device_root,
            file,
            &backup_id,
            &blob,
            &file_key,
            context,
        )
        .await?;
        debug!(blob, size = file.size, "uploaded file");
        report.plain_bytes += file.size;
        report.uploaded_bytes += seal::sealed_len(file.size);
        manifest.files.push(FileEntry {
            path: file.path.clone(),
            size: file.size,
            blob,
        });
    }

    let sealed_manifest = seal::seal(
        &key.derive(KeyPurpose::Manifest),
        ObjectKind::Manifest,
        &names::manifest_context(account, &backup_id),
        &manifest.encode_to_vec(),
    );
    report.uploaded_bytes += sealed_manifest.len() as u64;
    let size = sealed_manifest.len() as u64;
    let pieces: Vec<Vec<u8>> = sealed_manifest
        .chunks(MESSAGE_DATA_LEN)
        .map(<[u8]>::to_vec)
        .collect();
    gateway
        .upload_blob(
            &backup_id,
            names::MANIFEST_BLOB,
            size,
            futures::stream::iter(pieces),
        )
        .await?;

    report.deleted_blobs = gateway
        .commit_backup(&backup_id, previous.as_deref())
        .await?;
    info!(
        backup_id,
        files = report.files,
        plain_bytes = report.plain_bytes,
        uploaded_bytes = report.uploaded_bytes,
        "backup committed"
    );
    Ok(report)
}

/// Seals one file on a blocking thread and streams it to the gateway.
async fn upload_file(
    gateway: &GatewayClient,
    device_root: &Path,
    file: &DeviceFile,
    backup_id: &str,
    blob: &str,
    file_key: &crate::key::DerivedKey,
    context: Vec<u8>,
) -> Result<(), BackupError> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let path = device_root.join(&file.path);
    let expected = file.size;
    let key = file_key.clone();
    let shown_path = file.path.clone();
    let producer = tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
        let read_error = |source| BackupError::ReadDevice {
            path: shown_path.clone(),
            source,
        };
        let mut reader = std::fs::File::open(&path).map_err(read_error)?;
        let mut sealer = Sealer::new(&key, ObjectKind::File, &context);
        let mut buffer = vec![0u8; 256 * 1024];
        let mut out = Vec::with_capacity(MESSAGE_DATA_LEN + 2 * seal::SEGMENT_LEN);
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buffer).map_err(read_error)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > expected {
                return Err(BackupError::FileChanged { path: shown_path });
            }
            sealer.push(&buffer[..n], &mut out);
            if out.len() >= MESSAGE_DATA_LEN && tx.blocking_send(std::mem::take(&mut out)).is_err()
            {
                // The upload ended early; its error is reported by the caller.
                return Ok(());
            }
        }
        if total != expected {
            return Err(BackupError::FileChanged { path: shown_path });
        }
        sealer.finish(&mut out);
        let _ = tx.blocking_send(out);
        Ok(())
    });
    let uploaded = gateway
        .upload_blob(
            backup_id,
            blob,
            seal::sealed_len(expected),
            ReceiverStream::new(rx),
        )
        .await;
    // A read error makes the upload fail short; report the cause, not the symptom.
    producer.await.expect("the sealing task does not panic")?;
    uploaded?;
    Ok(())
}

fn new_backup_id() -> String {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    hex::encode(id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
