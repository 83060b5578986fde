//! The v2 gateway against the real local S3 server, both in-process on
//! ephemeral ports, through a real tonic client with account tokens.
//! Bucket contents are checked with `aws-sdk-s3` directly.

use std::time::{Duration, Instant};

use account_token::{AccountId, SigningKey};
use aws_sdk_s3::primitives::ByteStream;
use blob_gateway::config::Config;
use clap::Parser;
use e2eb_proto::storage::v2::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v2::{
    ChunkHeader, CommitRequest, CommitResponse, DeleteBackupRequest, GetBackupRequest,
    GetChunkRequest, GetManifestRequest, HasChunksRequest, PutChunkRequest, put_chunk_request,
};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const BUCKET: &str = "e2e-backups";
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------- harness

struct Harness {
    dir: tempfile::TempDir,
    s3: local_s3::Server,
    s3_client: aws_sdk_s3::Client,
    key: SigningKey,
    gateway: Option<Gateway>,
}

struct Gateway {
    endpoint: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    async fn start(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let s3 = local_s3::serve(&local_s3::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("s3"),
            access_key: "e2eb-dev".into(),
            secret_key: "e2eb-dev-secret".into(),
            bucket: BUCKET.into(),
        })
        .await
        .expect("local S3 starts");
        let credentials =
            aws_sdk_s3::config::Credentials::new("e2eb-dev", "e2eb-dev-secret", None, None, "test");
        let s3_client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .endpoint_url(s3.endpoint())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .credentials_provider(credentials)
                .force_path_style(true)
                .build(),
        );
        let key = SigningKey::load_or_create(&dir.path().join("token.key")).expect("a key");
        let mut harness = Self {
            dir,
            s3,
            s3_client,
            key,
            gateway: None,
        };
        harness.start_gateway(flags).await;
        harness
    }

    async fn start_gateway(&mut self, flags: &[&str]) {
        let key_file = self.dir.path().join("token.key");
        let endpoint = self.s3.endpoint();
        let mut args = vec![
            "blob-gateway",
            "--s3-endpoint",
            &endpoint,
            "--token-key-file",
            key_file.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        let config = Config::try_parse_from(args).expect("gateway flags parse");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(blob_gateway::serve(config, listener, async {
            let _ = stopped.await;
        }));
        health_probe::wait_serving(
            &endpoint,
            blob_gateway::SERVICE_NAME_V2,
            Duration::from_secs(10),
        )
        .await
        .expect("the gateway serves v2");
        self.gateway = Some(Gateway {
            endpoint,
            stop,
            task,
        });
    }

    async fn stop_gateway(&mut self) {
        let gateway = self.gateway.take().expect("a gateway runs");
        let _ = gateway.stop.send(());
        gateway
            .task
            .await
            .unwrap()
            .expect("the gateway stops cleanly");
    }

    fn client_with(&self, token: String) -> Client {
        let endpoint = &self.gateway.as_ref().expect("a gateway runs").endpoint;
        let channel = Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect_lazy();
        let bearer = Bearer(format!("Bearer {token}").parse().unwrap());
        BlobGatewayClient::with_interceptor(channel, bearer).max_decoding_message_size(64 * MIB)
    }

    fn client(&self, account: &str) -> Client {
        let account = AccountId::new(account).unwrap();
        self.client_with(self.key.mint(&account, Duration::from_secs(600)))
    }

    /// Every key under `prefix`, sorted.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut pages = self
            .s3_client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("list the bucket");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        keys.sort();
        keys
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        self.s3_client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .expect("put an object directly");
    }

    async fn get_object(&self, key: &str) -> Vec<u8> {
        let object = self
            .s3_client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("get an object directly");
        object.body.collect().await.unwrap().to_vec()
    }
}

#[derive(Clone)]
struct Bearer(AsciiMetadataValue);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", MetadataValue::clone(&self.0));
        Ok(request)
    }
}

type Client = BlobGatewayClient<InterceptedService<Channel, Bearer>>;

/// A chunk id: 64 hex digits spread over the key space like real MACs.
fn id(n: u64) -> String {
    let mut state = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..4)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// Stand-in sealed bytes.
fn sealed(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed * 7) as u8)
        .collect()
}

fn chunk_key(account: &str, id: &str) -> String {
    format!("accounts/{account}/chunks/{id}")
}

fn manifest_key(account: &str, generation: u64) -> String {
    format!("accounts/{account}/manifests/{generation:020}")
}

