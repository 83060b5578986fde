//! [`ObjectStore`] in memory, for unit tests of pure logic, with faults to
//! inject (modelled on neon's `remote_storage` `simulate_failures`):
//! [`Faults::ignore_conditions`] accepts every conditional write as if the
//! header were absent (what Garage 2.5 does), and [`MemoryStore::fail_after`]
//! makes every call after the Nth fail with `Unavailable`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{Body, Condition, Object, ObjectInfo, ObjectStore, StoreError};

/// Faults the store injects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Conditional writes succeed whatever the condition.
    pub ignore_conditions: bool,
}

#[derive(Debug, Clone)]
struct Stored {
    bytes: Bytes,
    etag: String,
    modified: SystemTime,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Stored>>,
    versions: AtomicU64,
    calls: AtomicU64,
    /// Calls allowed before every call fails; `u64::MAX` for never.
    fail_after: AtomicU64,
    faults: Faults,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_faults(Faults::default())
    }

    pub fn with_faults(faults: Faults) -> Self {
        Self {
            faults,
            fail_after: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }

    /// From now on, `calls` more calls succeed and every later one fails
    /// with `Unavailable`; `u64::MAX` heals the store.
    pub fn fail_after(&self, calls: u64) {
        self.calls.store(0, Ordering::SeqCst);
        self.fail_after.store(calls, Ordering::SeqCst);
    }

    /// Makes every object under `prefix` look `by` older (for grace periods).
    pub fn age(&self, prefix: &str, by: Duration) {
        let mut objects = self.objects.lock().unwrap();
        for (_, object) in objects
            .range_mut(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
        {
            object.modified -= by;
        }
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    fn tick(&self) -> Result<(), StoreError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.fail_after.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(format!(
                "injected failure (call {})",
                call + 1
            )));
        }
        Ok(())
    }

    fn store(&self, key: &str, bytes: Bytes, condition: &Condition) -> Result<String, StoreError> {
        let mut objects = self.objects.lock().unwrap();
        if !self.faults.ignore_conditions {
            match (condition, objects.get(key)) {
                (Condition::None, _) => {}
                (Condition::IfNoneMatch, Some(_)) => return Err(StoreError::PreconditionFailed),
                (Condition::IfNoneMatch, None) => {}
                (Condition::IfMatch(_), None) => return Err(StoreError::NotFound),
                (Condition::IfMatch(etag), Some(current)) if *etag != current.etag => {
                    return Err(StoreError::PreconditionFailed);
                }
                (Condition::IfMatch(_), Some(_)) => {}
            }
        }
        let etag = format!("\"v{}\"", self.versions.fetch_add(1, Ordering::SeqCst) + 1);
        objects.insert(
            key.to_string(),
            Stored {
                bytes,
                etag: etag.clone(),
                modified: SystemTime::now(),
            },
        );
        Ok(etag)
    }

    fn lookup(&self, key: &str) -> Option<Stored> {
        self.objects.lock().unwrap().get(key).cloned()
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    async fn check(&self) -> Result<(), StoreError> {
        self.tick()
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        condition: Condition,
    ) -> Result<String, StoreError> {
        self.tick()?;
        self.store(key, bytes, &condition)
    }

    async fn put_stream(&self, key: &str, size: u64, mut body: Body) -> Result<(), StoreError> {
        self.tick()?;
        let mut buffer = BytesMut::new();
        while let Some(next) = body.next().await {
            buffer.extend_from_slice(&next?);
            if buffer.len() as u64 > size {
                return Err(StoreError::Aborted(format!(
                    "more than the declared {size} bytes"
                )));
            }
        }
        if buffer.len() as u64 != size {
            return Err(StoreError::Aborted(format!(
                "{} bytes of the declared {size}",
                buffer.len()
            )));
        }
        self.store(key, buffer.freeze(), &Condition::None)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.tick()?;
        Ok(self.lookup(key).map(|stored| Object {
            bytes: stored.bytes,
            etag: stored.etag,
            last_modified: Some(stored.modified),
        }))
    }

    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Body, StoreError> {
        self.tick()?;
        let stored = self.lookup(key).ok_or(StoreError::NotFound)?;
        let size = stored.bytes.len() as u64;
        if offset >= size && len != Some(0) {
            return Err(StoreError::InvalidRange);
        }
        let end = len.map_or(size, |len| (offset + len).min(size));
        let bytes = stored.bytes.slice(offset as usize..end as usize);
        Ok(futures::stream::iter([Ok(bytes)]).boxed())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.tick()?;
        Ok(self.lookup(key).map(|stored| stored.bytes.len() as u64))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.tick()?;
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, stored)| ObjectInfo {
                key: key.clone(),
                size: stored.bytes.len() as u64,
                last_modified: Some(stored.modified),
            })
            .collect())
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut dirs: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|object| {
                let rest = &object.key[prefix.len()..];
                rest.find('/')
                    .map(|slash| format!("{prefix}{}", &rest[..=slash]))
            })
            .collect();
        dirs.dedup();
        Ok(dirs)
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        self.tick()?;
        let mut objects = self.objects.lock().unwrap();
        for key in &keys {
            objects.remove(key);
        }
        Ok(keys.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditions_hold_unless_ignored() {
        let store = MemoryStore::new();
        let first = store
            .put("k", Bytes::from_static(b"1"), Condition::IfNoneMatch)
            .await
            .unwrap();
        assert!(matches!(
            store
                .put("k", Bytes::from_static(b"2"), Condition::IfNoneMatch)
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        let second = store
            .put(
                "k",
                Bytes::from_static(b"3"),
                Condition::IfMatch(first.clone()),
            )
            .await
            .unwrap();
        assert!(matches!(
            store
                .put("k", Bytes::from_static(b"4"), Condition::IfMatch(first))
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        assert_eq!(store.get("k").await.unwrap().unwrap().etag, second);

        let lax = MemoryStore::with_faults(Faults {
            ignore_conditions: true,
        });
        for _ in 0..2 {
            lax.put("k", Bytes::from_static(b"x"), Condition::IfNoneMatch)
                .await
                .expect("conditions ignored");
        }
    }

    #[tokio::test]
    async fn fails_after_n_calls_until_healed() {
        let store = MemoryStore::new();
        store.fail_after(2);
        store.check().await.unwrap();
        store.check().await.unwrap();
        assert!(matches!(
            store.check().await,
            Err(StoreError::Unavailable(_))
        ));
        store.fail_after(u64::MAX);
        store.check().await.unwrap();
    }

    #[tokio::test]
    async fn lists_dirs_once_each() {
        let store = MemoryStore::new();
        for key in ["v3/a/x", "v3/a/y", "v3/b/z", "v3/top"] {
            store.put(key, Bytes::new(), Condition::None).await.unwrap();
        }
        assert_eq!(store.list_dirs("v3/").await.unwrap(), ["v3/a/", "v3/b/"]);
    }
}
