//! The v3 gateway against the real local S3 server, in-process on
//! ephemeral ports over TLS with account tokens: every status the proto
//! names, two gateways on one S3 racing to commit, health that follows the
//! object storage, a full disk, the sweep of an account that never
//! committed, and a shutdown that does not wait for hung calls.

mod harness;

use std::time::{Duration, Instant};

use account_token::BearerToken;
use e2eb_proto::storage::v3::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v3::{
    CommitRequest, CommitResponse, DeleteBackupRequest, GetBackupRequest, GetBackupResponse,
    GetManifestRequest, GetPackRequest, ListUploadsRequest, PackInfo, PutPackRequest,
    put_pack_request,
};
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use harness::{Harness, MIB, assert_code};

type V3 = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

fn v3(harness: &Harness, endpoint: &str, account: &str) -> V3 {
    BlobGatewayClient::with_interceptor(
        harness.channel(endpoint),
        BearerToken::new(harness.token(account)),
    )
    .max_decoding_message_size(64 * MIB)
}

fn name(n: u64) -> String {
    format!("{n:016x}").repeat(4)
}

fn bytes(seed: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| i.wrapping_mul(31).wrapping_add(seed * 7) as u8)
        .collect()
}

fn header(name: &str, size: u64) -> PutPackRequest {
    PutPackRequest {
        part: Some(put_pack_request::Part::Header(PackInfo {
            name: name.into(),
            size,
        })),
    }
}

fn data(bytes: &[u8]) -> PutPackRequest {
    PutPackRequest {
        part: Some(put_pack_request::Part::Data(bytes.to_vec())),
    }
}

