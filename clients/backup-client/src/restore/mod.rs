//! Restore the committed generation onto an empty device directory.
//!
//! The served backup is judged first against the key vault's backup pointer
//! ([`freshness`](crate::freshness)): an older generation (a rollback) or a
//! manifest the pointer does not name (a substitution) is refused before
//! anything is written. Every chunk is then fetched (never more bytes than
//! the manifest allows), opened (its AEAD binds account and id) and checked
//! against its id (the MAC of its plaintext) before it is written, so a
//! missing, altered, reordered or foreign chunk stops the restore with an
//! error naming the file. Files go into a staging directory beside the
//! target that is moved into place only when all verified. When the gateway
//! becomes unreachable the staging directory stays: running the restore
//! again resumes the same backup (bound by manifest digest) after the last
//! chunk of each file that re-verifies.

pub(crate) mod staging;

use std::path::Path;

use e2eb_proto::backup::v2::{FileEntry, Manifest};
use futures::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::chunking::{ChunkId, ChunkIds};
use crate::device_files;
use crate::freshness::{self, FreshnessError, Vouched};
use crate::gateway::{GatewayClient, GatewayError};
use crate::key::{DerivedKey, KeyPurpose, RootKey};
use crate::manifest::{self, ManifestError};
use crate::names;
use crate::seal::{self, ObjectKind, OpenError};
use crate::vault::{BackupRef, VaultClient, VaultError};
use staging::Staging;

/// Chunks fetched ahead of the one being written.
const DOWNLOAD_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("this account has no backup to restore")]
    NoBackup,
    #[error("the restore target {path} is not empty; choose an empty or new directory")]
    TargetNotEmpty { path: String },
    #[error(
        "the backup was made with another key (key id {backup_key_id}; the key given has id {given_key_id}); use the key that made it"
    )]
    OtherKey {
        backup_key_id: String,
        given_key_id: String,
    },
    #[error(
        "the backup cannot be opened with this key: the manifest was altered, or belongs to another account"
    )]
    WrongKeyOrForeignBackup,
    #[error(
        "the backup's manifest was altered in storage (its key id was changed); the stored backup \
         was tampered with"
    )]
    ManifestTampered,
    #[error(
        "the gateway served the wrong backup: the manifest names another account or generation"
    )]
    ManifestMismatch,
    /// The storage served a backup the key vault's pointer does not vouch
    /// for (rolled back, substituted, or missing).
    #[error(transparent)]
    Freshness(#[from] FreshnessError),
    /// The key vault (which holds the backup pointer) could not answer.
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the backup lists an unsafe path {path:?}; refusing to write outside the target")]
    UnsafePath { path: String },
    #[error("{path} is missing chunks at the gateway; the backup is incomplete")]
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
    #[error("a chunk's content does not match its id (swapped or reordered chunk)")]
    WrongChunk,
    #[error("the file has the wrong size")]
    WrongSize,
    #[error("the storage sent a chunk larger than the manifest allows")]
    Oversized,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub generation: u64,
    /// Whether the vault's pointer names the generation as committed, or as
    /// pending (its commit landed but was never confirmed).
    pub vouched: Option<Vouched>,
    /// The id of the key that opened the backup (hex), so a caller holding
    /// several keys (around a rotation) can say which one it was.
    pub key_id: String,
    pub files: usize,
    /// Plaintext bytes written to the device.
    pub bytes: u64,
    /// Chunks fetched by this run (a resumed run skips verified ones).
    pub downloaded_chunks: usize,
    pub downloaded_bytes: u64,
}

/// Restores the account's committed generation into `target`, which must be
/// absent or empty, after the vault's pointer vouched for it.
pub async fn restore(
    gateway: &GatewayClient,
    vault: &VaultClient,
    account: &str,
    key: &RootKey,
    target: &Path,
) -> Result<RestoreReport, RestoreError> {
    restore_any(gateway, vault, account, &[key], target).await
}

/// Restores with whichever of `keys` made the committed backup (a password
/// user recovers two keys in the middle of a key rotation; a key user may
/// hold the old and the new key of an unsettled rotation).
pub async fn restore_any(
    gateway: &GatewayClient,
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
    let sealed = gateway.get_manifest(backup.generation).await?;
    let digest = manifest::digest(&sealed);
    let served = BackupRef {
        generation: backup.generation,
        manifest_digest: digest,
    };
    let vouched = freshness::judge(&pointer, Some(served))?;
    let (key, manifest) = open_with_any(keys, account, backup.generation, &sealed)?;

    let staging = Staging::open(target, manifest.generation, &digest)?;
    let reader = ChunkReader {
        gateway,
        account,
        key: key.derive(KeyPurpose::FileData),
        ids: ChunkIds::new(key),
    };
    let mut report = RestoreReport {
        generation: manifest.generation,
        vouched,
        key_id: hex::encode(key.key_id()),
        files: manifest.files.len(),
        ..RestoreReport::default()
    };
    let outcome = restore_files(&reader, &manifest, &staging.dir, &mut report).await;
    staging.finish(target, outcome, report)
}

