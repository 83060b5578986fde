//! One read-write lock per object path: what makes conditional writes atomic.
//!
//! `s3s-fs` checks `If-Match` / `If-None-Match` and then writes, with awaits in between,
//! so two requests can both pass the check and both write. Here every request that
//! changes an object holds that object's write lock while it checks the condition and
//! makes the new version visible; GET and HEAD hold the read lock while they open the
//! body and read the ETag beside it, so they never pair one version's body with
//! another's ETag. The locks live in this process: one `local-s3` serves a data
//! directory at a time.
//!
//! Locks are keyed by the object's path, so two spellings of one file (`a//b`, `a/./b`)
//! share a lock (`Path` compares and hashes by components). An entry lives while a
//! request holds or waits for it; dead entries are swept as the table grows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// Entries kept before the first sweep of dead ones.
const FIRST_SWEEP: usize = 1024;

/// The per-object locks of one data directory.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    locks: HashMap<PathBuf, Weak<RwLock<()>>>,
    /// Live entries after the last sweep; the next sweep runs at twice as many.
    live_after_sweep: usize,
}

/// Held while an object is read (shared) or changed (exclusive).
pub(crate) type ReadGuard = OwnedRwLockReadGuard<()>;
pub(crate) type WriteGuard = OwnedRwLockWriteGuard<()>;

impl KeyLocks {
    fn entry(&self, path: &Path) -> Arc<RwLock<()>> {
        // Nothing below can panic while the table is borrowed, so a poisoned table is
        // still consistent.
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = table.locks.get(path).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(RwLock::new(()));
        table.locks.insert(path.to_owned(), Arc::downgrade(&lock));
        if table.locks.len() >= (2 * table.live_after_sweep).max(FIRST_SWEEP) {
            table.locks.retain(|_, lock| lock.strong_count() > 0);
            table.live_after_sweep = table.locks.len();
        }
        lock
    }

    /// Waits until no request changes `path`, and keeps it so.
    pub(crate) async fn read(&self, path: &Path) -> ReadGuard {
        self.entry(path).read_owned().await
    }

    /// Waits until no other request reads or changes `path`, and keeps it so.
    pub(crate) async fn write(&self, path: &Path) -> WriteGuard {
        self.entry(path).write_owned().await
    }

    /// Write locks on two paths, taken in path order so that two requests locking the
    /// same pair in opposite roles cannot deadlock. One lock when the paths are equal.
    pub(crate) async fn write_two(&self, a: &Path, b: &Path) -> (WriteGuard, Option<WriteGuard>) {
        if a == b {
            return (self.write(a).await, None);
        }
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        let first = self.write(first).await;
        (first, Some(self.write(second).await))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locks
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_excludes_readers_and_writers_of_the_same_path_only() {
        let locks = KeyLocks::default();
        let held = locks.write(Path::new("/d/b/k")).await;

        // The same file, spelled differently, is the same lock.
        for spelling in ["/d/b/k", "/d/b//k", "/d/b/./k"] {
            let lock = locks.entry(Path::new(spelling));
            assert!(
                lock.try_read().is_err(),
                "{spelling} readable while written"
            );
            assert!(
                lock.try_write().is_err(),
                "{spelling} writable while written"
            );
        }
        // Another object is not blocked.
        let other = locks.entry(Path::new("/d/b/k2"));
        assert!(other.try_write().is_ok());

        drop(held);
        let lock = locks.entry(Path::new("/d/b/k"));
        assert!(lock.try_write().is_ok(), "released");
    }

    #[tokio::test]
    async fn readers_share() {
        let locks = KeyLocks::default();
        let _first = locks.read(Path::new("/k")).await;
        let _second = locks.read(Path::new("/k")).await;
        assert!(locks.entry(Path::new("/k")).try_write().is_err());
    }

    #[tokio::test]
    async fn write_two_locks_both_and_one_when_equal() {
        let locks = KeyLocks::default();
        let (a, b) = locks.write_two(Path::new("/z"), Path::new("/a")).await;
        assert!(b.is_some());
        assert!(locks.entry(Path::new("/z")).try_read().is_err());
        assert!(locks.entry(Path::new("/a")).try_read().is_err());
        drop((a, b));

        let (only, none) = locks
            .write_two(Path::new("/same"), Path::new("/same"))
            .await;
        assert!(none.is_none());
        drop(only);
    }

    #[tokio::test]
    async fn released_entries_are_swept_as_the_table_grows() {
        let locks = KeyLocks::default();
        let kept = locks.write(Path::new("/kept")).await;
        for i in 0..10 * FIRST_SWEEP {
            drop(locks.write(Path::new(&format!("/k{i}"))).await);
        }
        assert!(
            locks.len() <= FIRST_SWEEP + 1,
            "{} entries after {} released locks",
            locks.len(),
            10 * FIRST_SWEEP
        );
        // A held lock survives every sweep.
        assert!(locks.entry(Path::new("/kept")).try_read().is_err());
        drop(kept);
    }
}
