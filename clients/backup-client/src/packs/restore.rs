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
//! written at each place the files use it. Files are assembled in the v2
//! staging directory and moved into place only when all verified. When
//! the gateway becomes unreachable the staging directory stays (it is
//! bound to the manifest digest); the next attempt keeps every staged file
//! whose chunks all read back with their ids and fetches the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use e2eb_proto::backup::v3::Manifest;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::info;

use super::gateway::PackGatewayClient;
use super::manifest::{self, ManifestError};
use super::pack::{self, PackError, PackKeys, PackName};
use crate::chunking::{ChunkId, ChunkIds};
use crate::device_files;
use crate::freshness;
use crate::gateway::GatewayError;
use crate::key::RootKey;
use crate::restore::staging::Staging;
use crate::restore::{IntegrityFailure, RestoreError, RestoreReport, ensure_empty};
use crate::seal::OpenError;
use crate::vault::{BackupRef, VaultClient};

/// Two needed chunks of a pack closer than this are fetched in one range
/// (the bytes between them are read and dropped).
const MERGE_GAP: u64 = 256 * 1024;
/// Largest range fetched at once.
const MAX_RANGE: u64 = 32 * 1024 * 1024;
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
        (&plan, &done),
        &staging.dir,
        &mut report,
    )
    .await;
    match outcome {
        Ok(()) => {
            staging.commit(target)?;
            info!(
                generation = report.generation,
                files = report.files,
                bytes = report.bytes,
                "v3 restore verified"
            );
            Ok(report)
        }
        // Unreachable gateway: keep the staging directory for a new attempt.
        Err(RestoreError::Gateway(error)) if error.is_retryable() => Err(error.into()),
        Err(other) => {
            staging.discard();
            Err(other)
        }
    }
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

/// One chunk to fetch and where the files use it.
struct Needed {
    id: ChunkId,
    offset: u64,
    sealed_length: u32,
    plain_length: u32,
    /// (file index, byte offset in the file), first use first.
    uses: Vec<(usize, u64)>,
}

/// One ranged read of a pack and the chunks it covers.
struct Range {
    pack: PackName,
    offset: u64,
    length: u64,
    chunks: Vec<Needed>,
}

/// What to fetch, checked against the manifest's own claims.
struct Plan {
    ranges: Vec<Range>,
}

impl Plan {
    /// The plan for the files not marked in `done` (a file index past its
    /// end is not done).
    fn new(manifest: &Manifest, done: &[bool]) -> Result<Self, RestoreError> {
        let packs: Vec<PackName> = manifest
            .packs
            .iter()
            .map(|name| {
                PackName::parse(name)
                    .ok_or_else(|| integrity("(manifest)", IntegrityFailure::WrongChunk))
            })
            .collect::<Result<_, _>>()?;
        let mut uses: Vec<Vec<(usize, u64)>> = vec![Vec::new(); manifest.chunks.len()];
        for (file_index, file) in manifest.files.iter().enumerate() {
            let mut at = 0u64;
            for &chunk in &file.chunks {
                let location = manifest
                    .chunks
                    .get(chunk as usize)
                    .ok_or_else(|| integrity(&file.path, IntegrityFailure::WrongChunk))?;
                if !done.get(file_index).copied().unwrap_or(false) {
                    uses[chunk as usize].push((file_index, at));
                }
                at += u64::from(location.plain_length);
            }
            if at != file.size {
                return Err(integrity(&file.path, IntegrityFailure::WrongSize));
            }
        }
        // Needed chunks by pack, in pack order.
        let mut by_pack: BTreeMap<u32, Vec<Needed>> = BTreeMap::new();
        for (chunk, uses) in manifest.chunks.iter().zip(uses) {
            let Some(&(first_file, _)) = uses.first() else {
                continue;
            };
            let path = &manifest.files[first_file].path;
            let id = ChunkId(
                chunk
                    .id
                    .as_slice()
                    .try_into()
                    .map_err(|_| integrity(path, IntegrityFailure::WrongChunk))?,
            );
            let expected = pack::sealed_chunk_len(chunk.plain_length.into());
            if chunk.pack as usize >= packs.len() || u64::from(chunk.sealed_length) != expected {
                return Err(integrity(path, IntegrityFailure::WrongSize));
            }
            by_pack.entry(chunk.pack).or_default().push(Needed {
                id,
                offset: chunk.offset,
                sealed_length: chunk.sealed_length,
                plain_length: chunk.plain_length,
                uses,
            });
        }
        let mut ranges = Vec::new();
        for (pack, mut needed) in by_pack {
            needed.sort_by_key(|n| n.offset);
            let mut current: Option<Range> = None;
            for chunk in needed {
                let end = chunk.offset + u64::from(chunk.sealed_length);
                if let Some(range) = &mut current {
                    let range_end = range.offset + range.length;
                    if chunk.offset >= range_end
                        && chunk.offset - range_end <= MERGE_GAP
                        && end - range.offset <= MAX_RANGE
                    {
                        range.length = end - range.offset;
                        range.chunks.push(chunk);
                        continue;
                    }
                    ranges.push(current.take().expect("a range is open"));
                }
                current = Some(Range {
                    pack: packs[pack as usize].clone(),
                    offset: chunk.offset,
                    length: u64::from(chunk.sealed_length),
                    chunks: vec![chunk],
                });
            }
            ranges.extend(current);
        }
        Ok(Self { ranges })
    }
}

