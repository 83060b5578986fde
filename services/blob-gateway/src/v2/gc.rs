//! Garbage collection: deleting what the committed generation no longer
//! references, after a commit and once at start.
//!
//! Garbage of an account is every object under `chunks/` whose id the commit
//! record does not list and every object under `manifests/` other than the
//! committed generation's manifest. It is only ever computed from a commit
//! record that is already written, under the account's commit lock, so a
//! chunk or manifest of the committed generation is never deleted: at every
//! instant the committed generation is whole.
//!
//! The rule differs in one point between the two callers:
//! - **After a commit** everything unreferenced that the pre-commit listing
//!   saw is deleted, also chunks uploaded for a racing commit from the same
//!   starting generation (that commit will be refused as a conflict anyway).
//!   A commit that follows a clean one does not list: its garbage is the
//!   previous generation's unreferenced chunks plus the uploads tracked since
//!   (see `commit` and `uploads`).
//! - **The start-up sweep** deletes only garbage written *before* the commit
//!   record, comparing the object store's own `LastModified` times (one
//!   clock, not the gateway's). Chunks written at or after the record may
//!   belong to a backup in flight — a device that uploaded before the
//!   gateway restarted and will commit next — so they are left for the next
//!   commit's GC. That leaves the leftovers of crashes before the commit point
//!   (`put-chunk:after-store`, `commit:after-manifest`) to the next commit,
//!   and sweeps those of crashes after it (`commit:after-record`,
//!   `commit:mid-gc`), whose garbage predates the record.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use account_token::AccountId;
use tracing::{info, warn};

use crate::error::ServiceError;
use crate::failpoint;
use crate::locks::CommitLocks;
use crate::store::{ObjectInfo, Store};
use crate::v2::layout;
use crate::v2::record::{self, CommitRecord};

/// What an account holds under its v2 names, from one listing.
#[derive(Debug, Default)]
pub struct Holdings {
    pub record: Option<ObjectInfo>,
    pub chunks: Vec<ObjectInfo>,
    pub manifests: Vec<ObjectInfo>,
}

/// Lists the account's prefix once and sorts the objects by kind; v1
/// objects are left out.
pub async fn holdings(store: &Store, account: &AccountId) -> Result<Holdings, ServiceError> {
    let (chunks, manifests, record_key) = (
        layout::chunks_prefix(account),
        layout::manifests_prefix(account),
        layout::record_key(account),
    );
    let mut holdings = Holdings::default();
    for object in store.list(&layout::account_prefix(account)).await? {
        if object.key.starts_with(&chunks) {
            holdings.chunks.push(object);
        } else if object.key.starts_with(&manifests) {
            holdings.manifests.push(object);
        } else if object.key == record_key {
            holdings.record = Some(object);
        }
    }
    Ok(holdings)
}

/// The keys to delete, chunks first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Garbage {
    pub keys: Vec<String>,
    pub chunks: u64,
    pub manifests: u64,
    /// Unreferenced objects kept because they are not older than `cutoff`.
    pub kept_recent: u64,
}

/// Pure: what of `holdings` the committed `record` does not reference. With
/// a `cutoff`, only objects written strictly before it count as garbage (an
/// object without a time is kept).
pub fn garbage(
    account: &AccountId,
    record: &CommitRecord,
    holdings: &Holdings,
    cutoff: Option<SystemTime>,
) -> Garbage {
    let chunks_prefix = layout::chunks_prefix(account);
    let referenced: HashSet<&str> = record.chunk_ids.iter().map(String::as_str).collect();
    let manifest = layout::manifest_key(account, record.generation);
    let old_enough = |object: &ObjectInfo| match (cutoff, object.last_modified) {
        (None, _) => true,
        (Some(cutoff), Some(written)) => written < cutoff,
        (Some(_), None) => false,
    };
    let mut garbage = Garbage::default();
    let unreferenced_chunks = holdings.chunks.iter().filter(|object| {
        let id = &object.key[chunks_prefix.len()..];
        !referenced.contains(id)
    });
    for object in unreferenced_chunks {
        if old_enough(object) {
            garbage.keys.push(object.key.clone());
            garbage.chunks += 1;
        } else {
            garbage.kept_recent += 1;
        }
    }
    for object in holdings.manifests.iter().filter(|o| o.key != manifest) {
        if old_enough(object) {
            garbage.keys.push(object.key.clone());
            garbage.manifests += 1;
        } else {
            garbage.kept_recent += 1;
        }
    }
    garbage
}

/// Deletes `keys`: the first alone (then `failpoint`, if any, fires), the
/// rest concurrently. Returns how many were deleted.
pub async fn delete(
    store: &Store,
    mut keys: Vec<String>,
    failpoint: Option<&'static str>,
) -> Result<u64, ServiceError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let rest = keys.split_off(1);
    store.delete(&keys[0]).await?;
    if let Some(name) = failpoint {
        failpoint::hit(name);
    }
    Ok(1 + store.delete_all(rest).await?)
}

