use super::*;

fn record(marker: u8) -> Record {
    Record {
        version: [marker; 16],
        registration_id: [marker ^ 0x55; 16],
        opaque_record: vec![marker; 192],
        sealed_key: b"SEALED-KEY-MARKER-"
            .iter()
            .copied()
            .chain([marker; 40])
            .collect(),
        key_proof_verifier: [marker; 32],
        guesses: 0,
    }
}

fn ticket() -> Ticket {
    Ticket {
        account: "alice".into(),
        version: [1; 16],
        expires_at_ms: 100,
    }
}

fn session(account: &str, version: Version, expires_at_ms: u64) -> Session {
    Session {
        account: account.into(),
        version,
        sealed_state: vec![9; 150],
        expires_at_ms,
    }
}

#[tokio::test]
async fn guesses_count_up_to_the_limit_then_erase() {
    let store = SqliteStore::in_memory().unwrap();
    assert_eq!(
        store.count_guess("alice", 3, 1).await.unwrap(),
        GuessCount::NotFound
    );
    assert!(store.create_record("alice", record(1), 1).await.unwrap());
    for expected in 1..=3 {
        match store.count_guess("alice", 3, 2).await.unwrap() {
            GuessCount::Counted { guesses, record: r } => {
                assert_eq!(guesses, expected);
                assert_eq!(r.guesses, expected);
                assert_eq!(r.sealed_key, record(1).sealed_key);
            }
            other => panic!("guess {expected}: {other:?}"),
        }
    }
    assert_eq!(
        store.count_guess("alice", 3, 3).await.unwrap(),
        GuessCount::ErasedNow
    );
    assert_eq!(
        store.count_guess("alice", 3, 4).await.unwrap(),
        GuessCount::Erased
    );
    assert_eq!(
        store.get_record("alice").await.unwrap(),
        Some(RecordState::Erased)
    );
    // A tombstone blocks a fresh registration until a start-over deletes it.
    assert!(!store.create_record("alice", record(2), 5).await.unwrap());
    assert!(store.delete("alice", None).await.unwrap());
    assert!(store.create_record("alice", record(2), 6).await.unwrap());
}

#[tokio::test]
async fn success_resets_only_the_version_it_started_against() {
    let store = SqliteStore::in_memory().unwrap();
    store.create_record("alice", record(1), 1).await.unwrap();
    store.count_guess("alice", 10, 2).await.unwrap();
    store.count_guess("alice", 10, 2).await.unwrap();
    assert_eq!(
        store
            .reset_guesses("alice", [7; 16], [1; 32], ticket(), 3)
            .await
            .unwrap(),
        Reset::Changed
    );
    assert_eq!(
        store
            .reset_guesses("alice", [1; 16], [2; 32], ticket(), 3)
            .await
            .unwrap(),
        Reset::Reset {
            sealed_key: record(1).sealed_key
        }
    );
    let Some(RecordState::Active(r)) = store.get_record("alice").await.unwrap() else {
        panic!("record gone")
    };
    assert_eq!(r.guesses, 0);
    // The ticket is stored with a reset, and only then.
    assert_eq!(
        store.take_ticket([2; 32], "alice").await.unwrap(),
        Some(ticket())
    );
    assert_eq!(store.take_ticket([1; 32], "alice").await.unwrap(), None);
    assert_eq!(
        store
            .reset_guesses("bob", [1; 16], [3; 32], ticket(), 3)
            .await
            .unwrap(),
        Reset::Changed
    );
}

#[tokio::test]
async fn failures_report_remaining_and_erase_at_the_last() {
    let store = SqliteStore::in_memory().unwrap();
    assert_eq!(
        store.record_failure("alice", 2, 1).await.unwrap(),
        Failure::NotFound
    );
    store.create_record("alice", record(1), 1).await.unwrap();
    store.count_guess("alice", 2, 1).await.unwrap();
    assert_eq!(
        store.record_failure("alice", 2, 1).await.unwrap(),
        Failure::Remaining(1)
    );
    store.count_guess("alice", 2, 1).await.unwrap();
    assert_eq!(
        store.record_failure("alice", 2, 1).await.unwrap(),
        Failure::ErasedNow
    );
    assert_eq!(
        store.record_failure("alice", 2, 1).await.unwrap(),
        Failure::Erased
    );
    assert_eq!(
        store
            .reset_guesses("alice", [1; 16], [2; 32], ticket(), 3)
            .await
            .unwrap(),
        Reset::Erased
    );
}