fn integrity(path: &str, reason: IntegrityFailure) -> RestoreError {
    RestoreError::Integrity {
        path: path.to_string(),
        reason,
    }
}

async fn restore_files(
    gateway: &PackGatewayClient,
    keys: &PackKeys,
    manifest: &Manifest,
    (plan, done): (&Plan, &[bool]),
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

    let mut fetched = futures::stream::iter(&plan.ranges)
        .map(|range| async move {
            let bytes = gateway
                .get_pack_range(&range.pack, range.offset, range.length)
                .await;
            (range, bytes)
        })
        .buffered(DOWNLOAD_CONCURRENCY);
    let mut writer = Writer::default();
    while let Some((range, bytes)) = fetched.next().await {
        let first_path = |chunk: &Needed| manifest.files[chunk.uses[0].0].path.as_str();
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(GatewayError::Oversized { .. }) => {
                return Err(integrity(
                    first_path(&range.chunks[0]),
                    IntegrityFailure::Oversized,
                ));
            }
            Err(GatewayError::NotFound(_)) => {
                return Err(RestoreError::MissingFile {
                    path: first_path(&range.chunks[0]).to_string(),
                });
            }
            Err(other) => return Err(other.into()),
        };
        report.downloaded_bytes += bytes.len() as u64;
        for chunk in &range.chunks {
            let start = (chunk.offset - range.offset) as usize;
            let end = start + chunk.sealed_length as usize;
            let Some(sealed) = bytes.get(start..end) else {
                return Err(integrity(
                    first_path(chunk),
                    IntegrityFailure::Open(OpenError::Truncated),
                ));
            };
            let plain = keys
                .open_chunk(&chunk.id, sealed, chunk.plain_length)
                .map_err(|error| integrity(first_path(chunk), failure_of(error)))?;
            report.downloaded_chunks += 1;
            for &(file, at) in &chunk.uses {
                writer
                    .write_at(file, &paths[file], &manifest.files[file].path, at, &plain)
                    .await?;
            }
        }
    }

    writer
        .finish()
        .await
        .map_err(|source| RestoreError::WriteDevice {
            path: staging.display().to_string(),
            source,
        })?;
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

/// Writes plaintext into the staged files, keeping the last file open:
/// the chunks of a pack mostly follow file order, so most writes go to the
/// file the previous one went to.
#[derive(Default)]
struct Writer {
    open: Option<(usize, tokio::fs::File)>,
}

impl Writer {
    async fn write_at(
        &mut self,
        index: usize,
        path: &Path,
        name: &str,
        at: u64,
        plain: &[u8],
    ) -> Result<(), RestoreError> {
        let write_error = |source| RestoreError::WriteDevice {
            path: name.to_string(),
            source,
        };
        if self.open.as_ref().map(|(open, _)| *open) != Some(index) {
            if let Some((_, mut previous)) = self.open.take() {
                previous.flush().await.map_err(write_error)?;
            }
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .map_err(write_error)?;
            self.open = Some((index, file));
        }
        let (_, file) = self.open.as_mut().expect("a file is open");
        file.seek(std::io::SeekFrom::Start(at))
            .await
            .map_err(write_error)?;
        file.write_all(plain).await.map_err(write_error)?;
        Ok(())
    }

