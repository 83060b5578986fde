//! Restore the committed generation of a format v3 backup onto an empty
//! device directory.
//!
//! The served manifest is judged against the key vault's backup pointer
//! first, exactly as in v2 ([`crate::freshness`]): a rollback or a
//! substitution is refused before anything is written. The manifest is
//! then checked for consistency (every chunk's pack exists, its sealed
//! length fits its plain length, every file's chunks add up to its size).
//! Only the chunks the files need are fetched: each pack is read in ranges
//! that cover its needed chunks, neighbours merged when the gap between
//! them is small, so a restore reads whole packs when it needs all of them
//! and never reads a pack's padding or header. Every chunk is opened (its
//! AEAD binds account and id) and checked against its id before it is
//! written at each place the files use it; several ranges download at
//! once and are opened and written on blocking threads (positioned writes),
//! so the cores decrypt while the network fetches. Files are assembled in the v2
//! staging directory and moved into place only when all verified. When
//! the gateway becomes unreachable the staging directory stays (it is
//! bound to the manifest digest); the next attempt keeps every staged file
//! whose chunks all read back with their ids and fetches the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use e2eb_proto::backup::v3::Manifest;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

mod plan;

use super::gateway::PackGatewayClient;
use super::manifest::{self, ManifestError};
use super::pack::{PackError, PackKeys};
use crate::chunking::{ChunkId, ChunkIds};
use crate::device_files;
use crate::freshness;
use crate::gateway::GatewayError;
use crate::key::RootKey;
use crate::restore::staging::Staging;
use crate::restore::{IntegrityFailure, RestoreError, RestoreReport, ensure_empty};
use crate::seal::OpenError;
use crate::vault::{BackupRef, VaultClient};
use plan::{Needed, Plan, Range};

/// Ranges fetched ahead of the one being written.
const DOWNLOAD_CONCURRENCY: usize = 4;

/// Restores the account's committed v3 generation into `target`, which must
/// be absent or empty, after the vault's pointer vouched for it.
pub async fn restore_v3(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    account: &str,
    key: &RootKey,
    target: &Path,
) -> Result<RestoreReport, RestoreError> {
    restore_v3_any(gateway, vault, account, &[key], target).await
}

/// Restores with whichever of `keys` made the committed backup.
pub async fn restore_v3_any(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    account: &str,
    keys: &[&RootKey],
    target: &Path,
) -> Result<RestoreReport, RestoreError> {
    ensure_empty(target)?;
    let pointer = vault.pointer().await?;
    let Some(backup) = gateway.get_backup().await? else {
        freshness::judge(&pointer, None)?;
        return Err(RestoreError::NoBackup);
    };
    let sealed = gateway
        .get_manifest(backup.generation, backup.manifest_size)
        .await?;
    let digest = manifest::digest(&sealed);
    let served = BackupRef {
        generation: backup.generation,
        manifest_digest: digest,
    };
    let vouched = freshness::judge(&pointer, Some(served))?;
    let (key, manifest) = open_with_any(keys, account, backup.generation, &sealed)?;
    // Checked before anything is written.
    Plan::new(&manifest, &[])?;

    let staging = Staging::open(target, manifest.generation, &digest)?;
    // A staging directory left by an interrupted restore of this very
    // backup: the files that read back whole are kept.
    let done = staged_files(&manifest, &staging.dir, &ChunkIds::new(key)).await;
    let plan = Plan::new(&manifest, &done)?;
    let mut report = RestoreReport {
        generation: manifest.generation,
        vouched,
        key_id: hex::encode(key.key_id()),
        files: manifest.files.len(),
        ..RestoreReport::default()
    };
    let keys = PackKeys::new(key, account);
    let outcome = restore_files(
        gateway,
        &keys,
        &manifest,
        (plan, &done),
        &staging.dir,
        &mut report,
    )
    .await;
    staging.finish(target, outcome, report)
}