fn record_key(account: &str) -> String {
    format!("accounts/{account}/generation")
}

fn header(id: &str, size: usize) -> PutChunkRequest {
    PutChunkRequest {
        part: Some(put_chunk_request::Part::Header(ChunkHeader {
            chunk_id: id.into(),
            size: size as u64,
        })),
    }
}

fn data(bytes: &[u8]) -> PutChunkRequest {
    PutChunkRequest {
        part: Some(put_chunk_request::Part::Data(bytes.to_vec())),
    }
}

/// Sends `header` and then `bytes` in 1 MiB messages.
async fn put_raw(client: &Client, id: &str, declared: usize, bytes: &[u8]) -> Result<bool, Status> {
    let mut messages = vec![header(id, declared)];
    messages.extend(bytes.chunks(MIB).map(data));
    let response = client
        .clone()
        .put_chunk(futures::stream::iter(messages))
        .await?;
    Ok(response.into_inner().stored)
}

async fn put(client: &Client, id: &str, bytes: &[u8]) -> bool {
    put_raw(client, id, bytes.len(), bytes)
        .await
        .expect("the chunk is accepted")
}

/// The chunk's bytes and the largest message it came in.
async fn get(client: &Client, id: &str) -> Result<(Vec<u8>, usize), Status> {
    let mut stream = client
        .clone()
        .get_chunk(GetChunkRequest {
            chunk_id: id.into(),
        })
        .await?
        .into_inner();
    let (mut bytes, mut largest) = (Vec::new(), 0);
    while let Some(message) = stream.next().await {
        let message = message?;
        largest = largest.max(message.data.len());
        bytes.extend_from_slice(&message.data);
    }
    Ok((bytes, largest))
}

async fn has(client: &Client, ids: &[String]) -> Result<Vec<String>, Status> {
    let response = client
        .clone()
        .has_chunks(HasChunksRequest {
            chunk_ids: ids.to_vec(),
        })
        .await?;
    Ok(response.into_inner().present)
}

async fn commit(
    client: &Client,
    expected: u64,
    manifest: &[u8],
    ids: &[String],
) -> Result<CommitResponse, Status> {
    let response = client
        .clone()
        .commit(CommitRequest {
            expected_generation: expected,
            manifest: manifest.to_vec(),
            chunk_ids: ids.to_vec(),
        })
        .await?;
    Ok(response.into_inner())
}

async fn generation(client: &Client) -> Result<u64, Status> {
    let response = client.clone().get_backup(GetBackupRequest {}).await?;
    Ok(response.into_inner().generation)
}

async fn manifest(client: &Client, generation: u64) -> Result<Vec<u8>, Status> {
    let response = client
        .clone()
        .get_manifest(GetManifestRequest { generation })
        .await?;
    Ok(response.into_inner().manifest)
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Err(status) if status.code() == code => status,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------- tests

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

    let stranger =
        SigningKey::generate().mint(&AccountId::new("alice").unwrap(), Duration::from_secs(60));
    let forged = harness.client_with(stranger);
    assert_code(has(&forged, &[id(1)]).await, Code::Unauthenticated);
    assert_code(get(&forged, &id(1)).await, Code::Unauthenticated);
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

/// Latency of `HasChunks` for 1,000 ids of the previous generation, next to
/// 1,000 raw HEADs. `cargo nextest run -p blob-gateway --run-ignored only
/// --no-capture has_chunks_latency`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn has_chunks_latency() {
    let harness = Harness::start(&[]).await;
    for total in [1000u64, 5000] {
        let account = format!("acct{total}");
        let client = harness.client(&account);
        let ids: Vec<String> = (0..total).map(id).collect();
        futures::stream::iter(ids.iter())
            .for_each_concurrent(32, |chunk_id| {
                let client = client.clone();
                async move {
                    put(&client, chunk_id, b"x").await;
                }
            })
            .await;
        let asked: Vec<String> = ids[..1000].to_vec();
        let mut sorted = ids.clone();
        sorted.sort();
        for (name, asked) in [("unsorted", asked), ("sorted", sorted[..1000].to_vec())] {
            let started = Instant::now();
            let rounds = 5;
            for _ in 0..rounds {
                assert_eq!(has(&client, &asked).await.unwrap().len(), 1000);
            }
            println!(
                "HasChunks, 1000 {name} ids, account holding {total}: {:?} per call",
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
