//! The commit record: the one object that says which generation of an
//! account is committed. It is written by one conditional PUT
//! (`If-None-Match: *` for the first generation, `If-Match: <etag read>`
//! after), so of two gateways committing at once exactly one wins.

use std::time::{SystemTime, UNIX_EPOCH};

use account_token::AccountId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::objects::{Condition, ObjectStore, StoreError};
use crate::v3::layout;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub generation: u64,
    /// Unix seconds, by the gateway's clock.
    pub committed_at: i64,
    /// The key of the generation's sealed manifest.
    pub manifest_key: String,
    pub manifest_size: u64,
    /// The packs the generation references, sorted by name.
    pub packs: Vec<PackEntry>,
    /// Packs + manifest, in bytes.
    pub stored_bytes: u64,
}

impl CommitRecord {
    pub fn references(&self, name: &str) -> bool {
        self.packs
            .binary_search_by(|entry| entry.name.as_str().cmp(name))
            .is_ok()
    }
}

/// The committed record and the version tag the next commit must match.
#[derive(Debug, Clone)]
pub struct Current {
    pub record: CommitRecord,
    pub etag: String,
}

/// The account's commit record, or `None` when it has no v3 backup.
pub async fn read(
    store: &dyn ObjectStore,
    account: &AccountId,
) -> Result<Option<Current>, StoreError> {
    let Some(object) = store.get(&layout::record_key(account)).await? else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&object.bytes)
        .map_err(|e| StoreError::Other(format!("unreadable v3 commit record of {account}: {e}")))?;
    Ok(Some(Current {
        record,
        etag: object.etag,
    }))
}

/// Writes the record on top of `previous` (none: the first generation):
/// the commit point. A lost condition is `PreconditionFailed` (or
/// `NotFound`: the record was deleted since).
pub async fn write(
    store: &dyn ObjectStore,
    account: &AccountId,
    record: &CommitRecord,
    previous: Option<&Current>,
) -> Result<String, StoreError> {
    let bytes = serde_json::to_vec(record).expect("a commit record serialises");
    let condition = match previous {
        None => Condition::IfNoneMatch,
        Some(current) => Condition::IfMatch(current.etag.clone()),
    };
    store
        .put(&layout::record_key(account), Bytes::from(bytes), condition)
        .await
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