/// Opens the sealed manifest with the first of `keys` that made it.
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
            Err(ManifestError::Damaged(_) | ManifestError::Malformed) => {
                return Err(RestoreError::WrongKeyOrForeignBackup);
            }
        }
    }
    Err(last)
}

async fn restore_files(
    reader: &ChunkReader<'_>,
    manifest: &Manifest,
    staging: &Path,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    for entry in &manifest.files {
        let destination = device_files::resolve(staging, &entry.path).ok_or_else(|| {
            RestoreError::UnsafePath {
                path: entry.path.clone(),
            }
        })?;
        restore_file(reader, entry, &destination, report).await?;
        report.bytes += entry.size;
    }
    Ok(())
}

/// Writes one file from its chunks, resuming after the chunks an earlier
/// attempt already verified and wrote.
async fn restore_file(
    reader: &ChunkReader<'_>,
    entry: &FileEntry,
    destination: &Path,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let path = entry.path.as_str();
    let write_error = |source| RestoreError::WriteDevice {
        path: path.to_string(),
        source,
    };
    let declared: u64 = entry.chunks.iter().map(|c| c.size as u64).sum();
    if declared != entry.size {
        return Err(RestoreError::Integrity {
            path: path.to_string(),
            reason: IntegrityFailure::WrongSize,
        });
    }
    if let Some(parent) = destination.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(write_error)?;
    }
    // Keep only the chunks an earlier attempt of this same backup wrote
    // that read back with their ids.
    let (done, offset) = staging::verified_prefix(destination, entry, &reader.ids)
        .await
        .map_err(write_error)?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(destination)
        .await
        .map_err(write_error)?;
    file.set_len(offset).await.map_err(write_error)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(write_error)?;

    // Owned ids: a stream over borrowed items would make the restore future
    // not `Send` (rust-lang/rust#102211), and callers spawn it.
    let pending: Vec<(Vec<u8>, u32)> = entry.chunks[done..]
        .iter()
        .map(|chunk| (chunk.id.clone(), chunk.size))
        .collect();
    let mut fetched = futures::stream::iter(pending)
        .map(|(id, size)| reader.fetch(path, id, size))
        .buffered(DOWNLOAD_CONCURRENCY);
    while let Some(result) = fetched.next().await {
        let (plain, sealed_len) = result?;
        file.write_all(&plain).await.map_err(write_error)?;
        report.downloaded_chunks += 1;
        report.downloaded_bytes += sealed_len;
    }
    file.sync_all().await.map_err(write_error)?;
    Ok(())
}

/// Fetches and verifies chunks for one account and key.
struct ChunkReader<'a> {
    gateway: &'a GatewayClient,
    account: &'a str,
    key: DerivedKey,
    ids: ChunkIds,
}

impl ChunkReader<'_> {
    async fn fetch(
        &self,
        path: &str,
        id: Vec<u8>,
        size: u32,
    ) -> Result<(Vec<u8>, u64), RestoreError> {
        let integrity = |reason: IntegrityFailure| RestoreError::Integrity {
            path: path.to_string(),
            reason,
        };
        let id = ChunkId(
            id.as_slice()
                .try_into()
                .map_err(|_| integrity(IntegrityFailure::WrongChunk))?,
        );
        let max_len = seal::sealed_len(size as u64) as usize;
        let sealed = match self.gateway.get_chunk(&id.to_hex(), max_len).await {
            Ok(sealed) => sealed,
            Err(GatewayError::Oversized { .. }) => {
                return Err(integrity(IntegrityFailure::Oversized));
            }
            Err(GatewayError::NotFound(_)) => {
                return Err(RestoreError::MissingFile {
                    path: path.to_string(),
                });
            }
            Err(other) => return Err(other.into()),
        };
        let context = names::chunk_context(self.account, &id);
        let plain = seal::open(&self.key, ObjectKind::Chunk, &context, &sealed)
            .map_err(|e| integrity(e.into()))?;
        if !self.ids.verify(&id, &plain) {
            return Err(integrity(IntegrityFailure::WrongChunk));
        }
        if plain.len() != size as usize {
            return Err(integrity(IntegrityFailure::WrongSize));
        }
        Ok((plain, sealed.len() as u64))
    }
}

pub(crate) fn ensure_empty(target: &Path) -> Result<(), RestoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// Callers run restores in spawned tasks, which needs a `Send` future
    /// (checked at compile time; the future is never polled).
    #[tokio::test]
    async fn the_restore_future_is_send() {
        let gateway = GatewayClient::connect(
            "http://127.0.0.1:1",
            &rpc::Trust::insecure_plaintext_only(),
            crate::BearerToken::new("t"),
        )
        .unwrap();
        let vault = VaultClient::connect(
            "http://127.0.0.1:1",
            &rpc::Trust::insecure_plaintext_only(),
            crate::BearerToken::new("t"),
            "a",
            "00",
            crate::vault::KsfStrength::InsecureFastForTests,
        )
        .unwrap();
        let key = RootKey::generate();
        assert_send(restore(
            &gateway,
            &vault,
            "a",
            &key,
            Path::new("/nonexistent"),
        ));
    }
}
