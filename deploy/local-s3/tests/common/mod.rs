//! The harness every integration test shares: a `local-s3` server started in-process on
//! an ephemeral port over a temporary directory, and a real `aws-sdk-s3` client
//! configured as the gateway configures it.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use local_s3::{Config, Server, TestOptions};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

pub const BUCKET: &str = "e2e-backups";
pub const ACCESS_KEY: &str = "test-access";
pub const SECRET_KEY: &str = "test-secret";
pub const MIB: usize = 1024 * 1024;

pub struct Harness {
    pub server: Server,
    pub client: Client,
    pub dir: TempDir,
}

pub async fn start() -> Harness {
    start_with(&TestOptions::default()).await
}

pub async fn start_with(test: &TestOptions) -> Harness {
    start_in(tempfile::tempdir().expect("tempdir"), test).await
}

/// Starts a server over `dir` (its data directory is `dir/s3`), which may hold the data
/// of an earlier server.
pub async fn start_in(dir: TempDir, test: &TestOptions) -> Harness {
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("s3"),
        access_key: ACCESS_KEY.to_owned(),
        secret_key: SECRET_KEY.to_owned(),
        bucket: BUCKET.to_owned(),
    };
    let server = local_s3::serve_with(&config, test)
        .await
        .expect("server starts");
    let client = client(&server.endpoint(), ACCESS_KEY, SECRET_KEY);
    Harness {
        server,
        client,
        dir,
    }
}

/// Configured as the gateway configures it: endpoint override, path-style addressing,
/// static credentials. The SDK's default checksum behaviour (CRC32 trailers on uploads,
/// validation on downloads) is left on: s3s handles it, and the gateway uses it.
pub fn client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "static",
        ))
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

pub fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Every file (not directory) under `dir`, recursively, as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    files.sort();
    files
}

impl Harness {
    /// The server's data directory (buckets and `s3s-fs`'s files in its root).
    pub fn data_dir(&self) -> &Path {
        self.server.data_dir()
    }

    pub async fn put(&self, key: &str, data: &[u8]) -> String {
        self.client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"))
            .e_tag
            .expect("put returns an ETag")
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        self.get_range(key, None).await
    }

    pub async fn get_range(&self, key: &str, range: Option<&str>) -> Vec<u8> {
        let resp = self
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .set_range(range.map(str::to_owned))
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key} {range:?}: {e:?}"));
        resp.body
            .collect()
            .await
            .expect("read body")
            .into_bytes()
            .to_vec()
    }

    /// The ETag HEAD reports for `key`.
    pub async fn head_e_tag(&self, key: &str) -> String {
        self.client
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e:?}"))
            .e_tag
            .expect("head returns an ETag")
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let resp = self
            .client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        resp.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}
