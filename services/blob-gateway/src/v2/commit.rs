//! Commit: make a new generation the account's one committed generation.
//!
//! Under the account's commit lock:
//! 1. refuse unless `expected_generation` is the committed one (0: none);
//! 2. list the account once; refuse if a referenced chunk is missing, or if
//!    the referenced chunks plus the manifest exceed the account's quota;
//!    nothing is written when refused;
//! 3. PUT the manifest (`commit:after-manifest`), then the commit record —
//!    the commit point (`commit:after-record`);
//! 4. delete the garbage the listing showed (`commit:mid-gc` after the first
//!    delete), see [`gc`].
//!
//! A crash before 3's record PUT leaves the old generation committed and
//! whole; after it, the new one. A retried commit whose answer was lost
//! (the committed generation is `expected + 1` and holds the very same
//! sealed manifest) succeeds again and finishes the clean-up.

use std::collections::HashMap;

use account_token::AccountId;
use e2eb_proto::storage::v2::CommitRequest;
use tracing::{info, warn};

use crate::config::Limits;
use crate::error::ServiceError;
use crate::failpoint;
use crate::locks::CommitLocks;
use crate::store::Store;
use crate::v2::gc::{self, Holdings};
use crate::v2::layout::{self, ChunkId};
use crate::v2::record::{self, CommitRecord};

/// How many missing ids a refusal names.
const MISSING_SAMPLE: usize = 10;

#[derive(Debug, PartialEq, Eq)]
pub struct Committed {
    pub generation: u64,
    pub deleted_chunks: u64,
    pub stored_bytes: u64,
}

pub async fn commit(
    store: &Store,
    limits: &Limits,
    locks: &CommitLocks,
    account: &AccountId,
    request: CommitRequest,
) -> Result<Committed, ServiceError> {
    let manifest_size = request.manifest.len() as u64;
    if request.manifest.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "the commit carries no manifest".into(),
        ));
    }
    if manifest_size > limits.max_manifest_bytes {
        return Err(ServiceError::ManifestTooLarge {
            size: manifest_size,
            limit: limits.max_manifest_bytes,
        });
    }
    if request.chunk_ids.len() > limits.max_commit_chunks {
        return Err(ServiceError::TooManyIds {
            count: request.chunk_ids.len(),
            limit: limits.max_commit_chunks,
        });
    }
    let expected = request.expected_generation;
    let generation = expected
        .checked_add(1)
        .ok_or_else(|| ServiceError::InvalidArgument("expected generation is too large".into()))?;
    let ids = layout::parse_ids(&request.chunk_ids)?;

    let _guard = locks.lock(account).await;
    let current = record::read(store, account).await?;
    let committed = current.as_ref().map_or(0, |r| r.generation);
    if committed != expected {
        if let Some(current) = current
            && is_lost_answer_retry(store, account, &current, generation, &request.manifest).await?
        {
            info!(
                generation,
                "commit retried after a lost answer; already committed"
            );
            let deleted_chunks = collect(store, account, &current).await;
            return Ok(Committed {
                generation,
                deleted_chunks,
                stored_bytes: current.stored_bytes,
            });
        }
        return Err(ServiceError::GenerationConflict {
            expected,
            committed,
        });
    }

    let holdings = gc::holdings(store, account).await?;
    let chunk_bytes = referenced_bytes(account, &holdings, &ids)?;
    let stored_bytes = chunk_bytes.saturating_add(manifest_size);
    if stored_bytes > limits.quota_bytes {
        return Err(ServiceError::QuotaExceeded {
            needed: stored_bytes,
            quota: limits.quota_bytes,
        });
    }

    store
        .put_small(&layout::manifest_key(account, generation), request.manifest)
        .await?;
    failpoint::hit("commit:after-manifest");
    let record = CommitRecord {
        generation,
        committed_at: record::unix_now(),
        manifest_size,
        stored_bytes,
        chunk_ids: ids.into_iter().map(|id| id.as_str().to_owned()).collect(),
    };
    record::write(store, account, &record).await?;
    failpoint::hit("commit:after-record");

    // Committed. Everything the listing showed that the new generation does
    // not reference is garbage now; chunks uploaded since the listing are
    // left for the next commit.
    let garbage = gc::garbage(account, &record, &holdings, None);
    let deleted_chunks = match gc::delete(store, garbage.keys, Some("commit:mid-gc")).await {
        Ok(_) => garbage.chunks,
        Err(error) => {
            warn!(%error, generation, "garbage collection after the commit failed; the next commit or start retries it");
            0
        }
    };
    Ok(Committed {
        generation,
        deleted_chunks,
        stored_bytes,
    })
}

/// Sums the sizes of the referenced chunks, or refuses naming (some of) the
/// missing ones.
fn referenced_bytes(
    account: &AccountId,
    holdings: &Holdings,
    ids: &[ChunkId],
) -> Result<u64, ServiceError> {
    let prefix = layout::chunks_prefix(account);
    let sizes: HashMap<&str, u64> = holdings
        .chunks
        .iter()
        .map(|object| (&object.key[prefix.len()..], object.size))
        .collect();
    let mut total = 0u64;
    let mut missing = Vec::new();
    for id in ids {
        match sizes.get(id.as_str()) {
            Some(size) => total = total.saturating_add(*size),
            None => missing.push(id),
        }
    }
    if missing.is_empty() {
        return Ok(total);
    }
    Err(ServiceError::MissingChunks {
        count: missing.len(),
        sample: missing
            .iter()
            .take(MISSING_SAMPLE)
            .map(|id| id.to_string())
            .collect(),
    })
}

/// Whether the committed generation is the one this request would have
/// made: a client that retries after losing the answer. Sealed manifests
/// carry a random nonce, so equal bytes mean the same commit.
async fn is_lost_answer_retry(
    store: &Store,
    account: &AccountId,
    current: &CommitRecord,
    generation: u64,
    manifest: &[u8],
) -> Result<bool, ServiceError> {
    if current.generation != generation || current.manifest_size != manifest.len() as u64 {
        return Ok(false);
    }
    let stored = store
        .get_small(&layout::manifest_key(account, generation))
        .await?;
    Ok(stored.is_some_and(|stored| stored[..] == *manifest))
}

/// Garbage collection for a generation that is already committed (a retried
/// commit that may have crashed mid-clean-up), with the sweep's rule: only
/// garbage older than the record, as other devices may have started
/// uploading for the next generation since. Failures are only logged.
async fn collect(store: &Store, account: &AccountId, current: &CommitRecord) -> u64 {
    let result = async {
        let holdings = gc::holdings(store, account).await?;
        let Some(cutoff) = holdings.record.as_ref().and_then(|r| r.last_modified) else {
            return Ok(0);
        };
        let garbage = gc::garbage(account, current, &holdings, Some(cutoff));
        gc::delete(store, garbage.keys, None).await?;
        Ok::<_, ServiceError>(garbage.chunks)
    };
    match result.await {
        Ok(deleted) => deleted,
        Err(error) => {
            warn!(%error, generation = current.generation, "garbage collection of a retried commit failed");
            0
        }
    }
}
