//! Back up a device: cut every file into content-defined chunks, upload the
//! chunks the gateway does not hold yet, then commit a sealed manifest as
//! the next generation. Unchanged chunks are never sent again, and an
//! interrupted backup resumes without re-sending what arrived.
//!
//! The key vault's backup pointer frames every commit: the backup the
//! gateway serves must be the one the pointer vouches for (else the storage
//! rolled it back or substituted it, and nothing is committed on top); the
//! new generation is announced as `pending` before the commit and confirmed
//! after it. A commit whose answer was lost is settled by the next run,
//! which finds the served backup equal to the pending one and confirms it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use e2eb_proto::backup::v2::{ChunkRef, FileEntry, Manifest};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::chunking::{self, Chunk, ChunkId, ChunkIds};
use crate::device_files;
use crate::freshness::{self, FreshnessError, Vouched};
use crate::gateway::{GatewayClient, GatewayError};
use crate::key::{DerivedKey, KeyPurpose, RootKey};
use crate::manifest;
use crate::names;
use crate::seal;
use crate::vault::{BackupRef, Pointer, VaultClient, VaultError};

/// Chunks uploaded at once.
const UPLOAD_CONCURRENCY: usize = 8;
/// New chunks collected before asking the gateway which it already has.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read {path} on the device: {source}")]
    ReadDevice {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} changed while it was being backed up; run the backup again")]
    FileChanged { path: String },
    /// The storage serves a backup the vault's pointer does not vouch for;
    /// committing on top of it would bury the real one.
    #[error("{0}; no backup was made on top of it")]
    Freshness(#[from] FreshnessError),
    #[error(
        "none of the keys given (key id {key_id}) is the one the key vault has registered for this \
         account; back up with the registered key"
    )]
    KeyNotRegistered { key_id: String },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What a finished backup did.
#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub generation: u64,
    pub files: usize,
    /// Plaintext bytes on the device.
    pub plain_bytes: u64,
    pub chunks: usize,
    /// Chunks this run sent (the rest the gateway already held).
    pub uploaded_chunks: usize,
    /// Plaintext bytes of the chunks this run sent.
    pub uploaded_plain_bytes: u64,
    /// Sealed bytes this run sent, manifest included.
    pub uploaded_bytes: u64,
    pub manifest_bytes: u64,
    /// Chunks of the replaced generation the gateway deleted.
    pub deleted_chunks: u64,
    /// A generation an earlier run committed without confirming (its answer
    /// was lost), confirmed by this run.
    pub settled_generation: Option<u64>,
    /// Whether the vault's pointer was confirmed after the commit; when not
    /// (the vault was unreachable), the next backup confirms it.
    pub pointer_confirmed: bool,
}

/// Backs up every regular file under `device_root` for `account` under `key`,
/// the key registered in the vault.
pub async fn back_up(
    gateway: &GatewayClient,
    vault: &VaultClient,
    account: &str,
    key: &RootKey,
    device_root: &Path,
) -> Result<BackupReport, BackupError> {
    back_up_with_signer(gateway, vault, account, key, key, device_root).await
}

