//! Unit tests of the v3 protocol against the in-memory store: commits,
//! conflicts, a race decided by the conditional write, a crash after every
//! storage call, the sweep's grace period, and uploads that must leave
//! nothing behind.

use std::sync::Arc;
use std::time::Duration;

use account_token::AccountId;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use tokio::sync::Barrier;

use crate::config::{Config, Limits};
use crate::objects::memory::{Faults, MemoryStore};
use crate::objects::{Body, Condition, Object, ObjectInfo, ObjectStore, StoreError};
use crate::v3::commit::{CommitRequest, Committed, commit};
use crate::v3::error::V3Error;
use crate::v3::order::CommitOrder;
use crate::v3::put_pack::{PackHeader, put_pack};
use crate::v3::{Core, get_backup, layout, list_uploads, sweep};

fn limits() -> Limits {
    Config::try_parse_from(["blob-gateway"]).unwrap().limits
}

fn core(store: Arc<dyn ObjectStore>, order: CommitOrder) -> Core {
    Core {
        store,
        limits: limits(),
        order,
        metrics: Default::default(),
    }
}

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

fn name(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A padded manifest that differs per `seed`.
fn manifest(seed: u8) -> Bytes {
    Bytes::from(vec![seed; 1024])
}

async fn upload(core: &Core, n: u8, size: u64) {
    let bytes = Bytes::from(vec![n; size as usize]);
    let data = futures::stream::iter([Ok(bytes)]);
    let header = PackHeader {
        name: name(n),
        size,
    };
    put_pack(core, &alice(), header, data)
        .await
        .expect("the pack is stored");
}

fn request(expected: u64, seed: u8, packs: &[u8], abandoned: &[u8]) -> CommitRequest {
    CommitRequest {
        expected,
        manifest: manifest(seed),
        packs: packs.iter().map(|n| name(*n)).collect(),
        abandoned: abandoned.iter().map(|n| name(*n)).collect(),
    }
}

/// The committed generation, checked whole: its manifest and every pack
/// it references are stored.
async fn committed_whole(core: &Core) -> Option<(u64, Vec<String>)> {
    let backup = match get_backup::get_backup(core, &alice()).await {
        Ok(backup) => backup,
        Err(V3Error::NoBackup) => return None,
        Err(other) => panic!("{other}"),
    };
    let record = backup.record;
    let stored = get_backup::get_manifest(core, &alice(), record.generation)
        .await
        .expect("the committed manifest is readable");
    assert_eq!(stored.len() as u64, record.manifest_size);
    for pack in &record.packs {
        let key = layout::pack_key(&alice(), &layout::PackName::parse(&pack.name).unwrap());
        assert_eq!(
            core.store.head(&key).await.unwrap(),
            Some(pack.size),
            "{key}"
        );
    }
    Some((
        record.generation,
        record.packs.into_iter().map(|p| p.name).collect(),
    ))
}

#[tokio::test]
async fn commits_replace_the_generation_and_delete_what_it_left() {
    let core = core(Arc::new(MemoryStore::new()), CommitOrder::conditional());
    for n in [1, 2, 3] {
        upload(&core, n, 1024).await;
    }
    let first = commit(&core, &alice(), request(0, 1, &[1, 2], &[]))
        .await
        .unwrap();
    assert_eq!(
        first,
        Committed {
            generation: 1,
            deleted_packs: 0,
            stored_bytes: 3072
        }
    );
    let uploads = list_uploads::list_uploads(&core, &alice()).await.unwrap();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].name, name(3));

    upload(&core, 4, 1024).await;
    let second = commit(&core, &alice(), request(1, 2, &[2, 4], &[3]))
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.deleted_packs, 2, "pack 1 replaced, pack 3 abandoned");
    assert_eq!(
        committed_whole(&core).await,
        Some((2, vec![name(2), name(4)]))
    );
    let manifests = core
        .store
        .list(&layout::manifests_prefix(&alice()))
        .await
        .unwrap();
    assert_eq!(manifests.len(), 1, "the replaced manifest is deleted");

    // A retry whose answer was lost commits nothing new and succeeds.
    let retried = commit(&core, &alice(), request(1, 2, &[2, 4], &[3]))
        .await
        .unwrap();
    assert_eq!(retried.generation, 2);
}