async fn put_raw(
    client: &V3,
    name: &str,
    declared: u64,
    body: &[u8],
    message: usize,
) -> Result<(), Status> {
    let mut messages = vec![header(name, declared)];
    messages.extend(body.chunks(message).map(data));
    client
        .clone()
        .put_pack(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

/// Uploads a pack of the padded size of `len` and returns its bytes.
async fn put(client: &V3, name: &str, seed: u64, len: u64) -> Vec<u8> {
    let body = bytes(seed, padme::padded_len(len));
    put_raw(client, name, body.len() as u64, &body, MIB)
        .await
        .expect("the pack is stored");
    body
}

async fn get(
    client: &V3,
    name: &str,
    offset: u64,
    length: u64,
) -> Result<(Vec<u8>, usize), Status> {
    let mut stream = client
        .clone()
        .get_pack(GetPackRequest {
            name: name.into(),
            offset,
            length,
        })
        .await?
        .into_inner();
    let (mut out, mut largest) = (Vec::new(), 0);
    while let Some(message) = stream.next().await {
        let message = message?;
        largest = largest.max(message.data.len());
        out.extend_from_slice(&message.data);
    }
    Ok((out, largest))
}

fn manifest(seed: u8) -> Vec<u8> {
    vec![seed; 4096]
}

async fn commit(
    client: &V3,
    expected: u64,
    seed: u8,
    packs: &[String],
    abandoned: &[String],
) -> Result<CommitResponse, Status> {
    client
        .clone()
        .commit(CommitRequest {
            expected_generation: expected,
            manifest: manifest(seed),
            packs: packs.to_vec(),
            abandoned: abandoned.to_vec(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn backup(client: &V3) -> Result<GetBackupResponse, Status> {
    client
        .clone()
        .get_backup(GetBackupRequest {})
        .await
        .map(|r| r.into_inner())
}

async fn manifest_of(client: &V3, generation: u64) -> Result<Vec<u8>, Status> {
    let mut stream = client
        .clone()
        .get_manifest(GetManifestRequest { generation })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        out.extend_from_slice(&message?.data);
    }
    Ok(out)
}

fn reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get("e2eb-reason")
        .and_then(|v| v.to_str().ok())
}

/// Waits for `done`, polling, at most `within`.
async fn wait_until<F, Fut>(within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn packs_commits_and_every_status_the_proto_names() {
    let harness = Harness::start(&["--quota-bytes", "40000000"]).await;
    let alice = v3(&harness, harness.endpoint(), "alice");

    // Above the 8 MiB part size: a multipart upload; then ranged reads.
    let large = put(&alice, &name(1), 1, 12 * MIB as u64 + 5).await;
    let small = put(&alice, &name(2), 2, 3000).await;
    let (whole, largest) = get(&alice, &name(1), 0, 0).await.unwrap();
    assert!(whole == large, "the pack reads back whole");
    assert_eq!(
        largest, MIB,
        "downloads stream in messages of at most 1 MiB"
    );
    let (part, _) = get(&alice, &name(1), 9 * MIB as u64, 100).await.unwrap();
    assert_eq!(part, large[9 * MIB..9 * MIB + 100]);
    let uploads = alice
        .clone()
        .list_uploads(ListUploadsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uploads.packs.len(), 2);

    // NOT_FOUND: no backup, unknown pack.
    assert_code(backup(&alice).await, Code::NotFound);
    assert_code(get(&alice, &name(9), 0, 0).await, Code::NotFound);
    // INVALID_ARGUMENT: bad name, unpadded size, size mismatch (nothing kept), a range outside.
    assert_code(
        put_raw(&alice, "../x", 4096, &[0; 4096], MIB).await,
        Code::InvalidArgument,
    );
    assert_code(
        put_raw(&alice, &name(3), 1001, &[0; 1001], MIB).await,
        Code::InvalidArgument,
    );
    assert_code(
        put_raw(&alice, &name(3), 4096, &[0; 4000], MIB).await,
        Code::InvalidArgument,
    );
    let past_part = bytes(3, 10 * MIB as u64);
    let declared = padme::padded_len(11 * MIB as u64);
    assert_code(
        put_raw(&alice, &name(3), declared, &past_part, MIB).await,
        Code::InvalidArgument,
    );
    assert_code(
        get(&alice, &name(2), 4000, 1000).await,
        Code::InvalidArgument,
    );
    // RESOURCE_EXHAUSTED: a message over 1 MiB, a pack over the quota.
    let big = bytes(4, 2 * MIB as u64);
    assert_code(
        put_raw(&alice, &name(3), big.len() as u64, &big, 2 * MIB).await,
        Code::ResourceExhausted,
    );
    let over = padme::padded_len(30 * MIB as u64);
    assert_code(
        put_raw(&alice, &name(3), over, &[], MIB).await,
        Code::ResourceExhausted,
    );
    let packs_kept = harness.keys("v3/alice/packs/").await;
    assert_eq!(
        packs_kept.len(),
        2,
        "refused uploads keep nothing: {packs_kept:?}"
    );

    // FAILED_PRECONDITION with its reason: missing packs, a generation conflict.
    let status = assert_code(
        commit(&alice, 0, 1, &[name(1), name(8)], &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), Some("missing-packs"), "{status:?}");
    let status = assert_code(
        commit(&alice, 4, 1, &[name(1)], &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), Some("generation-conflict"), "{status:?}");

    let first = commit(&alice, 0, 1, &[name(1)], &[]).await.unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.stored_bytes, large.len() as u64 + 4096);
    let shown = backup(&alice).await.unwrap();
    assert_eq!(shown.generation, 1);
    assert_eq!(shown.packs.len(), 1);
    assert_eq!(shown.uncommitted_bytes, small.len() as u64);
    assert_eq!(manifest_of(&alice, 1).await.unwrap(), manifest(1));
    assert_code(manifest_of(&alice, 2).await, Code::NotFound);
    // A committed pack is never replaced.
    let status = assert_code(
        put_raw(&alice, &name(1), 4096, &[0; 4096], MIB).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), Some("pack-committed"));

    // The next generation drops pack 1 and the abandoned upload is deleted.
    let third = put(&alice, &name(3), 3, 5000).await;
    let second = commit(&alice, 1, 2, &[name(3)], &[name(2)]).await.unwrap();
    assert_eq!((second.generation, second.deleted_packs), (2, 2));
    assert_eq!(
        harness.keys("v3/alice/packs/").await,
        [format!("v3/alice/packs/{}", name(3))]
    );
    assert_eq!(harness.keys("v3/alice/manifests/").await.len(), 1);
    assert_eq!(get(&alice, &name(3), 0, 0).await.unwrap().0, third);

    // UNAUTHENTICATED: no valid token.
    let forged = BlobGatewayClient::with_interceptor(
        harness.channel(harness.endpoint()),
        BearerToken::new("v4.public.nope".to_string()),
    );
    assert_code(backup(&forged).await, Code::Unauthenticated);

    let deleted = alice
        .clone()
        .delete_backup(DeleteBackupRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_objects, 3);
    assert_code(backup(&alice).await, Code::NotFound);
    assert!(harness.keys("v3/alice/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_s3_committing_at_once_exactly_one_wins() {
    let harness = Harness::start(&[]).await;
    let second = harness.spawn_gateway(&[]).await;
    let a = v3(&harness, harness.endpoint(), "alice");
    let b = v3(&harness, &second.endpoint, "alice");
    let mut committed = 0;
    for round in 0..8u64 {
        put(&a, &name(100 + round), round, 5000).await;
        put(&b, &name(200 + round), round, 5000).await;
        let (pa, pb) = ([name(100 + round)], [name(200 + round)]);
        let (ra, rb) = tokio::join!(
            commit(&a, committed, 1, &pa, &[]),
            commit(&b, committed, 2, &pb, &[]),
        );
        let wins: Vec<&CommitResponse> = [&ra, &rb]
            .into_iter()
            .filter_map(|r| r.as_ref().ok())
            .collect();
        assert_eq!(wins.len(), 1, "round {round}: {ra:?} {rb:?}");
        let loser = [ra.as_ref(), rb.as_ref()]
            .into_iter()
            .find_map(|r| r.err())
            .unwrap();
        assert_eq!(loser.code(), Code::FailedPrecondition);
        assert_eq!(reason(loser), Some("generation-conflict"), "{loser:?}");
        committed = wins[0].generation;
        assert_eq!(committed, round + 1);
        // The committed generation is whole, whichever gateway won.
        let shown = backup(&a).await.unwrap();
        assert_eq!(shown.generation, committed);
        let winner = &shown.packs[0].name;
        assert!(get(&b, winner, 0, 0).await.is_ok());
        let seed = if ra.is_ok() { 1 } else { 2 };
        assert_eq!(manifest_of(&b, committed).await.unwrap(), manifest(seed));
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_object_storage_and_calls_end_instead_of_hanging() {
    let mut harness = Harness::start(&[
        "--health-interval",
        "100ms",
        "--s3-operation-timeout",
        "2s",
        "--s3-attempt-timeout",
        "1s",
        "--s3-connect-timeout",
        "500ms",
    ])
    .await;
    let alice = v3(&harness, harness.endpoint(), "alice");
    let endpoint = harness.endpoint().to_string();
    let service = blob_gateway::SERVICE_NAME_V3;
    assert!(
        health_probe::is_serving(&endpoint, harness.trust(), service)
            .await
            .unwrap()
    );

    harness.stop_s3().await;
    wait_until(Duration::from_secs(10), || async {
        !health_probe::is_serving(&endpoint, harness.trust(), service)
            .await
            .unwrap_or(true)
    })
    .await;
    let started = Instant::now();
    assert_code(backup(&alice).await, Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    harness.restart_s3().await;
    wait_until(Duration::from_secs(10), || async {
        health_probe::is_serving(&endpoint, harness.trust(), service)
            .await
            .unwrap_or(false)
    })
    .await;
    assert_code(backup(&alice).await, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_its_own_error_and_the_backup_survives() {
    let test = local_s3::TestOptions {
        test_capacity_bytes: Some(3 * MIB as u64),
    };
    let harness = Harness::start_with(&[], test).await;
    let alice = v3(&harness, harness.endpoint(), "alice");
    let pack = put(&alice, &name(1), 1, 200_000).await;
    commit(&alice, 0, 1, &[name(1)], &[]).await.unwrap();

    let big = bytes(2, padme::padded_len(4 * MIB as u64));
    let status = assert_code(
        put_raw(&alice, &name(2), big.len() as u64, &big, MIB).await,
        Code::ResourceExhausted,
    );
    assert!(
        status.message().contains("object storage is full"),
        "{status:?}"
    );
    assert_eq!(backup(&alice).await.unwrap().generation, 1);
    assert_eq!(get(&alice, &name(1), 0, 0).await.unwrap().0, pack);
    assert_eq!(manifest_of(&alice, 1).await.unwrap(), manifest(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_removes_orphans_of_an_account_that_never_committed() {
    let mut harness = Harness::start(&[]).await;
    let orphan = format!("v3/bob/packs/{}", name(5));
    harness.put_object(&orphan, vec![1; 4096]).await;
    harness.stop_gateway().await;
    // Default grace (1 h): a fresh orphan survives a start.
    harness.start_gateway(&["--sweep-interval", "100ms"]).await;
    let alice = v3(&harness, harness.endpoint(), "alice");
    put(&alice, &name(6), 6, 4096).await;
    commit(&alice, 0, 1, &[name(6)], &[]).await.unwrap();
    assert_eq!(harness.keys("v3/bob/").await, [orphan]);
    harness.stop_gateway().await;

    harness
        .start_gateway(&["--sweep-interval", "100ms", "--sweep-grace", "0s"])
        .await;
    wait_until(Duration::from_secs(10), || async {
        harness.keys("v3/bob/").await.is_empty()
    })
    .await;
    assert_eq!(
        backup(&alice_again(&harness)).await.unwrap().generation,
        1,
        "committed packs stay"
    );
    assert_eq!(harness.keys("v3/alice/packs/").await.len(), 1);
}

fn alice_again(harness: &Harness) -> V3 {
    v3(harness, harness.endpoint(), "alice")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_gateway_does_not_wait_past_its_grace_for_hung_calls() {
    let mut harness = Harness::start(&[]).await;
    harness.stop_gateway().await;
    harness
        .start_gateway(&[
            "--shutdown-grace",
            "500ms",
            "--s3-operation-timeout",
            "60s",
            "--s3-attempt-timeout",
            "60s",
            "--s3-read-timeout",
            "60s",
            "--health-interval",
            "1h",
        ])
        .await;
    let alice = alice_again(&harness);
    // A stalled object store: S3's port accepts connections and never
    // answers; the first connection is the call reaching the gateway's S3
    // client.
    harness.stop_s3().await;
    let stalled = tokio::net::TcpListener::bind(harness.s3_addr())
        .await
        .unwrap();
    let (reached, in_flight) = tokio::sync::oneshot::channel::<()>();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut reached = Some(reached);
        while let Ok((socket, _)) = stalled.accept().await {
            held.push(socket);
            if let Some(reached) = reached.take() {
                let _ = reached.send(());
            }
        }
    });
    let call = tokio::spawn(async move { backup(&alice).await });
    in_flight.await.expect("the call reaches object storage");
    let started = Instant::now();
    harness.stop_gateway().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        started.elapsed()
    );
    call.abort();
    hold.abort();
}
