//! Where per-account commit order comes from. With an object store that
//! honours conditional writes, from the commit record's `If-None-Match` /
//! `If-Match` alone, so any number of gateways may share the store. A store
//! that ignores them (Garage 2.5 does, silently) is found by [`probe`] at
//! start; then order comes from process-local locks, which is correct for a
//! single gateway only.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use account_token::AccountId;
use bytes::Bytes;
use tokio::sync::MutexGuard;

use crate::locks::CommitLocks;
use crate::objects::{Condition, ObjectStore, StoreError};

/// Where the probe writes; outside `v3/` and `accounts/`, so no sweep and
/// no listing of accounts ever sees it.
const PROBE_PREFIX: &str = "gateway-probe/";

/// Per-account commit order. Until the probe has answered, and for good
/// when the store ignores conditions, commits, deletes and sweeps of one
/// account also take a process-local lock.
pub struct CommitOrder {
    /// `true` once the probe found that the store honours conditions.
    conditional: OnceLock<bool>,
    locks: CommitLocks,
}

impl CommitOrder {
    /// Order not known yet: locks until [`CommitOrder::set_conditional`].
    pub fn unprobed() -> Self {
        Self {
            conditional: OnceLock::new(),
            locks: CommitLocks::default(),
        }
    }

    /// Order from conditional writes alone.
    pub fn conditional() -> Self {
        let order = Self::unprobed();
        order.set_conditional(true);
        order
    }

    /// Order from process-local locks (a store that ignores conditions).
    pub fn local_locks() -> Self {
        let order = Self::unprobed();
        order.set_conditional(false);
        order
    }

    /// Records the probe's answer; only the first call counts.
    pub fn set_conditional(&self, conditional: bool) {
        let _ = self.conditional.set(conditional);
    }

    /// The account's lock unless order comes from conditional writes.
    pub async fn lock<'a>(&'a self, account: &AccountId) -> Option<MutexGuard<'a, ()>> {
        if self.is_conditional() {
            None
        } else {
            Some(self.locks.lock(account).await)
        }
    }

    pub fn is_conditional(&self) -> bool {
        self.conditional.get() == Some(&true)
    }
}

/// Writes a probe object twice with `If-None-Match: *` and once with a
/// wrong `If-Match`: `true` when the store refused both conditional
/// overwrites (it honours conditions), `false` when either succeeded.
pub async fn probe(store: &dyn ObjectStore) -> Result<bool, StoreError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!(
        "{PROBE_PREFIX}{nanos:x}-{:x}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let body = || Bytes::from_static(b"probe");
    store.put(&key, body(), Condition::IfNoneMatch).await?;
    let second = store.put(&key, body(), Condition::IfNoneMatch).await;
    let wrong = store
        .put(&key, body(), Condition::IfMatch("\"not-the-etag\"".into()))
        .await;
    let _ = store.delete_many(vec![key]).await;
    let refused =
        |result: &Result<String, StoreError>| matches!(result, Err(StoreError::PreconditionFailed));
    match (&second, &wrong) {
        (Err(e), _) | (_, Err(e)) if !matches!(e, StoreError::PreconditionFailed) => Err(
            StoreError::Other(format!("the conditional-write probe failed: {e}")),
        ),
        _ => Ok(refused(&second) && refused(&wrong)),
    }
}

/// Probes the store and tells whether commits may rely on conditional
/// writes, logging loudly (once) when the store ignores them.
pub async fn choose(store: &dyn ObjectStore) -> Result<bool, StoreError> {
    if probe(store).await? {
        tracing::info!(
            "object storage honours conditional writes: commits are ordered by the commit record's If-Match / If-None-Match; several gateways may share this store"
        );
        return Ok(true);
    }
    tracing::warn!(
        "OBJECT STORAGE IGNORES CONDITIONAL WRITES (a second If-None-Match: * PUT or a wrong If-Match PUT succeeded). \
         Commits are ordered by process-local locks instead: run exactly ONE gateway against this store, \
         or two gateways may both commit for one account and lose a generation. \
         Ordering through etcd for several gateways is not built yet."
    );
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::memory::{Faults, MemoryStore};

    #[tokio::test]
    async fn the_probe_tells_honouring_from_ignoring_stores() {
        let honest = MemoryStore::new();
        assert!(probe(&honest).await.unwrap());
        assert!(choose(&honest).await.unwrap());
        assert!(honest.keys().is_empty(), "the probe cleans up");

        let lax = MemoryStore::with_faults(Faults {
            ignore_conditions: true,
        });
        assert!(!probe(&lax).await.unwrap());
        assert!(!choose(&lax).await.unwrap());
    }

    #[tokio::test]
    async fn a_failing_store_fails_the_probe() {
        let store = MemoryStore::new();
        store.fail_after(1);
        assert!(probe(&store).await.is_err());
    }
}