#[tokio::test]
async fn refusals_name_the_reason_and_write_nothing() {
    let memory = Arc::new(MemoryStore::new());
    let core = core(memory.clone(), CommitOrder::conditional());
    upload(&core, 1, 1024).await;
    let before = memory.keys();

    let conflict = commit(&core, &alice(), request(3, 1, &[1], &[])).await;
    assert!(
        matches!(
            conflict,
            Err(V3Error::GenerationConflict {
                expected: 3,
                committed: 0
            })
        ),
        "{conflict:?}"
    );
    let missing = commit(&core, &alice(), request(0, 1, &[1, 9], &[])).await;
    match missing {
        Err(V3Error::MissingPacks { count: 1, sample }) => assert_eq!(sample, [name(9)]),
        other => panic!("{other:?}"),
    }
    let unpadded = CommitRequest {
        manifest: Bytes::from(vec![0; 1001]),
        ..request(0, 1, &[1], &[])
    };
    assert!(matches!(
        commit(&core, &alice(), unpadded).await,
        Err(V3Error::NotPadded {
            what: "manifest",
            size: 1001
        })
    ));
    let twice = request(0, 1, &[1, 1], &[]);
    assert!(matches!(
        commit(&core, &alice(), twice).await,
        Err(V3Error::Malformed(_))
    ));
    let mut small = limits();
    small.quota_bytes = 1500;
    let tight = Core {
        store: memory.clone(),
        limits: small,
        order: CommitOrder::conditional(),
        metrics: Default::default(),
    };
    assert!(matches!(
        commit(&tight, &alice(), request(0, 1, &[1], &[])).await,
        Err(V3Error::QuotaExceeded {
            needed: 2048,
            quota: 1500
        })
    ));
    assert_eq!(memory.keys(), before, "a refused commit writes nothing");
}

/// Holds every write of a commit record until `parties` writers arrived,
/// so concurrent commits all read the old record before any writes.
struct RecordGate {
    inner: MemoryStore,
    gate: Barrier,
}

#[async_trait::async_trait]
impl ObjectStore for RecordGate {
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        condition: Condition,
    ) -> Result<String, StoreError> {
        if key.ends_with("/commit") {
            self.gate.wait().await;
        }
        self.inner.put(key, bytes, condition).await
    }
    async fn put_stream(&self, key: &str, size: u64, body: Body) -> Result<(), StoreError> {
        self.inner.put_stream(key, size, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Body, StoreError> {
        self.inner.get_range(key, offset, len).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_dirs(prefix).await
    }
    async fn delete_many(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        self.inner.delete_many(keys).await
    }
}

/// Two gateways (each its own core) commit generation 1 at once.
async fn race(faults: Faults) -> Vec<Result<Committed, V3Error>> {
    let store = Arc::new(RecordGate {
        inner: MemoryStore::with_faults(faults),
        gate: Barrier::new(2),
    });
    let first = core(store.clone(), CommitOrder::conditional());
    let second = core(store.clone(), CommitOrder::conditional());
    upload(&first, 1, 1024).await;
    upload(&second, 2, 1024).await;
    let account = alice();
    let (a, b) = tokio::join!(
        commit(&first, &account, request(0, 1, &[1], &[])),
        commit(&second, &account, request(0, 2, &[2], &[])),
    );
    vec![a, b]
}

#[tokio::test]
async fn of_two_gateways_committing_at_once_exactly_one_wins() {
    let results = race(Faults::default()).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(results.iter().any(|r| matches!(
        r,
        Err(V3Error::GenerationConflict {
            expected: 0,
            committed: 1
        })
    )));
}

#[tokio::test]
async fn a_store_that_ignores_conditions_lets_both_win_which_the_probe_detects() {
    let results = race(Faults {
        ignore_conditions: true,
    })
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        2,
        "both think they won"
    );
    let lax = MemoryStore::with_faults(Faults {
        ignore_conditions: true,
    });
    assert!(!crate::v3::order::probe(&lax).await.unwrap());

    // What the gateway does then: one gateway, order from its own locks.
    let core = Arc::new(core(Arc::new(lax), CommitOrder::local_locks()));
    upload(&core, 1, 1024).await;
    upload(&core, 2, 1024).await;
    let account = alice();
    let (a, b) = tokio::join!(
        commit(&core, &account, request(0, 1, &[1], &[])),
        commit(&core, &account, request(0, 2, &[2], &[])),
    );
    assert_eq!(
        [&a, &b].iter().filter(|r| r.is_ok()).count(),
        1,
        "{a:?} {b:?}"
    );
}

