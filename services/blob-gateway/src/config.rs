//! Configuration: clap arguments with env fallbacks; the defaults run the
//! local stack with no flags.

use std::net::SocketAddr;

use account_token::VerifierArgs;
use clap::{Args, Parser};
use rpc::ServerTls;
use telemetry::LogArgs;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "blob-gateway",
    about = "The blob gateway: encrypted backup blobs over gRPC, stored in S3"
)]
pub struct Config {
    /// Address of the gRPC server.
    #[arg(long, env = "BLOB_GATEWAY_LISTEN", default_value = "127.0.0.1:50061")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tokens: VerifierArgs,
    #[command(flatten)]
    pub tls: ServerTls,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub log: LogArgs,
    /// Test only: abort the process at this step (see `failpoint.rs`).
    #[arg(long, env = "BLOB_GATEWAY_FAILPOINT", hide = true, value_parser = crate::failpoint::parse)]
    pub failpoint: Option<&'static str>,
}

/// Where the blobs are stored: any S3-compatible endpoint (the local S3
/// server, MinIO, RustFS, AWS S3).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    #[arg(
        long = "s3-endpoint",
        env = "S3_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    pub endpoint: String,
    #[arg(long = "s3-bucket", env = "S3_BUCKET", default_value = "e2e-backups")]
    pub bucket: String,
    #[arg(long = "s3-region", env = "S3_REGION", default_value = "us-east-1")]
    pub region: String,
    #[arg(
        long = "s3-access-key",
        env = "S3_ACCESS_KEY",
        default_value = "e2eb-dev"
    )]
    pub access_key: String,
    #[arg(
        long = "s3-secret-key",
        env = "S3_SECRET_KEY",
        default_value = "e2eb-dev-secret",
        hide_env_values = true
    )]
    pub secret_key: String,
    /// Create the bucket at start if it does not exist.
    #[arg(long = "s3-create-bucket", env = "S3_CREATE_BUCKET", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_bucket: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest gRPC message the gateway accepts, in bytes.
    #[arg(long, env = "BLOB_GATEWAY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Bytes per S3 multipart part; blobs larger than this use multipart uploads.
    #[arg(long, env = "BLOB_GATEWAY_PART_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub part_bytes: usize,
    /// Largest chunk the v2 service stores, in bytes.
    #[arg(long, env = "BLOB_GATEWAY_MAX_CHUNK_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_chunk_bytes: u64,
    /// Largest sealed manifest a v2 commit may carry, in bytes.
    #[arg(long, env = "BLOB_GATEWAY_MAX_MANIFEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_manifest_bytes: u64,
    /// Most chunk ids one v2 commit may reference. With the manifest limit it
    /// sets the largest v2 message the gateway accepts (a commit is one message).
    #[arg(
        long,
        env = "BLOB_GATEWAY_MAX_COMMIT_CHUNKS",
        default_value_t = 262_144
    )]
    pub max_commit_chunks: usize,
    /// Sealed bytes one account's committed generation may occupy (chunks + manifest).
    #[arg(long, env = "BLOB_GATEWAY_QUOTA_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub quota_bytes: u64,
}

/// Bytes one chunk id takes in a `CommitRequest` (tag, length, 64 digits).
const COMMIT_ID_WIRE_BYTES: usize = 66;

impl Limits {
    /// The largest message: at least the general message limit, and
    /// large enough for a commit that carries the largest manifest and the
    /// most chunk ids (a commit is one message, as is a manifest download).
    pub fn message_limit(&self) -> usize {
        let commit = usize::try_from(self.max_manifest_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(self.max_commit_chunks.saturating_mul(COMMIT_ID_WIRE_BYTES))
            .saturating_add(1024);
        self.max_message_bytes.max(commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_limit_fits_the_largest_commit() {
        let config = Config::try_parse_from(["blob-gateway"]).expect("defaults parse");
        let limits = &config.limits;
        let ids = vec!["ab".repeat(32); limits.max_commit_chunks];
        let request = e2eb_proto::storage::v2::CommitRequest {
            expected_generation: u64::MAX - 1,
            manifest: vec![7; limits.max_manifest_bytes as usize],
            chunk_ids: ids,
        };
        let size = prost::Message::encoded_len(&request);
        assert!(size <= limits.message_limit(), "{size}");
        assert!(limits.message_limit() >= limits.max_message_bytes);
    }

    #[test]
    fn unknown_failpoints_are_refused_at_start() {
        let error = Config::try_parse_from(["blob-gateway", "--failpoint", "commit:oops"])
            .expect_err("a misspelt failpoint");
        assert!(error.to_string().contains("commit:mid-gc"), "{error}");
        let config = Config::try_parse_from(["blob-gateway", "--failpoint", "commit:mid-gc"])
            .expect("a known failpoint");
        assert_eq!(config.failpoint, Some("commit:mid-gc"));
    }
}
