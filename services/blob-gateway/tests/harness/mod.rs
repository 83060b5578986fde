//! The harness of the gateway's integration tests: local S3 and the
//! gateway in-process on ephemeral ports (the gateway over TLS with dev
//! certificates), a tonic client with account tokens from a test account
//! authority, and direct `aws-sdk-s3` access to the bucket.

#![allow(dead_code)] // each test binary uses part of the harness

use std::time::Duration;

use account_token::{AccountId, Audience, Authority, BearerToken};
use aws_sdk_s3::primitives::ByteStream;
use blob_gateway::config::Config;
use clap::Parser;
use e2eb_proto::storage::v2::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v2::{
    ChunkHeader, CommitRequest, CommitResponse, GetBackupRequest, GetChunkRequest,
    GetManifestRequest, HasChunksRequest, PutChunkRequest, put_chunk_request,
};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub const BUCKET: &str = "e2e-backups";
pub const MIB: usize = 1024 * 1024;

pub struct Harness {
    dir: tempfile::TempDir,
    s3: Option<local_s3::Server>,
    s3_config: local_s3::Config,
    s3_test: local_s3::TestOptions,
    s3_endpoint: String,
    pub s3_client: aws_sdk_s3::Client,
    pub authority: Authority,
    trust: rpc::Trust,
    gateway: Option<Gateway>,
}

pub struct Gateway {
    pub endpoint: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    pub async fn start(flags: &[&str]) -> Self {
        Self::start_with(flags, local_s3::TestOptions::default()).await
    }

    /// [`Harness::start`] with local S3's test options (a capacity).
    pub async fn start_with(flags: &[&str], s3_test: local_s3::TestOptions) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut s3_config = local_s3::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("s3"),
            access_key: "e2eb-dev".into(),
            secret_key: "e2eb-dev-secret".into(),
            bucket: BUCKET.into(),
        };
        let s3 = local_s3::serve_with(&s3_config, &s3_test)
            .await
            .expect("local S3 starts");
        // A restart reuses the port, so running gateways find it again.
        s3_config.listen = s3.local_addr();
        let s3_endpoint = s3.endpoint();
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
        let authority =
            Authority::load_or_create(&dir.path().join("authority/token.key")).expect("a key");
        let tls = dir.path().join("tls");
        rpc::dev_certs::generate(&tls, &[blob_gateway::SERVICE]).expect("dev certificates");
        let trust = rpc::Trust::from_ca_file(&rpc::dev_certs::ca_path(&tls)).expect("the CA");
        let mut harness = Self {
            dir,
            s3: Some(s3),
            s3_config,
            s3_test,
            s3_endpoint,
            s3_client,
            authority,
            trust,
            gateway: None,
        };
        harness.start_gateway(flags).await;
        harness
    }

    pub async fn start_gateway(&mut self, flags: &[&str]) {
        let gateway = self.spawn_gateway(flags).await;
        self.gateway = Some(gateway);
    }

    /// Stops local S3 (the gateways keep running).
    pub async fn stop_s3(&mut self) {
        self.s3.take().expect("local S3 runs").shutdown().await;
    }

    /// Starts local S3 again on its port, with its data.
    pub async fn restart_s3(&mut self) {
        let s3 = local_s3::serve_with(&self.s3_config, &self.s3_test)
            .await
            .expect("local S3 restarts");
        self.s3 = Some(s3);
    }

    /// The flags that point a gateway at this harness's S3, tokens and
    /// certificates (the program name first).
    pub fn gateway_args(&self) -> Vec<String> {
        let public_key = self.dir.path().join("authority/token.pub");
        let tls = self.dir.path().join("tls");
        let cert = rpc::dev_certs::cert_path(&tls, blob_gateway::SERVICE);
        let key = rpc::dev_certs::key_path(&tls, blob_gateway::SERVICE);
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        vec![
            "blob-gateway".into(),
            "--s3-endpoint".into(),
            self.s3_endpoint.clone(),
            "--token-public-key-file".into(),
            path(&public_key),
            "--tls-cert".into(),
            path(&cert),
            "--tls-key".into(),
            path(&key),
        ]
    }

    /// Local S3's address (kept across restarts).
    pub fn s3_addr(&self) -> std::net::SocketAddr {
        self.s3_config.listen
    }

    pub fn trust(&self) -> &rpc::Trust {
        &self.trust
    }

    /// A gateway of its own on the same local S3 (one more replica);
    /// returns once it serves.
    pub async fn spawn_gateway(&self, flags: &[&str]) -> Gateway {
        let mut args = self.gateway_args();
        args.extend(flags.iter().map(|flag| flag.to_string()));
        let config = Config::try_parse_from(args).expect("gateway flags parse");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(blob_gateway::serve(config, listener, async {
            let _ = stopped.await;
        }));
        health_probe::wait_serving(
            &endpoint,
            &self.trust,
            blob_gateway::SERVICE_NAME,
            Duration::from_secs(10),
        )
        .await
        .expect("the gateway serves v2");
        Gateway {
            endpoint,
            stop,
            task,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.gateway.as_ref().expect("a gateway runs").endpoint
    }

    /// A channel to `endpoint` that trusts the test CA.
    pub fn channel(&self, endpoint: &str) -> Channel {
        rpc::endpoint(endpoint, &self.trust, &rpc::ChannelOptions::default())
            .expect("a valid endpoint")
            .connect_lazy()
    }

    /// A blob-gateway token for `account`.
    pub fn token(&self, account: &str) -> String {
        let account = AccountId::new(account).unwrap();
        let token = self
            .authority
            .mint(&account, Audience::BlobGateway, Duration::from_secs(600))
            .unwrap();
        token.expose_secret().to_string()
    }

    pub async fn stop_gateway(&mut self) {
        let gateway = self.gateway.take().expect("a gateway runs");
        gateway.stop().await;
    }
}