/// Backs up under `key` with the pointer updates signed by whichever of
/// `key` and `signer` the vault accepts: during a key rotation `key` is the
/// new key and `signer` the registered old one.
pub async fn back_up_with_signer(
    gateway: &GatewayClient,
    vault: &VaultClient,
    account: &str,
    key: &RootKey,
    signer: &RootKey,
    device_root: &Path,
) -> Result<BackupReport, BackupError> {
    let files = device_files::list(device_root).map_err(|source| BackupError::ReadDevice {
        path: device_root.display().to_string(),
        source,
    })?;
    let mut report = BackupReport {
        files: files.len(),
        ..BackupReport::default()
    };
    let mut pointer = vault.pointer().await?;
    let expected = gateway.get_backup().await?.map_or(0, |b| b.generation);
    let previous_sealed = match expected {
        0 => None,
        generation => Some(gateway.get_manifest(generation).await?),
    };
    let served = previous_sealed.as_ref().map(|sealed| BackupRef {
        generation: expected,
        manifest_digest: manifest::digest(sealed),
    });
    report.settled_generation = settle_served(vault, &mut pointer, served, key, signer).await?;
    let announcer = accepted_signer(&pointer, [signer, key])?;
    let previous =
        previous_sealed.and_then(|sealed| manifest::open(key, account, expected, &sealed).ok());
    // Chunks the previous generation holds need no question to the gateway.
    let mut known: HashSet<ChunkId> = previous
        .iter()
        .flat_map(|m| &m.files)
        .flat_map(|f| &f.chunks)
        .filter_map(|c| c.id.as_slice().try_into().ok().map(ChunkId))
        .collect();
    // Files untouched since then (same size and modification time) keep
    // their chunk list and are not read at all.
    let untouched: HashMap<&str, &FileEntry> = previous
        .iter()
        .flat_map(|m| &m.files)
        .map(|f| (f.path.as_str(), f))
        .collect();
    let ids = ChunkIds::new(key);
    let chunk_key = key.derive(KeyPurpose::FileData);
    let mut manifest = Manifest {
        account_id: account.to_string(),
        generation: expected + 1,
        created_at: unix_now(),
        files: Vec::with_capacity(files.len()),
    };

    // A blocking thread reads and cuts the files; this task uploads.
    manifest.files = files
        .iter()
        .map(|f| match untouched.get(f.path.as_str()) {
            Some(old)
                if f.modified_ns != 0 && old.modified_ns == f.modified_ns && old.size == f.size =>
            {
                (*old).clone()
            }
            _ => FileEntry {
                path: f.path.clone(),
                size: f.size,
                chunks: Vec::new(),
                modified_ns: f.modified_ns,
            },
        })
        .collect();
    let mut referenced: Vec<String> = Vec::new();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut to_read = Vec::new();
    for (index, (file, entry)) in files.iter().zip(&manifest.files).enumerate() {
        if entry.chunks.is_empty() && file.size > 0 {
            to_read.push((index, file.clone()));
            continue;
        }
        for chunk in &entry.chunks {
            report.chunks += 1;
            report.plain_bytes += chunk.size as u64;
            if let Ok(id) = chunk.id.as_slice().try_into().map(ChunkId)
                && seen.insert(id)
            {
                referenced.push(id.to_hex());
            }
        }
    }

    let (tx, mut rx) = mpsc::channel::<Result<(usize, Chunk), BackupError>>(BATCH);
    let root = device_root.to_path_buf();
    let chunk_ids = ids.clone();
    let reader = tokio::task::spawn_blocking(move || {
        for (index, file) in &to_read {
            let index = *index;
            let read_error = |source| BackupError::ReadDevice {
                path: file.path.clone(),
                source,
            };
            let file_chunks = match chunking::file_chunks(&root.join(&file.path), &chunk_ids) {
                Ok(file_chunks) => file_chunks,
                Err(e) => return tx.blocking_send(Err(read_error(e))).ok(),
            };
            let mut total = 0u64;
            for chunk in file_chunks {
                let item = chunk.map_err(read_error).map(|c| {
                    total += c.data.len() as u64;
                    (index, c)
                });
                let failed = item.is_err();
                tx.blocking_send(item).ok()?;
                if failed {
                    return None;
                }
            }
            if total != file.size {
                let changed = BackupError::FileChanged {
                    path: file.path.clone(),
                };
                return tx.blocking_send(Err(changed)).ok();
            }
        }
        None
    });

    let mut pending: Vec<Chunk> = Vec::new();
    while let Some(item) = rx.recv().await {
        let (index, chunk) = item?;
        report.chunks += 1;
        report.plain_bytes += chunk.data.len() as u64;
        manifest.files[index].chunks.push(ChunkRef {
            id: chunk.id.0.to_vec(),
            size: chunk.data.len() as u32,
        });
        if seen.insert(chunk.id) {
            referenced.push(chunk.id.to_hex());
            if !known.contains(&chunk.id) {
                pending.push(chunk);
            }
        }
        if pending.len() >= BATCH {
            upload(
                gateway,
                account,
                &chunk_key,
                &mut pending,
                &mut known,
                &mut report,
            )
            .await?;
        }
    }
    reader.await.expect("the chunking task does not panic");
    upload(
        gateway,
        account,
        &chunk_key,
        &mut pending,
        &mut known,
        &mut report,
    )
    .await?;

    let sealed = manifest::seal(key, account, &manifest);
    report.manifest_bytes = sealed.len() as u64;
    report.uploaded_bytes += sealed.len() as u64;
    let announced = BackupRef {
        generation: expected + 1,
        manifest_digest: manifest::digest(&sealed),
    };
    vault.set_pending(announcer, announced, key).await?;
    let committed = gateway.commit(expected, sealed, referenced).await?;
    report.generation = committed.generation;
    report.deleted_chunks = committed.deleted_chunks;
    // The commit stands whatever happens now; a confirmation that fails
    // is made by the next backup (or accepted as pending by a restore).
    match vault.confirm(key, announced).await {
        Ok(()) => report.pointer_confirmed = true,
        Err(error) => warn!(%error, "committed, but the vault's pointer is not confirmed yet"),
    }
    info!(
        generation = report.generation,
        files = report.files,
        chunks = report.chunks,
        uploaded_chunks = report.uploaded_chunks,
        uploaded_bytes = report.uploaded_bytes,
        "backup committed"
    );
    Ok(report)
}

