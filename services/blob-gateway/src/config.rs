//! Configuration: clap arguments with env fallbacks; the defaults run the
//! local stack with no flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};
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
    /// File holding the account-token signing key (64 hex digits; created if missing).
    #[arg(
        long,
        env = "E2EB_TOKEN_KEY_FILE",
        default_value = ".state/token-signing.key"
    )]
    pub token_key_file: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub log: LogArgs,
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
    /// Largest blob the gateway stores, in bytes.
    #[arg(long, env = "BLOB_GATEWAY_MAX_BLOB_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_blob_bytes: u64,
    /// Bytes per S3 multipart part; blobs larger than this use multipart uploads.
    #[arg(long, env = "BLOB_GATEWAY_PART_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub part_bytes: usize,
}