impl Gateway {
    /// Stops the gateway and waits until it has.
    pub async fn stop(self) {
        let gateway = self;
        let _ = gateway.stop.send(());
        gateway
            .task
            .await
            .unwrap()
            .expect("the gateway stops cleanly");
    }
}

impl Harness {
    pub fn client_with(&self, token: String) -> Client {
        let endpoint = &self.gateway.as_ref().expect("a gateway runs").endpoint;
        let channel = rpc::endpoint(endpoint, &self.trust, &rpc::ChannelOptions::default())
            .expect("a valid endpoint")
            .connect_lazy();
        BlobGatewayClient::with_interceptor(channel, BearerToken::new(token))
            .max_decoding_message_size(64 * MIB)
    }

    pub fn client(&self, account: &str) -> Client {
        let account = AccountId::new(account).unwrap();
        let token = self
            .authority
            .mint(&account, Audience::BlobGateway, Duration::from_secs(600))
            .unwrap();
        self.client_with(token.expose_secret().to_string())
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
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

    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        self.s3_client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .expect("put an object directly");
    }

    pub async fn get_object(&self, key: &str) -> Vec<u8> {
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

pub type Client = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

/// A chunk id: 64 hex digits spread over the key space like real MACs.
pub fn id(n: u64) -> String {
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
pub fn sealed(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed * 7) as u8)
        .collect()
}

pub fn chunk_key(account: &str, id: &str) -> String {
    format!("accounts/{account}/chunks/{id}")
}

pub fn manifest_key(account: &str, generation: u64) -> String {
    format!("accounts/{account}/manifests/{generation:020}")
}

pub fn record_key(account: &str) -> String {
    format!("accounts/{account}/generation")
}

pub fn header(id: &str, size: usize) -> PutChunkRequest {
    PutChunkRequest {
        part: Some(put_chunk_request::Part::Header(ChunkHeader {
            chunk_id: id.into(),
            size: size as u64,
        })),
    }
}

pub fn data(bytes: &[u8]) -> PutChunkRequest {
    PutChunkRequest {
        part: Some(put_chunk_request::Part::Data(bytes.to_vec())),
    }
}

/// Sends `header` and then `bytes` in 1 MiB messages.
pub async fn put_raw(
    client: &Client,
    id: &str,
    declared: usize,
    bytes: &[u8],
) -> Result<bool, Status> {
    let mut messages = vec![header(id, declared)];
    messages.extend(bytes.chunks(MIB).map(data));
    let response = client
        .clone()
        .put_chunk(futures::stream::iter(messages))
        .await?;
    Ok(response.into_inner().stored)
}

pub async fn put(client: &Client, id: &str, bytes: &[u8]) -> bool {
    put_raw(client, id, bytes.len(), bytes)
        .await
        .expect("the chunk is accepted")
}

/// The chunk's bytes and the largest message it came in.
pub async fn get(client: &Client, id: &str) -> Result<(Vec<u8>, usize), Status> {
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

pub async fn has(client: &Client, ids: &[String]) -> Result<Vec<String>, Status> {
    let response = client
        .clone()
        .has_chunks(HasChunksRequest {
            chunk_ids: ids.to_vec(),
        })
        .await?;
    Ok(response.into_inner().present)
}

pub async fn commit(
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

pub async fn generation(client: &Client) -> Result<u64, Status> {
    let response = client.clone().get_backup(GetBackupRequest {}).await?;
    Ok(response.into_inner().generation)
}

pub async fn manifest(client: &Client, generation: u64) -> Result<Vec<u8>, Status> {
    let response = client
        .clone()
        .get_manifest(GetManifestRequest { generation })
        .await?;
    Ok(response.into_inner().manifest)
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Err(status) if status.code() == code => status,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

pub async fn put_many(client: &Client, ids: &[String]) {
    futures::stream::iter(ids)
        .for_each_concurrent(32, |chunk_id| async move {
            put(client, chunk_id, b"x").await;
        })
        .await;
}