/// Judges the backup the gateway serves against the vault's backup pointer
/// before anything is committed on top of it: a generation the pointer
/// holds as pending (an earlier commit whose confirmation was lost) is
/// confirmed now and `pointer` updated to what the vault then holds; a
/// backup the storage lost starts a new chain; a rolled-back or substituted
/// one is refused. Returns the generation this settled, if any. Shared by
/// format v2 and v3 ([`crate::packs::backup`]).
pub(crate) async fn settle_served(
    vault: &VaultClient,
    pointer: &mut Pointer,
    served: Option<BackupRef>,
    key: &RootKey,
    signer: &RootKey,
) -> Result<Option<u64>, BackupError> {
    match freshness::judge(pointer, served) {
        Ok(Some(Vouched::Pending)) => {
            let served = served.expect("a pending generation was served");
            let confirmer = accepted_signer(pointer, [key, signer])?;
            vault.confirm(confirmer, served).await?;
            // What the vault now holds: the pending entry became the
            // committed one, its auth key the registered one.
            if let Some(pending) = pointer.pending.take() {
                pointer.auth_public_key = pending.auth_public_key;
                pointer.committed = Some(pending.backup);
            }
            info!(
                generation = served.generation,
                "an earlier unconfirmed commit confirmed"
            );
            Ok(Some(served.generation))
        }
        Ok(_) => Ok(None),
        // The storage lost the backup: a new chain starts, announced in
        // the vault like any other generation.
        Err(FreshnessError::Missing { committed }) => {
            warn!(
                committed,
                "the storage holds no backup although the vault records one; starting anew"
            );
            Ok(None)
        }
        Err(refused) => Err(refused.into()),
    }
}

/// The first of `candidates` the vault accepts as a signer of pointer
/// updates: the registered auth key or the pending entry's.
pub(crate) fn accepted_signer<'k>(
    pointer: &Pointer,
    candidates: [&'k RootKey; 2],
) -> Result<&'k RootKey, BackupError> {
    let pending = pointer.pending.map(|p| p.auth_public_key);
    candidates
        .into_iter()
        .find(|key| {
            let public = key.auth_public_key();
            public == pointer.auth_public_key || Some(public) == pending
        })
        .ok_or_else(|| BackupError::KeyNotRegistered {
            key_id: hex::encode(candidates[0].key_id()),
        })
}

/// Asks which pending chunks the gateway lacks and uploads those, sealed,
/// a few at a time.
async fn upload(
    gateway: &GatewayClient,
    account: &str,
    chunk_key: &DerivedKey,
    pending: &mut Vec<Chunk>,
    known: &mut HashSet<ChunkId>,
    report: &mut BackupReport,
) -> Result<(), GatewayError> {
    if pending.is_empty() {
        return Ok(());
    }
    let asked: Vec<String> = pending.iter().map(|c| c.id.to_hex()).collect();
    let present = gateway.has_chunks(&asked).await?;
    let batch: Vec<Chunk> = std::mem::take(pending)
        .into_iter()
        .filter(|c| !present.contains(&c.id.to_hex()))
        .collect();
    let sent: Vec<(ChunkId, u64, u64)> = futures::stream::iter(batch)
        .map(|chunk| async move {
            let context = names::chunk_context(account, &chunk.id);
            let sealed = seal::seal_chunk(chunk_key, &chunk.id.0, &context, &chunk.data);
            let sealed_len = sealed.len() as u64;
            gateway.put_chunk(&chunk.id.to_hex(), sealed).await?;
            Ok::<_, GatewayError>((chunk.id, chunk.data.len() as u64, sealed_len))
        })
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect()
        .await?;
    for (id, plain, sealed) in sent {
        report.uploaded_chunks += 1;
        report.uploaded_plain_bytes += plain;
        report.uploaded_bytes += sealed;
        known.insert(id);
    }
    known.extend(asked.iter().filter_map(|id| ChunkId::from_hex(id)));
    debug!(asked = asked.len(), "chunk batch uploaded");
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
