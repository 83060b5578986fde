//! Back up a device in format v3: files are cut with the keyed chunker,
//! chunks the backup already holds are referenced where they lie, new
//! chunks are sealed into packs of about 16 MiB (one pack uploads while
//! the next fills), and a sealed manifest commits the new generation.
//!
//! What the previous generation holds is never read or sent again: an
//! untouched file (same size and modification time) keeps its chunk list,
//! and a chunk whose id the previous manifest names keeps its location.
//! Packs an interrupted run uploaded but never committed are listed by the
//! gateway; their trailers and headers are read (ranged reads) and their
//! chunks reused; the ones this run does not need are abandoned in the
//! commit, which deletes them.
//!
//! The key vault's backup pointer frames the commit exactly as in v2
//! ([`crate::backup::settle_served`]): the served backup must be the one the
//! pointer vouches for, the new generation is announced as pending before
//! the commit and confirmed after it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use e2eb_proto::backup::v3::{FileEntry, Manifest};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod known;

use super::gateway::PackGatewayClient;
use super::manifest;
use super::pack::{FinishedPack, PackKeys, PackWriter};
use crate::backup::{BackupError, accepted_signer, settle_served, unix_now};
use crate::chunking::{self, Chunk, ChunkIds, GearTable};
use crate::device_files;
use crate::key::RootKey;
use crate::vault::{BackupRef, VaultClient};
use known::{Location, ManifestBuilder, known_chunks, reuse_chunks};

/// The pack size a backup aims at (sealed chunk bytes per pack).
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
/// Chunks read ahead of the one being sealed.
const READ_AHEAD: usize = 64;

/// How a v3 backup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackBackupOptions {
    /// A pack is finished once its sealed chunks reach this many bytes.
    pub pack_target: usize,
}

impl Default for PackBackupOptions {
    fn default() -> Self {
        Self {
            pack_target: PACK_TARGET,
        }
    }
}

/// What a finished v3 backup did.
#[derive(Debug, Clone, Default)]
pub struct PackBackupReport {
    pub generation: u64,
    pub files: usize,
    /// Plaintext bytes on the device.
    pub plain_bytes: u64,
    /// Chunks the files reference (with repeats).
    pub chunks: usize,
    /// Distinct chunks the new manifest lists.
    pub distinct_chunks: usize,
    /// Chunks this run sealed into new packs.
    pub new_chunks: usize,
    pub new_plain_bytes: u64,
    /// Chunks found in packs an interrupted run uploaded, reused.
    pub resumed_chunks: usize,
    pub uploaded_packs: usize,
    /// Bytes this run sent: packs and the manifest.
    pub uploaded_bytes: u64,
    pub manifest_bytes: u64,
    /// Packs the manifest references.
    pub packs: usize,
    /// Uncommitted packs this run found and did not need (deleted with
    /// the commit).
    pub abandoned_packs: usize,
    /// Packs the gateway deleted after the commit.
    pub deleted_packs: u64,
    /// A generation an earlier run committed without confirming, confirmed
    /// by this run.
    pub settled_generation: Option<u64>,
    /// Whether the vault's pointer was confirmed after the commit; when not
    /// (the vault was unreachable), the next backup confirms it.
    pub pointer_confirmed: bool,
}

/// Backs up every regular file under `device_root` for `account` under
/// `key`, the key registered in the vault.
pub async fn back_up_v3(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    account: &str,
    key: &RootKey,
    device_root: &Path,
) -> Result<PackBackupReport, BackupError> {
    back_up_v3_with(
        gateway,
        vault,
        account,
        key,
        key,
        device_root,
        PackBackupOptions::default(),
    )
    .await
}

