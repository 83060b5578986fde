//! Configuration: clap arguments with env fallbacks; the defaults run the
//! local stack with no flags.

use std::net::SocketAddr;
use std::time::Duration;

use account_token::VerifierArgs;
use clap::{Args, Parser};
use rpc::{MetricsArgs, ServerTls};
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
    pub s3_timeouts: S3Timeouts,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub fleet: Fleet,
    #[command(flatten)]
    pub metrics: MetricsArgs,
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

/// How long the gateway waits for object storage before a call fails with
/// UNAVAILABLE instead of hanging.
#[derive(Debug, Clone, Args)]
pub struct S3Timeouts {
    /// Time to open a connection to object storage.
    #[arg(long = "s3-connect-timeout", env = "S3_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect: Duration,
    /// Longest wait for the next bytes of a response.
    #[arg(long = "s3-read-timeout", env = "S3_READ_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub read: Duration,
    /// Longest single attempt of an S3 operation (a part of 8 MiB included).
    #[arg(long = "s3-attempt-timeout", env = "S3_ATTEMPT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub attempt: Duration,
    /// Longest S3 operation, retries included.
    #[arg(long = "s3-operation-timeout", env = "S3_OPERATION_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub operation: Duration,
}

/// Running as one of several gateways over one object store.
#[derive(Debug, Clone, Args)]
pub struct Fleet {
    /// How often the object storage is probed; health says NOT_SERVING
    /// while the probe fails.
    #[arg(long, env = "BLOB_GATEWAY_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// How often every account is swept for packs and manifests no commit
    /// references.
    #[arg(long, env = "BLOB_GATEWAY_SWEEP_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// An unreferenced pack or manifest younger than this is never swept:
    /// another gateway may be committing it.
    #[arg(long, env = "BLOB_GATEWAY_SWEEP_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub sweep_grace: Duration,
    /// Longest a v3 call may run before it ends with DEADLINE_EXCEEDED.
    #[arg(long, env = "BLOB_GATEWAY_REQUEST_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// After SIGTERM, running calls get this long to finish; then the
    /// gateway stops anyway.
    #[arg(long, env = "BLOB_GATEWAY_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
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
    /// Largest pack a v3 upload may declare, in bytes.
    #[arg(long, env = "BLOB_GATEWAY_MAX_PACK_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_pack_bytes: u64,
    /// Most packs one v3 commit may reference.
    #[arg(long, env = "BLOB_GATEWAY_MAX_COMMIT_PACKS", default_value_t = 16_384)]
    pub max_commit_packs: usize,
    /// Sealed bytes one account may occupy: v2, its committed generation
    /// (chunks + manifest); v3, committed and uncommitted packs + manifest.
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
