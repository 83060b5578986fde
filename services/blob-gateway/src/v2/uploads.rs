//! Which chunks each account uploaded since its last commit, as far as this
//! process saw. With it a commit knows, without listing the account, every
//! chunk that could have become garbage: the previous generation's and
//! these. An account is tracked only from its first commit in this process
//! on (before that, uploads from an earlier run are unknown and the commit
//! lists the account instead).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use account_token::AccountId;

#[derive(Default)]
pub struct Uploads(Mutex<HashMap<AccountId, HashSet<String>>>);

impl Uploads {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, HashSet<String>>> {
        self.0
            .lock()
            .expect("the upload tracker's lock is never poisoned")
    }

    /// Notes a stored chunk, if the account is tracked.
    pub fn record(&self, account: &AccountId, id: &str) {
        if let Some(ids) = self.map().get_mut(account) {
            ids.insert(id.to_owned());
        }
    }

    /// The chunks uploaded since the last commit, or `None` if unknown.
    pub fn snapshot(&self, account: &AccountId) -> Option<HashSet<String>> {
        self.map().get(account).cloned()
    }

    /// After a commit that cleaned up `handled` (or everything, when the
    /// account was listed: `None`): tracking goes on with what is left.
    pub fn committed(&self, account: &AccountId, handled: Option<&HashSet<String>>) {
        let mut map = self.map();
        let ids = map.entry(account.clone()).or_default();
        match handled {
            Some(handled) => ids.retain(|id| !handled.contains(id)),
            None => ids.clear(),
        }
    }

    /// The account's data is gone; nothing is known about it any more.
    pub fn forget(&self, account: &AccountId) {
        self.map().remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_tracked_from_its_first_commit_on() {
        let uploads = Uploads::default();
        let alice = AccountId::new("alice").unwrap();
        uploads.record(&alice, "a");
        assert_eq!(uploads.snapshot(&alice), None);
        uploads.committed(&alice, None);
        uploads.record(&alice, "b");
        uploads.record(&alice, "c");
        let seen = uploads.snapshot(&alice).unwrap();
        assert_eq!(seen.len(), 2);
        uploads.record(&alice, "d");
        uploads.committed(&alice, Some(&seen));
        assert_eq!(
            uploads.snapshot(&alice).unwrap(),
            HashSet::from(["d".to_owned()])
        );
        uploads.forget(&alice);
        assert_eq!(uploads.snapshot(&alice), None);
    }
}
