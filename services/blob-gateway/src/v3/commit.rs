//! Commit: make a new generation the account's one committed generation.
//!
//! 1. refuse a malformed request (manifest empty, not a Padme length or over
//!    its limit; a bad or repeated pack name; too many packs);
//! 2. refuse unless `expected` is the committed generation (0: none) —
//!    `generation-conflict` — or a referenced pack is missing —
//!    `missing-packs` — or the new generation would exceed the quota;
//!    nothing is written when refused;
//! 3. PUT the manifest under a key of its own (`commit:after-manifest`);
//! 4. PUT the commit record with `If-None-Match: *` (first generation) or
//!    `If-Match: <etag read in 2>` — the commit point; a lost condition means
//!    another gateway committed first: a generation conflict
//!    (`commit:after-record` once it is written);
//! 5. delete the replaced generation's packs the new one does not reference,
//!    its manifest, and the packs the client abandoned (`commit:mid-gc`
//!    after the first delete). Failures here are logged; the sweep finishes.
//!
//! A crash before 4 leaves the old generation committed and whole; after it,
//! the new one. A retry of a commit whose answer was lost (the committed
//! generation is `expected + 1` with the very same manifest) succeeds.

use std::collections::{HashMap, HashSet};

use account_token::AccountId;
use bytes::Bytes;
use tracing::{info, warn};

use crate::failpoint;
use crate::objects::{Condition, StoreError};
use crate::v3::Core;
use crate::v3::error::V3Error;
use crate::v3::layout::{self, PackName};
use crate::v3::record::{self, CommitRecord, Current, PackEntry};

/// How many missing names a refusal shows.
const MISSING_SAMPLE: usize = 10;

#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub expected: u64,
    pub manifest: Bytes,
    pub packs: Vec<String>,
    pub abandoned: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Committed {
    pub generation: u64,
    pub deleted_packs: u64,
    pub stored_bytes: u64,
}

fn parse_names(names: &[String], what: &str) -> Result<Vec<PackName>, V3Error> {
    let mut seen = HashSet::new();
    names
        .iter()
        .map(|name| {
            let name = PackName::parse(name)?;
            if !seen.insert(name.clone()) {
                return Err(V3Error::Malformed(format!(
                    "pack {name} appears twice in the commit's {what}"
                )));
            }
            Ok(name)
        })
        .collect()
}

fn validate(
    core: &Core,
    request: &CommitRequest,
) -> Result<(u64, Vec<PackName>, Vec<PackName>), V3Error> {
    let size = request.manifest.len() as u64;
    if size == 0 {
        return Err(V3Error::Malformed("the commit carries no manifest".into()));
    }
    if size > core.limits.max_manifest_bytes {
        return Err(V3Error::ManifestTooLarge {
            size,
            limit: core.limits.max_manifest_bytes,
        });
    }
    if !padme::is_padded(size) {
        return Err(V3Error::NotPadded {
            what: "manifest",
            size,
        });
    }
    if request.packs.len() > core.limits.max_commit_packs {
        return Err(V3Error::TooManyPacks {
            count: request.packs.len(),
            limit: core.limits.max_commit_packs,
        });
    }
    let generation = request
        .expected
        .checked_add(1)
        .ok_or_else(|| V3Error::Malformed("expected generation is too large".into()))?;
    let packs = parse_names(&request.packs, "packs")?;
    let abandoned = parse_names(&request.abandoned, "abandoned packs")?;
    Ok((generation, packs, abandoned))
}