/// The start-up sweep: for every account with a v2 commit record, deletes
/// the garbage written before the record (see the module docs for why not
/// the newer). Failures are logged per account; the sweep goes on.
pub async fn sweep(store: &Store, locks: &CommitLocks) {
    let started = Instant::now();
    let prefixes = match store.list_dirs("accounts/").await {
        Ok(prefixes) => prefixes,
        Err(error) => {
            warn!(%error, "orphan sweep could not list accounts; skipped until next start");
            return;
        }
    };
    let (mut accounts, mut chunks, mut manifests, mut kept) = (0u64, 0u64, 0u64, 0u64);
    for account in prefixes.iter().filter_map(|p| layout::account_of_prefix(p)) {
        match sweep_account(store, locks, &account).await {
            Ok(None) => {}
            Ok(Some(swept)) => {
                accounts += 1;
                (chunks, manifests) = (chunks + swept.chunks, manifests + swept.manifests);
                kept += swept.kept_recent;
            }
            Err(error) => {
                warn!(account = account.as_str(), %error, "orphan sweep of the account failed");
            }
        }
    }
    info!(
        accounts,
        deleted_chunks = chunks,
        deleted_manifests = manifests,
        kept_recent = kept,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "orphan sweep done"
    );
}

/// Sweeps one account under its commit lock; `None` if it has no v2 backup.
async fn sweep_account(
    store: &Store,
    locks: &CommitLocks,
    account: &AccountId,
) -> Result<Option<Garbage>, ServiceError> {
    let _guard = locks.lock(account).await;
    let Some(record) = record::read(store, account).await? else {
        return Ok(None);
    };
    let holdings = holdings(store, account).await?;
    let Some(cutoff) = holdings.record.as_ref().and_then(|r| r.last_modified) else {
        warn!(
            account = account.as_str(),
            "commit record has no modification time; orphans left for the next commit"
        );
        return Ok(None);
    };
    let mut garbage = garbage(account, &record, &holdings, Some(cutoff));
    let keys = std::mem::take(&mut garbage.keys);
    delete(store, keys, None).await?;
    if garbage.chunks + garbage.manifests + garbage.kept_recent > 0 {
        info!(
            account = account.as_str(),
            generation = record.generation,
            deleted_chunks = garbage.chunks,
            deleted_manifests = garbage.manifests,
            kept_recent = garbage.kept_recent,
            "orphans swept"
        );
    }
    Ok(Some(garbage))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    fn object(key: String, age_secs: u64) -> ObjectInfo {
        ObjectInfo {
            key,
            size: 1,
            last_modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age_secs)),
        }
    }

    fn chunk(digit: char, age_secs: u64) -> ObjectInfo {
        let id = layout::ChunkId::parse(&digit.to_string().repeat(64)).unwrap();
        object(layout::chunk_key(&alice(), &id), age_secs)
    }

    fn record(generation: u64, ids: &[char]) -> CommitRecord {
        CommitRecord {
            generation,
            committed_at: 0,
            manifest_size: 1,
            stored_bytes: 1,
            chunk_ids: ids.iter().map(|d| d.to_string().repeat(64)).collect(),
            chunk_sizes: Vec::new(),
            clean: false,
        }
    }

    fn holdings() -> Holdings {
        Holdings {
            record: Some(object(layout::record_key(&alice()), 10)),
            chunks: vec![chunk('a', 100), chunk('b', 100), chunk('c', 5)],
            manifests: vec![
                object(layout::manifest_key(&alice(), 1), 100),
                object(layout::manifest_key(&alice(), 2), 10),
                object(layout::manifest_key(&alice(), 3), 5),
            ],
        }
    }

    #[test]
    fn after_a_commit_everything_unreferenced_is_garbage() {
        let found = garbage(&alice(), &record(2, &['a']), &holdings(), None);
        assert_eq!(
            found.keys,
            [
                chunk('b', 0).key,
                chunk('c', 0).key,
                layout::manifest_key(&alice(), 1),
                layout::manifest_key(&alice(), 3),
            ]
        );
        assert_eq!(
            (found.chunks, found.manifests, found.kept_recent),
            (2, 2, 0)
        );
    }

    #[test]
    fn the_sweep_keeps_what_is_not_older_than_the_record() {
        let cutoff = holdings().record.unwrap().last_modified;
        let found = garbage(&alice(), &record(2, &['a']), &holdings(), cutoff);
        assert_eq!(
            found.keys,
            [chunk('b', 0).key, layout::manifest_key(&alice(), 1)]
        );
        assert_eq!(
            (found.chunks, found.manifests, found.kept_recent),
            (1, 1, 2)
        );
    }

    #[test]
    fn referenced_chunks_and_the_committed_manifest_are_never_garbage() {
        let found = garbage(&alice(), &record(2, &['a', 'b', 'c']), &holdings(), None);
        assert!(!found.keys.iter().any(|k| k.contains("/chunks/")));
        assert!(!found.keys.contains(&layout::manifest_key(&alice(), 2)));
    }
}
