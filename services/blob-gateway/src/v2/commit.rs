//! Commit: make a new generation the account's one committed generation.
//!
//! Under the account's commit lock:
//! 1. refuse unless `expected_generation` is the committed one (0: none);
//! 2. find every referenced chunk's size — from the previous record plus one
//!    HEAD per new chunk when the previous commit's clean-up finished (the
//!    usual case: the cost follows what changed, not the account's size),
//!    otherwise from one listing of the account (and on every 16th
//!    generation, so orphans of abandoned uploads do not outlive it); refuse
//!    if a referenced chunk is missing, or if the referenced chunks plus the
//!    manifest exceed the account's quota; nothing is written when refused;
//! 3. PUT the manifest (`commit:after-manifest`), then the commit record —
//!    the commit point (`commit:after-record`);
//! 4. delete the garbage: the previous generation's chunks the new one does
//!    not use and its manifest, or everything unreferenced the listing showed
//!    (`commit:mid-gc` after the first delete, see [`gc`]); then mark the
//!    record clean.
//!
//! A crash before 3's record PUT leaves the old generation committed and
//! whole; after it, the new one. A retried commit whose answer was lost
//! (the committed generation is `expected + 1` and holds the very same
//! sealed manifest) succeeds again and finishes the clean-up.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use account_token::AccountId;
use e2eb_proto::storage::v2::CommitRequest;
use tracing::{info, warn};

use crate::config::Limits;
use crate::error::ServiceError;
use crate::failpoint;
use crate::locks::CommitLocks;
use crate::store::Store;
use crate::v2::gc::{self, Garbage, Holdings};
use crate::v2::layout::{self, ChunkId};
use crate::v2::record::{self, CommitRecord};
use crate::v2::uploads::Uploads;

/// How many missing ids a refusal names.
const MISSING_SAMPLE: usize = 10;
/// Every this many generations a commit lists the account even when the
/// previous one was clean, which bounds how long orphans can stay.
const LIST_EVERY: u64 = 16;
/// HEAD requests in flight when checking new chunks.
const HEAD_CONCURRENCY: usize = 16;

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
    uploads: &Uploads,
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

    let uploaded = uploads.snapshot(account);
    let from_record = current
        .as_ref()
        .filter(|previous| previous.clean && generation % LIST_EVERY != 0 && uploaded.is_some())
        .and_then(|previous| previous.sizes());
    let (chunk_sizes, holdings) = match from_record {
        Some(known) => (sizes_from_record(store, account, &known, &ids).await?, None),
        None => {
            let holdings = gc::holdings(store, account).await?;
            (
                sizes_from_listing(account, &holdings, &ids)?,
                Some(holdings),
            )
        }
    };
    let stored_bytes = chunk_sizes
        .iter()
        .fold(manifest_size, |total, size| total.saturating_add(*size));
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
    let mut record = CommitRecord {
        generation,
        committed_at: record::unix_now(),
        manifest_size,
        stored_bytes,
        chunk_ids: ids.into_iter().map(|id| id.as_str().to_owned()).collect(),
        chunk_sizes,
        clean: false,
    };
    record::write(store, account, &record).await?;
    failpoint::hit("commit:after-record");

    // Committed. What the new generation does not reference is garbage now:
    // from the listing, everything unreferenced it showed (chunks uploaded
    // since are left for the next commit); from a clean previous record, its
    // chunks that left and its manifest.
    let garbage = match &holdings {
        Some(holdings) => gc::garbage(account, &record, holdings, None),
        None => replaced(
            account,
            current.as_ref().expect("checked above"),
            uploaded.as_ref().expect("checked above"),
            &record,
        ),
    };
    let deleted_chunks = match gc::delete(store, garbage.keys, Some("commit:mid-gc")).await {
        Ok(_) => {
            uploads.committed(account, uploaded.as_ref());
            record.clean = true;
            if let Err(error) = record::write(store, account, &record).await {
                warn!(%error, generation, "could not mark the commit clean; the next commit lists the account");
            }
            garbage.chunks
        }
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

/// The size of each referenced chunk from one listing, or a refusal naming
/// (some of) the missing ones.
fn sizes_from_listing(
    account: &AccountId,
    holdings: &Holdings,
    ids: &[ChunkId],
) -> Result<Vec<u64>, ServiceError> {
    let prefix = layout::chunks_prefix(account);
    let sizes: HashMap<&str, u64> = holdings
        .chunks
        .iter()
        .map(|object| (&object.key[prefix.len()..], object.size))
        .collect();
    let found: Vec<Option<u64>> = ids
        .iter()
        .map(|id| sizes.get(id.as_str()).copied())
        .collect();
    all_present(ids, found)
}

/// The size of each referenced chunk: known ones from the previous record,
/// new ones by HEAD.
async fn sizes_from_record(
    store: &Store,
    account: &AccountId,
    known: &HashMap<&str, u64>,
    ids: &[ChunkId],
) -> Result<Vec<u64>, ServiceError> {
    // Owned lookups, so the futures borrow nothing from the iteration.
    let lookups: Vec<Result<u64, String>> = ids
        .iter()
        .map(|id| match known.get(id.as_str()) {
            Some(size) => Ok(*size),
            None => Err(layout::chunk_key(account, id)),
        })
        .collect();
    let found: Vec<Option<u64>> = futures::stream::iter(lookups)
        .map(|lookup| async move {
            match lookup {
                Ok(size) => Ok(Some(size)),
                Err(key) => store.head(&key).await,
            }
        })
        .buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    all_present(ids, found)
}

fn all_present(ids: &[ChunkId], found: Vec<Option<u64>>) -> Result<Vec<u64>, ServiceError> {
    let missing: Vec<&ChunkId> = ids
        .iter()
        .zip(&found)
        .filter(|(_, size)| size.is_none())
        .map(|(id, _)| id)
        .collect();
    if missing.is_empty() {
        return Ok(found
            .into_iter()
            .map(|size| size.expect("none missing"))
            .collect());
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

/// The garbage a commit leaves when the previous generation was clean: the
/// chunks of the previous generation and those uploaded since that the new
/// generation does not reference, and the previous manifest.
fn replaced(
    account: &AccountId,
    previous: &CommitRecord,
    uploaded: &HashSet<String>,
    record: &CommitRecord,
) -> Garbage {
    let kept: HashSet<&str> = record.chunk_ids.iter().map(String::as_str).collect();
    let candidates: HashSet<&str> = previous
        .chunk_ids
        .iter()
        .chain(uploaded)
        .map(String::as_str)
        .collect();
    let mut garbage = Garbage::default();
    for id in candidates.into_iter().filter(|id| !kept.contains(id)) {
        let id = ChunkId::parse(id).expect("a committed record holds valid ids");
        garbage.keys.push(layout::chunk_key(account, &id));
        garbage.chunks += 1;
    }
    if previous.generation != record.generation {
        garbage
            .keys
            .push(layout::manifest_key(account, previous.generation));
        garbage.manifests += 1;
    }
    garbage
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