/// [`back_up_v3`] with the pointer updates signed by whichever of `key` and
/// `signer` the vault accepts (during a key rotation `key` is the new key
/// and `signer` the registered old one), and with `options`.
pub async fn back_up_v3_with(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    account: &str,
    key: &RootKey,
    signer: &RootKey,
    device_root: &Path,
    options: PackBackupOptions,
) -> Result<PackBackupReport, BackupError> {
    let files = device_files::list(device_root).map_err(|source| BackupError::ReadDevice {
        path: device_root.display().to_string(),
        source,
    })?;
    let mut report = PackBackupReport {
        files: files.len(),
        ..PackBackupReport::default()
    };
    let mut pointer = vault.pointer().await?;
    let current = gateway.get_backup().await?;
    let expected = current.as_ref().map_or(0, |b| b.generation);
    let previous_sealed = match &current {
        Some(backup) => Some(
            gateway
                .get_manifest(backup.generation, backup.manifest_size)
                .await?,
        ),
        None => None,
    };
    let served = previous_sealed.as_ref().map(|sealed| BackupRef {
        generation: expected,
        manifest_digest: manifest::digest(sealed),
    });
    report.settled_generation = settle_served(vault, &mut pointer, served, key, signer).await?;
    let announcer = accepted_signer(&pointer, [signer, key])?;
    let previous = previous_sealed
        .as_ref()
        .and_then(|sealed| manifest::open(key, account, expected, sealed).ok());

    let keys = PackKeys::new(key, account);
    let uploads = gateway.list_uploads().await?;
    let committed_packs = current.iter().flat_map(|b| &b.packs);
    let mut known =
        known_chunks(gateway, &keys, previous.as_ref(), committed_packs, &uploads).await?;

    let mut builder = ManifestBuilder::default();
    // Files untouched since the previous generation keep their chunks.
    let untouched: HashMap<&str, &FileEntry> = previous
        .iter()
        .flat_map(|m| &m.files)
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut to_read = Vec::new();
    let mut entries: Vec<FileEntry> = Vec::with_capacity(files.len());
    for file in &files {
        let mut entry = FileEntry {
            path: file.path.clone(),
            size: file.size,
            modified_ns: file.modified_ns,
            chunks: Vec::new(),
            mode: mode_of(&device_root.join(&file.path)),
        };
        let reused = match (untouched.get(file.path.as_str()), &previous) {
            (Some(old), Some(previous))
                if file.modified_ns != 0
                    && old.modified_ns == file.modified_ns
                    && old.size == file.size =>
            {
                reuse_chunks(previous, old, &known)
            }
            _ => None,
        };
        match reused {
            Some(ids) => {
                for (id, location) in ids {
                    report.chunks += 1;
                    report.plain_bytes += u64::from(location.plain_length);
                    entry.chunks.push(builder.reference(id, &location));
                }
            }
            None if file.size > 0 => to_read.push((entries.len(), file.clone())),
            None => {}
        }
        entries.push(entry);
    }

    // A blocking thread reads and cuts the files; this task seals chunks
    // into packs; a spawned task uploads finished packs, one at a time,
    // while the next fills.
    let (tx, mut rx) = mpsc::channel::<Result<(usize, Chunk), BackupError>>(READ_AHEAD);
    let root = device_root.to_path_buf();
    let (ids, gear) = (ChunkIds::new(key), GearTable::new(key));
    let reader = tokio::task::spawn_blocking(move || read_files(&root, &to_read, &ids, &gear, tx));
    let (pack_tx, pack_rx) = mpsc::channel::<FinishedPack>(1);
    let uploader = tokio::spawn(upload_packs(gateway.clone(), pack_rx));

    let mut writer = PackWriter::new(keys.clone());
    let mut failure = None;
    while let Some(item) = rx.recv().await {
        let (index, chunk) = match item {
            Ok(item) => item,
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        report.chunks += 1;
        report.plain_bytes += chunk.data.len() as u64;
        let location = match known.get(&chunk.id) {
            Some(location) => location.clone(),
            None => {
                let entry = writer.add(&chunk.id, &chunk.data);
                report.new_chunks += 1;
                report.new_plain_bytes += chunk.data.len() as u64;
                let location = Location {
                    pack: writer.name().clone(),
                    offset: entry.offset,
                    sealed_length: entry.sealed_length,
                    plain_length: entry.plain_length,
                };
                known.insert(chunk.id, location.clone());
                location
            }
        };
        entries[index]
            .chunks
            .push(builder.reference(chunk.id, &location));
        if writer.data_len() >= options.pack_target {
            let full = std::mem::replace(&mut writer, PackWriter::new(keys.clone()));
            if pack_tx.send(full.finish()).await.is_err() {
                break; // the uploader failed: its error is below
            }
        }
    }
    drop(rx);
    if failure.is_none() && !writer.is_empty() {
        let _ = pack_tx.send(writer.finish()).await;
    }
    drop(pack_tx);
    reader.await.expect("the chunking task does not panic");
    let (uploaded_packs, uploaded_bytes) =
        uploader.await.expect("the upload task does not panic")?;
    if let Some(error) = failure {
        return Err(error);
    }
    report.uploaded_packs = uploaded_packs;
    report.uploaded_bytes = uploaded_bytes;
    report.resumed_chunks = builder.resumed(&uploads);

    let manifest = builder.finish(Manifest {
        account_id: account.to_string(),
        generation: expected + 1,
        created_at: unix_now(),
        previous_digest: served
            .map(|s| s.manifest_digest.to_vec())
            .unwrap_or_default(),
        files: entries,
        empty_dirs: empty_dirs(device_root).map_err(|source| BackupError::ReadDevice {
            path: device_root.display().to_string(),
            source,
        })?,
        ..Manifest::default()
    });
    report.distinct_chunks = manifest.chunks.len();
    report.packs = manifest.packs.len();
    let referenced: HashSet<&str> = manifest.packs.iter().map(String::as_str).collect();
    let abandoned: Vec<String> = uploads
        .iter()
        .map(|u| u.name.clone())
        .filter(|name| !referenced.contains(name.as_str()))
        .collect();
    report.abandoned_packs = abandoned.len();

    let sealed = manifest::seal(key, &manifest);
    report.manifest_bytes = sealed.len() as u64;
    report.uploaded_bytes += sealed.len() as u64;
    let announced = BackupRef {
        generation: expected + 1,
        manifest_digest: manifest::digest(&sealed),
    };
    let packs = manifest.packs.clone();
    vault.set_pending(announcer, announced, key).await?;
    let committed = gateway.commit(expected, sealed, packs, abandoned).await?;
    report.generation = committed.generation;
    report.deleted_packs = committed.deleted_packs;
    match vault.confirm(key, announced).await {
        Ok(()) => report.pointer_confirmed = true,
        Err(error) => warn!(%error, "committed, but the vault's pointer is not confirmed yet"),
    }
    info!(
        generation = report.generation,
        files = report.files,
        chunks = report.chunks,
        new_chunks = report.new_chunks,
        uploaded_packs = report.uploaded_packs,
        uploaded_bytes = report.uploaded_bytes,
        "v3 backup committed"
    );
    Ok(report)
}

/// A file's Unix permission bits (0, "unknown", elsewhere or when the file
/// cannot be read: the backup reports that when it reads the file).
fn mode_of(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

/// Directories under `root` with nothing in them, relative with '/'
/// separators, sorted: a restore creates them (and so their parents).
fn empty_dirs(root: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::new()];
    while let Some(relative) = dirs.pop() {
        let mut empty = true;
        for entry in std::fs::read_dir(root.join(&relative))? {
            let entry = entry?;
            empty = false;
            if entry.file_type()?.is_dir() {
                dirs.push(relative.join(entry.file_name()));
            }
        }
        if empty && !relative.as_os_str().is_empty() {
            let path = relative.to_str().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("directory name is not UTF-8: {}", relative.display()),
                )
            })?;
            out.push(path.replace(std::path::MAIN_SEPARATOR, "/"));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and cuts `to_read` (file index, file) in order, sending each
/// chunk; stops at the first failure, which it sends.
fn read_files(
    root: &Path,
    to_read: &[(usize, device_files::DeviceFile)],
    ids: &ChunkIds,
    gear: &GearTable,
    tx: mpsc::Sender<Result<(usize, Chunk), BackupError>>,
) {
    for (index, file) in to_read {
        let read_error = |source| BackupError::ReadDevice {
            path: file.path.clone(),
            source,
        };
        let chunks = match chunking::keyed_file_chunks(&root.join(&file.path), ids, gear) {
            Ok(chunks) => chunks,
            Err(error) => {
                let _ = tx.blocking_send(Err(read_error(error)));
                return;
            }
        };
        let mut total = 0u64;
        for chunk in chunks {
            let item = chunk.map_err(read_error).map(|c| {
                total += c.data.len() as u64;
                (*index, c)
            });
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
        if total != file.size {
            let changed = BackupError::FileChanged {
                path: file.path.clone(),
            };
            let _ = tx.blocking_send(Err(changed));
            return;
        }
    }
}

/// Uploads finished packs in order; returns how many and their bytes.
async fn upload_packs(
    gateway: PackGatewayClient,
    mut packs: mpsc::Receiver<FinishedPack>,
) -> Result<(usize, u64), BackupError> {
    let (mut count, mut bytes) = (0, 0);
    while let Some(pack) = packs.recv().await {
        let len = pack.bytes.len() as u64;
        gateway
            .put_pack(&pack.name, Arc::from(pack.bytes.into_boxed_slice()))
            .await?;
        debug!(pack = %pack.name, bytes = len, chunks = pack.entries.len(), "pack uploaded");
        count += 1;
        bytes += len;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_directories_are_listed_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Media/Voice/2026")).unwrap();
        std::fs::create_dir_all(dir.path().join("Backups")).unwrap();
        std::fs::create_dir_all(dir.path().join("Media/Images")).unwrap();
        std::fs::write(dir.path().join("Media/Images/a.jpg"), b"x").unwrap();
        assert_eq!(
            empty_dirs(dir.path()).unwrap(),
            ["Backups", "Media/Voice/2026"]
        );
    }
}
