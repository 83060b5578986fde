//! The v2 gateway against the real local S3 server, both in-process on
//! ephemeral ports, through a real tonic client with account tokens.
//! Bucket contents are checked with `aws-sdk-s3` directly.

mod harness;

use std::time::{Duration, Instant};

use account_token::{AccountId, Audience, Authority};
use e2eb_proto::storage::v2::{DeleteBackupRequest, GetBackupRequest};
use futures::StreamExt;
use tonic::Code;

use harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn put_has_get_round_trip() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    let small = sealed(1, 1000);
    // Above the 8 MiB part size: a multipart upload.
    let large = sealed(2, 12 * MIB + 5);
    assert!(put(&alice, &id(1), &small).await);
    assert!(put(&alice, &id(2), &large).await);

    let asked = [id(3), id(2), id(1)];
    assert_eq!(has(&alice, &asked).await.unwrap(), [id(2), id(1)]);
    assert_eq!(has(&alice, &[]).await.unwrap(), Vec::<String>::new());

    let (bytes, largest) = get(&alice, &id(1)).await.unwrap();
    assert_eq!(bytes, small);
    assert!(largest <= MIB);
    let (bytes, largest) = get(&alice, &id(2)).await.unwrap();
    assert_eq!(bytes, large);
    assert_eq!(
        largest, MIB,
        "downloads stream in messages of at most 1 MiB"
    );

    assert_code(get(&alice, &id(3)).await, Code::NotFound);
    assert_code(get(&alice, "../../x").await, Code::InvalidArgument);
    assert_code(
        has(&alice, &[id(1).to_uppercase()]).await,
        Code::InvalidArgument,
    );
    let too_many: Vec<String> = (0..1001).map(id).collect();
    assert_code(has(&alice, &too_many).await, Code::InvalidArgument);
    assert_eq!(
        has(&alice, &too_many[..1000]).await.unwrap(),
        [id(1), id(2)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_put_is_a_noop() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    let first = sealed(1, 5000);
    assert!(put(&alice, &id(1), &first).await);
    assert!(!put(&alice, &id(1), &sealed(9, 7000)).await);
    assert_eq!(get(&alice, &id(1)).await.unwrap().0, first);
}

#[tokio::test(flavor = "multi_thread")]
async fn size_mismatch_and_oversize_are_refused_and_store_nothing() {
    let harness = Harness::start(&["--max-chunk-bytes", "16000000"]).await;
    let alice = harness.client("alice");
    let bytes = sealed(1, 10 * MIB);
    // Short, long, short after a multipart part was uploaded.
    assert_code(
        put_raw(&alice, &id(1), 100, &bytes[..50]).await,
        Code::InvalidArgument,
    );
    assert_code(
        put_raw(&alice, &id(2), 50, &bytes[..100]).await,
        Code::InvalidArgument,
    );
    assert_code(
        put_raw(&alice, &id(3), 12 * MIB, &bytes).await,
        Code::InvalidArgument,
    );
    assert_code(
        put_raw(&alice, &id(4), 16_000_001, &[]).await,
        Code::ResourceExhausted,
    );
    assert_code(
        put_raw(&alice, "abc", 3, b"abc").await,
        Code::InvalidArgument,
    );
    // Data before the header.
    let result = alice
        .clone()
        .put_chunk(futures::stream::iter([data(b"x"), header(&id(5), 1)]))
        .await;
    assert_code(result, Code::InvalidArgument);

    let ids: Vec<String> = (1..=5).map(id).collect();
    assert!(has(&alice, &ids).await.unwrap().is_empty());
    assert!(harness.keys("accounts/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_replaces_the_previous_generation_and_deletes_its_garbage() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    assert_code(generation(&alice).await, Code::NotFound);
    assert_code(manifest(&alice, 1).await, Code::NotFound);

    for n in 1..=3 {
        put(&alice, &id(n), &sealed(n, 1000 * n as usize)).await;
    }
    let first = commit(&alice, 0, b"manifest one", &[id(1), id(2), id(3)])
        .await
        .unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.stored_bytes, 6000 + 12);
    assert_eq!(first.deleted_chunks, 0);
    let backup = alice
        .clone()
        .get_backup(GetBackupRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            backup.generation,
            backup.chunk_count,
            backup.stored_bytes,
            backup.manifest_size
        ),
        (1, 3, 6012, 12)
    );
    assert!(backup.committed_at > 1_700_000_000);
    assert_eq!(manifest(&alice, 1).await.unwrap(), b"manifest one");

    // An abandoned upload, and the next generation's new chunk.
    put(&alice, &id(4), &sealed(4, 10)).await;
    put(&alice, &id(5), &sealed(5, 500)).await;
    let second = commit(&alice, 1, b"manifest two", &[id(1), id(5)])
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.deleted_chunks, 3, "chunks 2, 3 and the abandoned 4");
    assert_eq!(second.stored_bytes, 1000 + 500 + 12);

    let mut expected = vec![
        chunk_key("alice", &id(1)),
        chunk_key("alice", &id(5)),
        record_key("alice"),
        manifest_key("alice", 2),
    ];
    expected.sort();
    assert_eq!(harness.keys("").await, expected);

    assert_eq!(generation(&alice).await.unwrap(), 2);
    assert_eq!(manifest(&alice, 2).await.unwrap(), b"manifest two");
    let stale = assert_code(manifest(&alice, 1).await, Code::NotFound);
    assert!(
        stale.message().contains("committed: 2"),
        "{}",
        stale.message()
    );
    assert_code(manifest(&alice, 3).await, Code::NotFound);
    assert_code(get(&alice, &id(2)).await, Code::NotFound);
    assert_eq!(get(&alice, &id(5)).await.unwrap().0, sealed(5, 500));

    // Committed chunks and those uploaded since are held; collected ones not.
    put(&alice, &id(6), b"next").await;
    let asked = [id(1), id(2), id(5), id(6)];
    assert_eq!(has(&alice, &asked).await.unwrap(), [id(1), id(5), id(6)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_commit_after_a_lost_answer_succeeds_once() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    put(&alice, &id(1), b"one").await;
    commit(&alice, 0, b"sealed manifest 1", &[id(1)])
        .await
        .unwrap();
    let again = commit(&alice, 0, b"sealed manifest 1", &[id(1)])
        .await
        .unwrap();
    assert_eq!((again.generation, again.stored_bytes), (1, 3 + 17));
    // Another manifest from the same starting point is a conflict.
    assert_code(
        commit(&alice, 0, b"sealed manifest X", &[id(1)]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(generation(&alice).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_devices_racing_from_one_generation_one_wins() {
    let harness = Harness::start(&[]).await;
    let (phone, tablet) = (harness.client("alice"), harness.client("alice"));
    put(&phone, &id(1), b"base").await;
    commit(&phone, 0, b"m1", &[id(1)]).await.unwrap();
    put(&phone, &id(2), b"phone").await;
    put(&tablet, &id(3), b"tablet").await;

    let (phone_ids, tablet_ids) = ([id(1), id(2)], [id(1), id(3)]);
    let (a, b) = tokio::join!(
        commit(&phone, 1, b"m2-phone", &phone_ids),
        commit(&tablet, 1, b"m2-tablet", &tablet_ids),
    );
    let (winner, loser, won) = match (a, b) {
        (Ok(won), Err(lost)) => (id(2), lost, won),
        (Err(lost), Ok(won)) => (id(3), lost, won),
        other => panic!("exactly one commit must win: {other:?}"),
    };
    assert_eq!(won.generation, 2);
    assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
    assert!(
        loser
            .message()
            .contains("another device committed generation 2"),
        "{}",
        loser.message()
    );
    assert_eq!(generation(&phone).await.unwrap(), 2);
    assert!(get(&phone, &winner).await.is_ok());

    // A commit from a generation that never was is refused too.
    let refused = assert_code(
        commit(&phone, 7, b"m8", &[id(1)]).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("re-read"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_referencing_a_missing_chunk_is_refused_and_writes_nothing() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    put(&alice, &id(1), b"one").await;
    commit(&alice, 0, b"m1", &[id(1)]).await.unwrap();
    let before = harness.keys("").await;

    let missing: Vec<String> = (100..112).map(id).collect();
    let mut ids = vec![id(1)];
    ids.extend(missing.iter().cloned());
    let refused = assert_code(
        commit(&alice, 1, b"m2", &ids).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("12 chunks"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains(&missing[0]),
        "{}",
        refused.message()
    );
    assert!(
        !refused.message().contains(&missing[11]),
        "names at most 10"
    );

    assert_eq!(harness.keys("").await, before);
    assert_eq!(generation(&alice).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_quota_or_limits_nothing_is_committed_and_the_old_generation_stays() {
    let harness = Harness::start(&["--quota-bytes", "10000", "--max-manifest-bytes", "100"]).await;
    let alice = harness.client("alice");
    put(&alice, &id(1), &sealed(1, 4000)).await;
    commit(&alice, 0, b"m1", &[id(1)]).await.unwrap();
    put(&alice, &id(2), &sealed(2, 6000)).await;
    let before = harness.keys("").await;

    let refused = assert_code(
        commit(&alice, 1, b"m2", &[id(1), id(2)]).await,
        Code::ResourceExhausted,
    );
    assert!(refused.message().contains("10002"), "{}", refused.message());
    assert_code(
        commit(&alice, 1, &[0; 101], &[id(1)]).await,
        Code::ResourceExhausted,
    );
    assert_eq!(
        harness.keys("").await,
        before,
        "nothing written, nothing deleted"
    );
    assert_eq!(generation(&alice).await.unwrap(), 1);
    assert_eq!(manifest(&alice, 1).await.unwrap(), b"m1");
    assert_eq!(get(&alice, &id(1)).await.unwrap().0, sealed(1, 4000));

    // Within the quota (generation 1's chunk is no longer counted).
    let fits = commit(&alice, 1, &[0; 10], &[id(2)]).await.unwrap();
    assert_eq!(fits.stored_bytes, 6010);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_isolated() {
    let harness = Harness::start(&[]).await;
    let (alice, bob) = (harness.client("alice"), harness.client("bob"));
    put(&alice, &id(1), b"alice's").await;
    commit(&alice, 0, b"alice m1", &[id(1)]).await.unwrap();

    assert!(has(&bob, &[id(1)]).await.unwrap().is_empty());
    assert_code(get(&bob, &id(1)).await, Code::NotFound);
    assert_code(generation(&bob).await, Code::NotFound);
    assert_code(manifest(&bob, 1).await, Code::NotFound);
    assert_code(
        commit(&bob, 0, b"bob m1", &[id(1)]).await,
        Code::FailedPrecondition,
    );
    assert_code(
        commit(&bob, 1, b"bob m2", &[]).await,
        Code::FailedPrecondition,
    );
    // Bob's own upload of the same id lands under bob and touches nothing of alice's.
    assert!(put(&bob, &id(1), b"bob's").await);
    commit(&bob, 0, b"bob m1", &[id(1)]).await.unwrap();
    bob.clone()
        .delete_backup(DeleteBackupRequest {})
        .await
        .unwrap();

    assert_eq!(get(&alice, &id(1)).await.unwrap().0, b"alice's");
    assert_eq!(manifest(&alice, 1).await.unwrap(), b"alice m1");

    // Another authority's token, and the right authority's token for the
    // key vault, are both refused.
    let alice_id = AccountId::new("alice").unwrap();
    let stranger = Authority::generate()
        .mint(&alice_id, Audience::BlobGateway, Duration::from_secs(60))
        .unwrap();
    let forged = harness.client_with(stranger.expose_secret().to_string());
    assert_code(has(&forged, &[id(1)]).await, Code::Unauthenticated);
    assert_code(get(&forged, &id(1)).await, Code::Unauthenticated);
    let vault_token = harness
        .authority
        .mint(&alice_id, Audience::KeyVault, Duration::from_secs(60))
        .unwrap();
    let misdirected = harness.client_with(vault_token.expose_secret().to_string());
    let status = assert_code(has(&misdirected, &[id(1)]).await, Code::Unauthenticated);
    assert!(status.message().contains("\"key-vault\""), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_backup_removes_the_record_first_and_everything_of_the_account() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    put(&alice, &id(1), b"one").await;
    put(&alice, &id(2), b"uncommitted").await;
    commit(&alice, 0, b"m1", &[id(1)]).await.unwrap();
    put(&alice, &id(3), b"uncommitted").await;
    // A v1 backup of the same account.
    harness
        .put_object(
            &format!("accounts/alice/backups/{}/db", "ab".repeat(16)),
            b"v1".to_vec(),
        )
        .await;
    harness
        .put_object("accounts/alice/current", b"{}".to_vec())
        .await;
    harness
        .put_object(&chunk_key("bob", &id(1)), b"bob".to_vec())
        .await;

    let deleted = alice
        .clone()
        .delete_backup(DeleteBackupRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_objects, 6);
    assert!(harness.keys("accounts/alice/").await.is_empty());
    assert_eq!(harness.keys("").await, [chunk_key("bob", &id(1))]);
    assert_code(generation(&alice).await, Code::NotFound);
    // A fresh start after deletion.
    put(&alice, &id(1), b"again").await;
    assert_eq!(
        commit(&alice, 0, b"m1", &[id(1)]).await.unwrap().generation,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_startup_sweep_removes_orphans_older_than_the_record() {
    let mut harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    put(&alice, &id(1), b"one").await;
    put(&alice, &id(2), b"two").await;
    commit(&alice, 0, b"m1", &[id(1), id(2)]).await.unwrap();
    put(&alice, &id(3), b"three").await;
    commit(&alice, 1, b"m2", &[id(1), id(3)]).await.unwrap();
    harness.stop_gateway().await;

    // What a crash in the middle of generation 2's clean-up leaves: garbage
    // older than the commit record. (Object times have one-second steps.)
    harness
        .put_object(&chunk_key("alice", &id(2)), b"two".to_vec())
        .await;
    harness
        .put_object(&manifest_key("alice", 1), b"m1".to_vec())
        .await;
    harness
        .put_object(&chunk_key("bob", &id(9)), b"no record".to_vec())
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let record = harness.get_object(&record_key("alice")).await;
    harness.put_object(&record_key("alice"), record).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // An upload for the next generation, after the record: kept.
    harness
        .put_object(&chunk_key("alice", &id(4)), b"four".to_vec())
        .await;

    harness.start_gateway(&[]).await;
    let garbage = [chunk_key("alice", &id(2)), manifest_key("alice", 1)];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = harness.keys("").await;
        if !garbage.iter().any(|g| keys.contains(g)) {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep left {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut expected = vec![
        chunk_key("alice", &id(1)),
        chunk_key("alice", &id(3)),
        chunk_key("alice", &id(4)),
        record_key("alice"),
        manifest_key("alice", 2),
        chunk_key("bob", &id(9)),
    ];
    expected.sort();
    assert_eq!(harness.keys("").await, expected);

    // The next commit collects the newer leftover.
    let alice = harness.client("alice");
    let third = commit(&alice, 2, b"m3", &[id(1), id(3)]).await.unwrap();
    assert_eq!(third.deleted_chunks, 1);
    assert_eq!(
        harness.keys("accounts/alice/chunks/").await.len(),
        2,
        "only generation 3's chunks"
    );
}

/// More uncommitted chunks than the listing budget of two pages: the ids
/// past the listing are asked about one by one, present or not.
#[tokio::test(flavor = "multi_thread")]
async fn has_chunks_answers_past_the_listing_budget() {
    let harness = Harness::start(&[]).await;
    let alice = harness.client("alice");
    let ids: Vec<String> = (0..2500).map(id).collect();
    put_many(&alice, &ids).await;
    // 600 held, 400 not, in no particular order.
    let asked: Vec<String> = (1900..2900).map(id).collect();
    let present = has(&alice, &asked).await.unwrap();
    assert_eq!(present, asked[..600]);
}

/// Latency of `HasChunks` for 1,000 ids, next to 1,000 raw HEADs:
/// `cargo nextest run --workspace -E 'test(has_chunks_latency)'
/// --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn has_chunks_latency() {
    let harness = Harness::start(&[]).await;
    for total in [1000u64, 5000] {
        for committed in [true, false] {
            let account = format!("acct{total}{committed}");
            let client = harness.client(&account);
            let ids: Vec<String> = (0..total).map(id).collect();
            put_many(&client, &ids).await;
            if committed {
                commit(&client, 0, b"m", &ids).await.unwrap();
            }
            let mut sorted = ids.clone();
            sorted.sort();
            let state = if committed {
                "committed"
            } else {
                "uploaded, uncommitted"
            };
            for (order, asked) in [("unsorted", &ids[..1000]), ("sorted", &sorted[..1000])] {
                let rounds = 5;
                let started = Instant::now();
                for _ in 0..rounds {
                    assert_eq!(has(&client, asked).await.unwrap().len(), 1000);
                }
                println!(
                    "HasChunks, 1000 {order} ids of {total} {state} chunks: {:?} per call",
                    started.elapsed() / rounds
                );
            }
            let started = Instant::now();
            futures::stream::iter(ids[..1000].iter())
                .for_each_concurrent(64, |chunk_id| {
                    let s3 = harness.s3_client.clone();
                    let key = chunk_key(&account, chunk_id);
                    async move {
                        s3.head_object()
                            .bucket(BUCKET)
                            .key(key)
                            .send()
                            .await
                            .unwrap();
                    }
                })
                .await;
            println!("1000 raw HEADs, 64 at once: {:?}", started.elapsed());
        }
    }
}