#[tokio::test]
async fn replace_is_conditional_on_the_version_and_resets_guesses() {
    let store = SqliteStore::in_memory().unwrap();
    store.create_record("alice", record(1), 1).await.unwrap();
    store.count_guess("alice", 10, 1).await.unwrap();
    store
        .put_session([1; 16], session("alice", [1; 16], 100), 1)
        .await
        .unwrap();
    assert!(
        !store
            .replace_record("alice", [9; 16], record(2), 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_record("alice", [1; 16], record(2), 2)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_record("alice").await.unwrap(),
        Some(RecordState::Active(record(2)))
    );
    // Login state of the old registration is gone with it.
    assert_eq!(store.take_session([1; 16], "alice").await.unwrap(), None);
    assert!(
        !store
            .replace_record("bob", [1; 16], record(2), 2)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn sessions_and_tickets_are_single_use_and_account_bound() {
    let store = SqliteStore::in_memory().unwrap();
    store
        .put_session([1; 16], session("alice", [3; 16], 100), 1)
        .await
        .unwrap();
    assert_eq!(store.take_session([1; 16], "bob").await.unwrap(), None);
    assert_eq!(
        store.take_session([1; 16], "alice").await.unwrap(),
        Some(session("alice", [3; 16], 100))
    );
    assert_eq!(store.take_session([1; 16], "alice").await.unwrap(), None);

    let ticket = Ticket {
        account: "alice".into(),
        version: [3; 16],
        expires_at_ms: 100,
    };
    store.put_ticket([5; 32], ticket.clone()).await.unwrap();
    assert_eq!(store.take_ticket([5; 32], "bob").await.unwrap(), None);
    assert_eq!(
        store.take_ticket([5; 32], "alice").await.unwrap(),
        Some(ticket)
    );
    assert_eq!(store.take_ticket([5; 32], "alice").await.unwrap(), None);
}

#[tokio::test]
async fn expired_login_state_is_purged_on_the_next_session() {
    let store = SqliteStore::in_memory().unwrap();
    store
        .put_session([1; 16], session("alice", [3; 16], 100), 1)
        .await
        .unwrap();
    let ticket = Ticket {
        account: "alice".into(),
        version: [3; 16],
        expires_at_ms: 100,
    };
    store.put_ticket([5; 32], ticket).await.unwrap();
    store
        .put_session([2; 16], session("alice", [3; 16], 300), 200)
        .await
        .unwrap();
    assert_eq!(store.take_session([1; 16], "alice").await.unwrap(), None);
    assert_eq!(store.take_ticket([5; 32], "alice").await.unwrap(), None);
    assert!(
        store
            .take_session([2; 16], "alice")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn secrets_are_stored_once() {
    let store = SqliteStore::in_memory().unwrap();
    assert_eq!(store.load_secrets().await.unwrap(), None);
    assert_eq!(
        store.store_secrets_once(vec![1, 2]).await.unwrap(),
        vec![1, 2]
    );
    assert_eq!(store.store_secrets_once(vec![3]).await.unwrap(), vec![1, 2]);
    assert_eq!(store.load_secrets().await.unwrap(), Some(vec![1, 2]));
}

#[tokio::test]
async fn state_persists_and_erased_bytes_leave_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db/vault.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create_record("alice", record(1), 1).await.unwrap();
        store.count_guess("alice", 2, 1).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let Some(RecordState::Active(r)) = store.get_record("alice").await.unwrap() else {
        panic!("record lost across reopen")
    };
    assert_eq!(r.guesses, 1);

    let contains_marker = || {
        std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .any(|entry| {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                bytes.windows(18).any(|w| w == b"SEALED-KEY-MARKER-")
            })
    };
    assert!(
        contains_marker(),
        "the marker should be on disk before the erase"
    );
    store.count_guess("alice", 2, 2).await.unwrap();
    assert_eq!(
        store.count_guess("alice", 2, 3).await.unwrap(),
        GuessCount::ErasedNow
    );
    assert!(
        !contains_marker(),
        "erased sealed key bytes remain in the database files"
    );
}