pub async fn commit(
    core: &Core,
    account: &AccountId,
    request: CommitRequest,
) -> Result<Committed, V3Error> {
    let (generation, packs, abandoned) = validate(core, &request)?;
    let store = core.store.as_ref();
    let _guard = core.order.lock(account).await;
    let current = record::read(store, account).await?;
    let committed = current.as_ref().map_or(0, |c| c.record.generation);
    let manifest_key = layout::manifest_key(account, generation, &request.manifest);
    if committed != request.expected {
        if let Some(current) = &current
            && current.record.generation == generation
            && current.record.manifest_key == manifest_key
        {
            info!(
                generation,
                "commit retried after a lost answer; already committed"
            );
            return Ok(Committed {
                generation,
                deleted_packs: 0,
                stored_bytes: current.record.stored_bytes,
            });
        }
        return Err(V3Error::GenerationConflict {
            expected: request.expected,
            committed,
        });
    }

    let entries = sizes(core, account, &packs).await?;
    let manifest_size = request.manifest.len() as u64;
    let stored_bytes = entries.iter().fold(manifest_size, |total, entry| {
        total.saturating_add(entry.size)
    });
    if stored_bytes > core.limits.quota_bytes {
        return Err(V3Error::QuotaExceeded {
            needed: stored_bytes,
            quota: core.limits.quota_bytes,
        });
    }

    store
        .put(&manifest_key, request.manifest.clone(), Condition::None)
        .await?;
    failpoint::hit("commit:after-manifest");
    let record = CommitRecord {
        generation,
        committed_at: record::unix_now(),
        manifest_key: manifest_key.clone(),
        manifest_size,
        packs: entries,
        stored_bytes,
    };
    if let Err(error) = record::write(store, account, &record, current.as_ref()).await {
        return Err(lost(core, account, request.expected, &manifest_key, error).await);
    }
    failpoint::hit("commit:after-record");

    let deleted_packs = collect(core, account, current.as_ref(), &record, &abandoned).await;
    Ok(Committed {
        generation,
        deleted_packs,
        stored_bytes,
    })
}

/// The size of each referenced pack from one listing, sorted by name, or a
/// refusal naming (some of) the missing ones.
async fn sizes(
    core: &Core,
    account: &AccountId,
    packs: &[PackName],
) -> Result<Vec<PackEntry>, V3Error> {
    let prefix = layout::packs_prefix(account);
    let held: HashMap<String, u64> = core
        .store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|object| (object.key[prefix.len()..].to_string(), object.size))
        .collect();
    let missing: Vec<String> = packs
        .iter()
        .filter(|name| !held.contains_key(name.as_str()))
        .map(PackName::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(V3Error::MissingPacks {
            count: missing.len(),
            sample: missing.into_iter().take(MISSING_SAMPLE).collect(),
        });
    }
    let mut entries: Vec<PackEntry> = packs
        .iter()
        .map(|name| PackEntry {
            name: name.to_string(),
            size: held[name.as_str()],
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The error for a record write that failed: a lost condition is a
/// generation conflict (our manifest is dropped unless the winner's is the
/// same object); anything else is the storage failure.
async fn lost(
    core: &Core,
    account: &AccountId,
    expected: u64,
    manifest_key: &str,
    error: StoreError,
) -> V3Error {
    if !matches!(error, StoreError::PreconditionFailed | StoreError::NotFound) {
        return error.into();
    }
    let winner = record::read(core.store.as_ref(), account)
        .await
        .ok()
        .flatten();
    if winner
        .as_ref()
        .is_none_or(|w| w.record.manifest_key != manifest_key)
    {
        let _ = core.store.delete_many(vec![manifest_key.to_string()]).await;
    }
    let committed = winner.map_or(0, |w| w.record.generation);
    info!(
        expected,
        committed, "commit lost the conditional write to another gateway"
    );
    V3Error::GenerationConflict {
        expected,
        committed,
    }
}

/// Deletes what the new generation made garbage; returns the packs deleted.
async fn collect(
    core: &Core,
    account: &AccountId,
    previous: Option<&Current>,
    record: &CommitRecord,
    abandoned: &[PackName],
) -> u64 {
    let mut packs: Vec<String> = previous
        .into_iter()
        .flat_map(|p| p.record.packs.iter().map(|entry| entry.name.clone()))
        .chain(abandoned.iter().map(PackName::to_string))
        .filter(|name| !record.references(name))
        .collect();
    packs.sort();
    packs.dedup();
    let count = packs.len() as u64;
    let mut keys: Vec<String> = packs
        .iter()
        .map(|name| format!("{}{name}", layout::packs_prefix(account)))
        .collect();
    if let Some(previous) = previous
        && previous.record.manifest_key != record.manifest_key
    {
        keys.push(previous.record.manifest_key.clone());
    }
    if keys.is_empty() {
        return 0;
    }
    let rest = keys.split_off(1);
    let result = async {
        core.store.delete_many(keys).await?;
        failpoint::hit("commit:mid-gc");
        core.store.delete_many(rest).await
    };
    match result.await {
        Ok(_) => count,
        Err(error) => {
            warn!(%error, generation = record.generation, "deleting the replaced generation failed; the sweep will");
            0
        }
    }
}