    async fn finish(mut self) -> std::io::Result<()> {
        if let Some((_, mut file)) = self.open.take() {
            file.flush().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2eb_proto::backup::v3::{ChunkLocation, FileEntry};

    fn chunk(id: u8, pack: u32, offset: u64, plain: u32) -> ChunkLocation {
        ChunkLocation {
            id: vec![id; 32],
            pack,
            offset,
            sealed_length: pack::sealed_chunk_len(plain.into()) as u32,
            plain_length: plain,
        }
    }

    fn file(path: &str, chunks: &[u32], size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            chunks: chunks.to_vec(),
            ..FileEntry::default()
        }
    }

    fn manifest() -> Manifest {
        let sealed = |plain: u32| pack::sealed_chunk_len(plain.into());
        Manifest {
            account_id: "alice".into(),
            generation: 1,
            packs: vec!["a".repeat(64), "b".repeat(64)],
            chunks: vec![
                chunk(0, 0, 0, 1000),
                // Right after chunk 0: merged into its range.
                chunk(1, 0, sealed(1000), 2000),
                // 1 MiB further on: a range of its own.
                chunk(2, 0, (1 << 20) + 5000, 3000),
                // Referenced by no file: never fetched.
                chunk(3, 1, 0, 10),
                chunk(4, 1, 100, 500),
            ],
            files: vec![
                file("a.db", &[0, 1, 2], 6000),
                file("b.jpg", &[4, 0], 1500),
                file("empty", &[], 0),
            ],
            ..Manifest::default()
        }
    }

    #[test]
    fn only_needed_chunks_are_fetched_in_merged_ranges() {
        let plan = Plan::new(&manifest(), &[]).unwrap();
        let ranges: Vec<(String, u64, usize)> = plan
            .ranges
            .iter()
            .map(|r| (r.pack.as_str()[..1].to_string(), r.offset, r.chunks.len()))
            .collect();
        assert_eq!(
            ranges,
            [
                ("a".to_string(), 0, 2),
                ("a".to_string(), (1 << 20) + 5000, 1),
                ("b".to_string(), 100, 1),
            ]
        );
        let first = &plan.ranges[0];
        assert_eq!(
            first.length,
            pack::sealed_chunk_len(1000) + pack::sealed_chunk_len(2000)
        );
        // Chunk 0 is written into both files that use it, at their offsets.
        assert_eq!(first.chunks[0].uses, [(0, 0), (1, 500)]);
        assert_eq!(first.chunks[1].uses, [(0, 1000)]);
    }

    #[test]
    fn an_inconsistent_manifest_is_refused_before_anything_is_fetched() {
        let mut wrong_size = manifest();
        wrong_size.files[0].size = 6001;
        assert!(matches!(
            Plan::new(&wrong_size, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongSize,
                ..
            })
        ));
        let mut no_such_chunk = manifest();
        no_such_chunk.files[1].chunks.push(99);
        assert!(matches!(
            Plan::new(&no_such_chunk, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongChunk,
                ..
            })
        ));
        let mut no_such_pack = manifest();
        no_such_pack.chunks[4].pack = 7;
        assert!(matches!(
            Plan::new(&no_such_pack, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongSize,
                ..
            })
        ));
        let mut sealed_too_long = manifest();
        sealed_too_long.chunks[2].sealed_length += 1;
        assert!(matches!(
            Plan::new(&sealed_too_long, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongSize,
                ..
            })
        ));
        let mut bad_name = manifest();
        bad_name.packs[1] = "../x".into();
        assert!(matches!(
            Plan::new(&bad_name, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongChunk,
                ..
            })
        ));
    }

    #[test]
    fn files_staged_whole_are_not_fetched_again() {
        // File 0 done: only chunk 4 (b.jpg) and chunk 0 (b.jpg's too).
        let plan = Plan::new(&manifest(), &[true, false, false]).unwrap();
        let fetched: Vec<(u64, Vec<(usize, u64)>)> = plan
            .ranges
            .iter()
            .flat_map(|r| &r.chunks)
            .map(|c| (c.offset, c.uses.clone()))
            .collect();
        assert_eq!(fetched, [(0, vec![(1, 500)]), (100, vec![(1, 0)])]);
        let everything_done = Plan::new(&manifest(), &[true, true, true]).unwrap();
        assert!(everything_done.ranges.is_empty());
    }
}