fn open_with_any<'k>(
    keys: &[&'k RootKey],
    account: &str,
    generation: u64,
    sealed: &[u8],
) -> Result<(&'k RootKey, Manifest), RestoreError> {
    let mut last = RestoreError::NoBackup;
    for key in keys {
        match manifest::open(key, account, generation, sealed) {
            Ok(manifest) => return Ok((key, manifest)),
            Err(ManifestError::OtherKey {
                backup_key_id,
                our_key_id,
            }) => {
                last = RestoreError::OtherKey {
                    backup_key_id,
                    given_key_id: our_key_id,
                }
            }
            Err(ManifestError::KeyIdAltered) => return Err(RestoreError::ManifestTampered),
            Err(ManifestError::Mismatch) => return Err(RestoreError::ManifestMismatch),
            Err(ManifestError::Damaged | ManifestError::Malformed | ManifestError::NotV3) => {
                return Err(RestoreError::WrongKeyOrForeignBackup);
            }
        }
    }
    Err(last)
}

pub(super) fn integrity(path: &str, reason: IntegrityFailure) -> RestoreError {
    RestoreError::Integrity {
        path: path.to_string(),
        reason,
    }
}

async fn restore_files(
    gateway: &PackGatewayClient,
    keys: &PackKeys,
    manifest: &Manifest,
    (plan, done): (Plan, &[bool]),
    staging: &Path,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let mut paths: Vec<PathBuf> = Vec::with_capacity(manifest.files.len());
    for (index, file) in manifest.files.iter().enumerate() {
        let destination =
            device_files::resolve(staging, &file.path).ok_or_else(|| RestoreError::UnsafePath {
                path: file.path.clone(),
            })?;
        let write_error = |source| RestoreError::WriteDevice {
            path: file.path.clone(),
            source,
        };
        if done.get(index).copied().unwrap_or(false) {
            paths.push(destination);
            continue;
        }
        if let Some(parent) = destination.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(write_error)?;
        }
        let created = tokio::fs::File::create(&destination)
            .await
            .map_err(write_error)?;
        created.set_len(file.size).await.map_err(write_error)?;
        paths.push(destination);
    }
    for dir in &manifest.empty_dirs {
        let destination = device_files::resolve(staging, dir)
            .ok_or_else(|| RestoreError::UnsafePath { path: dir.clone() })?;
        tokio::fs::create_dir_all(&destination)
            .await
            .map_err(|source| RestoreError::WriteDevice {
                path: dir.clone(),
                source,
            })?;
    }

    // Ranges are fetched several at once; each is opened and written on a
    // blocking thread, so decryption spreads over the cores while the next
    // ranges download. Writes are positioned, so ranges land in any order.
    let sink = Arc::new(Sink {
        keys: keys.clone(),
        names: manifest.files.iter().map(|f| f.path.clone()).collect(),
        paths: paths.clone(),
    });
    let mut written = futures::stream::iter(plan.ranges)
        .map(|range| {
            let sink = sink.clone();
            async move {
                let bytes = gateway
                    .get_pack_range(&range.pack, range.offset, range.length)
                    .await
                    .map_err(|error| sink.fetch_error(&range, error))?;
                let downloaded = bytes.len() as u64;
                let chunks = tokio::task::spawn_blocking(move || sink.write_range(&range, &bytes))
                    .await
                    .expect("writing a range does not panic")?;
                Ok::<_, RestoreError>((downloaded, chunks))
            }
        })
        .buffer_unordered(DOWNLOAD_CONCURRENCY);
    while let Some(outcome) = written.next().await {
        let (downloaded, chunks) = outcome?;
        report.downloaded_bytes += downloaded;
        report.downloaded_chunks += chunks;
    }

    for (file, path) in manifest.files.iter().zip(&paths) {
        let write_error = |source| RestoreError::WriteDevice {
            path: file.path.clone(),
            source,
        };
        let handle = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(write_error)?;
        handle.sync_all().await.map_err(write_error)?;
        #[cfg(unix)]
        if file.mode != 0 {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(file.mode & 0o7777);
            tokio::fs::set_permissions(path, mode)
                .await
                .map_err(write_error)?;
        }
        report.bytes += file.size;
    }
    Ok(())
}

