//! One conformance suite for every [`RecordStore`]: each implementation's
//! tests call [`run`], so the embedded store and the consensus store are
//! held to the same contract.

use std::sync::Arc;

use super::{Ephemeral, EphemeralKind, RecordStore, StoredRow};

fn row(text: &str) -> StoredRow {
    StoredRow {
        body: text.as_bytes().to_vec(),
        mac: [text.len() as u8; 32],
    }
}

fn item(account: &str, expires_at_ms: u64) -> Ephemeral {
    Ephemeral {
        account: account.into(),
        payload: vec![7; 40],
        expires_at_ms,
        mac: [3; 32],
    }
}

/// Runs every check against `store`, which must be empty. Accounts are
/// prefixed so a shared store (one etcd cluster) can run it more than once.
pub async fn run(store: &dyn RecordStore) {
    let prefix = format!("suite{}", rand::random::<u32>());
    secrets_are_stored_once(store).await;
    rows_are_written_by_compare_and_swap(store, &format!("{prefix}-cas")).await;
    a_deleted_row_never_reuses_a_revision(store, &format!("{prefix}-aba")).await;
    ephemerals_are_taken_once_by_their_account(store, &format!("{prefix}-eph")).await;
}

async fn secrets_are_stored_once(store: &dyn RecordStore) {
    let first = store.store_secrets_once(b"first".to_vec()).await.unwrap();
    let second = store.store_secrets_once(b"second".to_vec()).await.unwrap();
    assert_eq!(first, second, "the first secrets stay");
    assert_eq!(store.load_secrets().await.unwrap(), Some(first));
}

async fn rows_are_written_by_compare_and_swap(store: &dyn RecordStore, account: &str) {
    assert!(store.get_row(account).await.unwrap().is_none());
    assert!(store.put_row(account, row("a"), None, false).await.unwrap());
    assert!(
        !store.put_row(account, row("b"), None, false).await.unwrap(),
        "create fails when the row exists"
    );
    let (stored, first) = store.get_row(account).await.unwrap().unwrap();
    assert_eq!(stored, row("a"));
    assert!(
        store
            .put_row(account, row("cc"), Some(first), true)
            .await
            .unwrap()
    );
    let (stored, second) = store.get_row(account).await.unwrap().unwrap();
    assert_eq!(stored, row("cc"));
    assert_ne!(first, second);
    assert!(
        !store
            .put_row(account, row("ddd"), Some(first), false)
            .await
            .unwrap(),
        "a stale revision writes nothing"
    );
    assert_eq!(store.get_row(account).await.unwrap().unwrap().0, row("cc"));
    assert!(!store.delete_row(account, first).await.unwrap());
    assert!(store.delete_row(account, second).await.unwrap());
    assert!(store.get_row(account).await.unwrap().is_none());
}

async fn a_deleted_row_never_reuses_a_revision(store: &dyn RecordStore, account: &str) {
    assert!(store.put_row(account, row("a"), None, false).await.unwrap());
    let (_, old) = store.get_row(account).await.unwrap().unwrap();
    assert!(store.delete_row(account, old).await.unwrap());
    assert!(store.put_row(account, row("b"), None, false).await.unwrap());
    let (_, new) = store.get_row(account).await.unwrap().unwrap();
    assert_ne!(old, new);
    assert!(
        !store
            .put_row(account, row("c"), Some(old), false)
            .await
            .unwrap(),
        "a writer holding the deleted row's revision must not overwrite the new row"
    );
}

async fn ephemerals_are_taken_once_by_their_account(store: &dyn RecordStore, account: &str) {
    let kind = EphemeralKind::LoginTicket;
    let other = format!("{account}-other");
    store
        .put_ephemeral(kind, b"id-1", item(account, 1_000), 10)
        .await
        .unwrap();
    assert_eq!(
        store.take_ephemeral(kind, b"id-1", &other).await.unwrap(),
        None,
        "another account cannot take it"
    );
    assert_eq!(
        store
            .take_ephemeral(EphemeralKind::Challenge, b"id-1", account)
            .await
            .unwrap(),
        None,
        "kinds do not mix"
    );
    assert_eq!(
        store.take_ephemeral(kind, b"id-1", account).await.unwrap(),
        Some(item(account, 1_000))
    );
    assert_eq!(
        store.take_ephemeral(kind, b"id-1", account).await.unwrap(),
        None
    );

    store
        .put_ephemeral(kind, b"old", item(account, 20), 10)
        .await
        .unwrap();
    store
        .put_ephemeral(kind, b"new", item(account, 5_000), 30)
        .await
        .unwrap();
    // An expired item may linger until the store collects it, but it comes
    // back with its expiry, so the vault can refuse it.
    if let Some(old) = store.take_ephemeral(kind, b"old", account).await.unwrap() {
        assert_eq!(old.expires_at_ms, 20);
    }

    // Deleting the account's row drops its items.
    assert!(store.put_row(account, row("x"), None, false).await.unwrap());
    let (_, revision) = store.get_row(account).await.unwrap().unwrap();
    assert!(store.delete_row(account, revision).await.unwrap());
    assert_eq!(
        store.take_ephemeral(kind, b"new", account).await.unwrap(),
        None
    );
}

/// Many writers increment one counter by compare-and-swap with retries:
/// no increment may be lost. Needs a store that can be shared.
pub async fn concurrent_writers_lose_no_update(store: Arc<dyn RecordStore>) {
    let account = format!("suite{}-race", rand::random::<u32>());
    assert!(
        store
            .put_row(&account, row("0"), None, false)
            .await
            .unwrap()
    );
    let writers = (0..40).map(|_| {
        let (store, account) = (Arc::clone(&store), account.clone());
        tokio::spawn(async move {
            loop {
                let (current, revision) = store.get_row(&account).await.unwrap().unwrap();
                let count: u32 = std::str::from_utf8(&current.body).unwrap().parse().unwrap();
                let next = row(&(count + 1).to_string());
                if store
                    .put_row(&account, next, Some(revision), false)
                    .await
                    .unwrap()
                {
                    break;
                }
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let (last, _) = store.get_row(&account).await.unwrap().unwrap();
    assert_eq!(last.body, b"40");
}
