//! Per-account commit locks, shared by the v1 and v2 services so a commit,
//! a delete and the start-up sweep of one account never interleave. The
//! locks are striped: accounts that hash alike share one, which costs only
//! a little waiting.

use account_token::AccountId;
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 64;

pub struct CommitLocks(Vec<Mutex<()>>);

impl Default for CommitLocks {
    fn default() -> Self {
        Self((0..STRIPES).map(|_| Mutex::new(())).collect())
    }
}

impl CommitLocks {
    /// Waits for `account`'s lock.
    pub async fn lock(&self, account: &AccountId) -> MutexGuard<'_, ()> {
        let hash = account
            .as_str()
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.0[hash % STRIPES].lock().await
    }
}