/// Which files of `manifest` the staging directory already holds whole:
/// the right size, and every chunk reads back with its id.
async fn staged_files(manifest: &Manifest, staging: &Path, ids: &ChunkIds) -> Vec<bool> {
    let mut done = Vec::with_capacity(manifest.files.len());
    for file in &manifest.files {
        let whole = match device_files::resolve(staging, &file.path) {
            Some(path) => reads_back(manifest, file, &path, ids)
                .await
                .unwrap_or(false),
            None => false,
        };
        done.push(whole);
    }
    done
}

async fn reads_back(
    manifest: &Manifest,
    file: &e2eb_proto::backup::v3::FileEntry,
    path: &Path,
    ids: &ChunkIds,
) -> std::io::Result<bool> {
    let mut staged = tokio::fs::File::open(path).await?;
    if staged.metadata().await?.len() != file.size {
        return Ok(false);
    }
    let mut buffer = Vec::new();
    for &index in &file.chunks {
        let Some(chunk) = manifest.chunks.get(index as usize) else {
            return Ok(false);
        };
        let Ok(id) = <[u8; 32]>::try_from(chunk.id.as_slice()).map(ChunkId) else {
            return Ok(false);
        };
        buffer.resize(chunk.plain_length as usize, 0);
        staged.read_exact(&mut buffer).await?;
        if !ids.verify(&id, &buffer) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn failure_of(error: PackError) -> IntegrityFailure {
    match error {
        PackError::ChunkDamaged(open) => IntegrityFailure::Open(open),
        PackError::WrongChunk => IntegrityFailure::WrongChunk,
        PackError::WrongLength { .. } => IntegrityFailure::WrongSize,
        // Header and trailer errors come from reading a pack's end, which
        // a restore never does.
        _ => IntegrityFailure::Open(OpenError::Damaged),
    }
}

/// Where opened chunks go: the staged files, and the keys to open them.
struct Sink {
    keys: PackKeys,
    /// The files' staged paths and their names in the manifest, by index.
    paths: Vec<PathBuf>,
    names: Vec<String>,
}

impl Sink {
    fn first_path(&self, chunk: &Needed) -> &str {
        &self.names[chunk.uses[0].0]
    }

    fn fetch_error(&self, range: &Range, error: GatewayError) -> RestoreError {
        match error {
            GatewayError::Oversized { .. } => integrity(
                self.first_path(&range.chunks[0]),
                IntegrityFailure::Oversized,
            ),
            GatewayError::NotFound(_) => RestoreError::MissingFile {
                path: self.first_path(&range.chunks[0]).to_string(),
            },
            other => other.into(),
        }
    }

    /// Opens every chunk of one fetched range and writes it wherever the
    /// files use it; returns the chunks opened. Keeps the last file open:
    /// a pack's chunks mostly follow file order.
    fn write_range(&self, range: &Range, bytes: &[u8]) -> Result<usize, RestoreError> {
        use std::os::unix::fs::FileExt;
        let mut open: Option<(usize, std::fs::File)> = None;
        for chunk in &range.chunks {
            let start = (chunk.offset - range.offset) as usize;
            let end = start + chunk.sealed_length as usize;
            let Some(sealed) = bytes.get(start..end) else {
                return Err(integrity(
                    self.first_path(chunk),
                    IntegrityFailure::Open(OpenError::Truncated),
                ));
            };
            let plain = self
                .keys
                .open_chunk(&chunk.id, sealed, chunk.plain_length)
                .map_err(|error| integrity(self.first_path(chunk), failure_of(error)))?;
            for &(file, at) in &chunk.uses {
                let write_error = |source| RestoreError::WriteDevice {
                    path: self.names[file].clone(),
                    source,
                };
                if open.as_ref().map(|(index, _)| *index) != Some(file) {
                    let handle = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&self.paths[file])
                        .map_err(write_error)?;
                    open = Some((file, handle));
                }
                let (_, handle) = open.as_ref().expect("a file is open");
                handle.write_all_at(&plain, at).map_err(write_error)?;
            }
        }
        Ok(range.chunks.len())
    }
}