#[tokio::test]
async fn a_commit_cut_off_after_any_storage_call_leaves_one_generation_whole() {
    for calls in 0..40 {
        let memory = Arc::new(MemoryStore::new());
        let core = core(memory.clone(), CommitOrder::conditional());
        for n in [1, 2, 3] {
            upload(&core, n, 1024).await;
        }
        commit(&core, &alice(), request(0, 1, &[1, 2], &[]))
            .await
            .unwrap();
        memory.fail_after(calls);
        let result = commit(&core, &alice(), request(1, 2, &[2, 3], &[])).await;
        memory.fail_after(u64::MAX);
        let (generation, packs) = committed_whole(&core).await.expect("a backup");
        match generation {
            1 => assert_eq!(packs, [name(1), name(2)]),
            2 => assert_eq!(packs, [name(2), name(3)]),
            other => panic!("generation {other}"),
        }
        if result.is_ok() {
            assert_eq!(generation, 2);
        }
        // What a cut-off clean-up left, the sweep removes once old enough.
        memory.age("v3/", Duration::from_secs(7200));
        sweep::sweep(&core, Duration::from_secs(3600))
            .await
            .unwrap();
        let (after, _) = committed_whole(&core).await.expect("still a backup");
        assert_eq!(after, generation);
        let held = memory
            .list(&layout::account_prefix(&alice()))
            .await
            .unwrap();
        assert_eq!(
            held.len(),
            4,
            "the record, one manifest and two packs: {held:?}"
        );
    }
}

#[tokio::test]
async fn the_sweep_spares_young_uploads_and_covers_accounts_without_a_commit() {
    let memory = Arc::new(MemoryStore::new());
    let core = core(memory.clone(), CommitOrder::conditional());
    upload(&core, 1, 1024).await;
    let bob = AccountId::new("bob").unwrap();
    let orphan = layout::pack_key(&bob, &layout::PackName::parse(&name(7)).unwrap());
    memory
        .put(&orphan, Bytes::from_static(b"x"), Condition::None)
        .await
        .unwrap();

    let grace = Duration::from_secs(3600);
    let swept = sweep::sweep(&core, grace).await.unwrap();
    assert_eq!(swept.accounts, 2);
    assert_eq!(
        swept.deleted, 0,
        "everything is younger than the grace period"
    );

    memory.age("v3/bob/", Duration::from_secs(7200));
    commit(&core, &alice(), request(0, 1, &[1], &[]))
        .await
        .unwrap();
    memory.age("v3/alice/", Duration::from_secs(7200));
    let swept = sweep::sweep(&core, grace).await.unwrap();
    assert_eq!(
        swept.deleted, 1,
        "bob's orphan; alice's committed pack stays"
    );
    assert!(memory.keys().iter().all(|k| !k.starts_with("v3/bob/")));
    assert!(committed_whole(&core).await.is_some());
}

#[tokio::test]
async fn uploads_refused_midway_leave_nothing() {
    let memory = Arc::new(MemoryStore::new());
    let core = core(memory.clone(), CommitOrder::conditional());
    let account = alice();
    let put = |size: u64, parts: Vec<Result<Bytes, V3Error>>| {
        let header = PackHeader {
            name: name(1),
            size,
        };
        put_pack(&core, &account, header, futures::stream::iter(parts))
    };
    let short = put(1024, vec![Ok(Bytes::from(vec![0; 999]))]).await;
    assert!(
        matches!(
            short,
            Err(V3Error::SizeMismatch {
                declared: 1024,
                received: 999
            })
        ),
        "{short:?}"
    );
    let long = put(
        1024,
        vec![Ok(Bytes::from(vec![0; 600])), Ok(Bytes::from(vec![0; 600]))],
    )
    .await;
    assert!(
        matches!(
            long,
            Err(V3Error::SizeMismatch {
                declared: 1024,
                received: 1200
            })
        ),
        "{long:?}"
    );
    let huge = put(
        2 * 1024 * 1024,
        vec![Ok(Bytes::from(vec![0; 2 * 1024 * 1024]))],
    )
    .await;
    assert!(
        matches!(huge, Err(V3Error::MessageTooLarge { .. })),
        "{huge:?}"
    );
    let broken = put(
        1024,
        vec![Err(V3Error::Malformed("a second header".into()))],
    )
    .await;
    assert!(matches!(broken, Err(V3Error::Malformed(_))), "{broken:?}");
    assert!(matches!(
        put(1001, vec![]).await,
        Err(V3Error::NotPadded { .. })
    ));
    assert!(memory.keys().is_empty(), "{:?}", memory.keys());

    upload(&core, 1, 1024).await;
    commit(&core, &alice(), request(0, 1, &[1], &[]))
        .await
        .unwrap();
    let replace = put(1024, vec![Ok(Bytes::from(vec![9; 1024]))]).await;
    assert!(
        matches!(replace, Err(V3Error::PackCommitted(_))),
        "{replace:?}"
    );
    let body = crate::v3::get_pack::get_pack(&core, &alice(), &name(1), 10, 5)
        .await
        .unwrap();
    let bytes: Vec<Bytes> = body.map(|b| b.unwrap()).collect().await;
    assert_eq!(bytes.concat(), vec![1; 5]);
    assert!(matches!(
        crate::v3::get_pack::get_pack(&core, &alice(), &name(1), 1020, 20).await,
        Err(V3Error::RangeOutside { .. })
    ));
}
