//! The commit record: the one object that says which generation of an
//! account is committed. It is written by a single PUT, which S3 makes
//! atomic, so a reader sees the old record or the new one, never a mix;
//! writing it is the commit point.

use std::time::{SystemTime, UNIX_EPOCH};

use account_token::AccountId;
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::store::{Store, StoreError};
use crate::v2::layout;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub generation: u64,
    /// Unix seconds, by the gateway's clock.
    pub committed_at: i64,
    pub manifest_size: u64,
    /// Chunks + manifest, in sealed bytes.
    pub stored_bytes: u64,
    /// Every chunk the generation references, each once.
    pub chunk_ids: Vec<String>,
    /// Sealed size of each chunk in `chunk_ids`, in the same order.
    #[serde(default)]
    pub chunk_sizes: Vec<u64>,
    /// Whether the clean-up after this commit finished: then the account
    /// holds exactly this generation plus chunks uploaded since, and the
    /// next commit can work from this record instead of listing.
    #[serde(default)]
    pub clean: bool,
}

impl CommitRecord {
    /// The chunk sizes by id, when the record has them.
    pub fn sizes(&self) -> Option<std::collections::HashMap<&str, u64>> {
        (self.chunk_sizes.len() == self.chunk_ids.len()).then(|| {
            self.chunk_ids
                .iter()
                .map(String::as_str)
                .zip(self.chunk_sizes.iter().copied())
                .collect()
        })
    }
}

/// The account's commit record, or `None` when it has no v2 backup.
pub async fn read(
    store: &Store,
    account: &AccountId,
) -> Result<Option<CommitRecord>, ServiceError> {
    let Some(bytes) = store.get_small(&layout::record_key(account)).await? else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Other(format!("unreadable v2 commit record: {e}")))?;
    Ok(Some(record))
}

/// Writes the record in one PUT: the commit point.
pub async fn write(
    store: &Store,
    account: &AccountId,
    record: &CommitRecord,
) -> Result<(), ServiceError> {
    let bytes = serde_json::to_vec(record).expect("a commit record serialises");
    store.put_small(&layout::record_key(account), bytes).await?;
    Ok(())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
