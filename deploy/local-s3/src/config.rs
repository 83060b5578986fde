//! Command-line and environment configuration.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where to listen, where to keep objects, and the one credential that is accepted.
///
/// Every field has a flag and an environment variable; the defaults run the local
/// stack with no flags at all.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (use port 0 for an ephemeral port).
    #[arg(long, env = "LOCAL_S3_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// Directory that holds the buckets; created if missing.
    #[arg(long, env = "LOCAL_S3_DATA_DIR", default_value = ".state/s3")]
    pub data_dir: PathBuf,

    /// Access key id that requests must be signed with (SigV4).
    #[arg(long, env = "LOCAL_S3_ACCESS_KEY", default_value = "e2eb-dev")]
    pub access_key: String,

    /// Secret key that requests must be signed with (SigV4).
    #[arg(
        long,
        env = "LOCAL_S3_SECRET_KEY",
        default_value = "e2eb-dev-secret",
        hide_env_values = true
    )]
    pub secret_key: String,

    /// Bucket created at start if it does not exist yet.
    #[arg(long, env = "LOCAL_S3_BUCKET", default_value = "e2e-backups")]
    pub bucket: String,
}

/// Options for tests only, hidden from `--help`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TestOptions {
    /// Behave as if the data directory were a filesystem of this many bytes: a write
    /// that would make the files under it larger fails as with ENOSPC. Lets a test see
    /// the full-disk answer without mount privileges.
    #[arg(long, env = "LOCAL_S3_TEST_CAPACITY_BYTES", hide = true)]
    pub test_capacity_bytes: Option<u64>,
}

/// Redacts the secret key, so a `?config` in a log line cannot leak it.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("bucket", &self.bucket)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn defaults_run_the_local_stack() {
        // Only meaningful when the environment does not set the variables.
        if std::env::vars().any(|(k, _)| k.starts_with("LOCAL_S3_")) {
            return;
        }
        let cli = Cli::try_parse_from(["local-s3"]).expect("defaults parse");
        assert_eq!(cli.config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cli.config.data_dir, PathBuf::from(".state/s3"));
        assert_eq!(cli.config.access_key, "e2eb-dev");
        assert_eq!(cli.config.secret_key, "e2eb-dev-secret");
        assert_eq!(cli.config.bucket, "e2e-backups");
    }

    #[test]
    fn debug_redacts_the_secret_key() {
        let cli = Cli::try_parse_from(["local-s3", "--secret-key", "hunter2-very-secret"])
            .expect("flags parse");
        let shown = format!("{:?}", cli.config);
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
