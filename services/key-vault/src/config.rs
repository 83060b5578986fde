//! Configuration: clap arguments with env fallbacks; the defaults run the
//! local stack with no flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use account_token::VerifierArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rpc::MetricsArgs;
use rpc::ServerTls;
use telemetry::LogArgs;

use crate::sealing::Pkcs11Config;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "key-vault",
    about = "The Backup Key Vault: OPAQUE password protection of backup keys with a guess limit"
)]
pub struct Config {
    /// Address of the gRPC server.
    #[arg(long, env = "KEY_VAULT_LISTEN", default_value = "127.0.0.1:50062")]
    pub listen: SocketAddr,
    /// Where records live: `sqlite` (one vault, the file below) or `etcd`
    /// (several replicas sharing one etcd cluster).
    #[arg(long, env = "KEY_VAULT_STORE", value_enum, default_value = "sqlite")]
    pub store: StoreKind,
    /// The SQLite database holding records, login sessions, tickets and the
    /// sealed vault secrets (created if missing, mode 0600).
    #[arg(long, env = "KEY_VAULT_DB", default_value = ".state/vault/vault.db")]
    pub db: PathBuf,
    /// The etcd cluster's client URLs, comma-separated (any member will do;
    /// the client fails over between them).
    #[arg(
        long,
        env = "KEY_VAULT_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix of this vault fleet in etcd.
    #[arg(long, env = "KEY_VAULT_ETCD_PREFIX", default_value = "/e2eb/vault")]
    pub etcd_prefix: String,
    #[command(flatten)]
    pub tokens: VerifierArgs,
    #[command(flatten)]
    pub tls: ServerTls,
    /// What seals the vault secrets at rest: `file` (the key file below) or
    /// `pkcs11` (an AES-256 key inside a PKCS#11 token that never leaves
    /// it; see the --pkcs11-* flags and `key-vault pkcs11-init`).
    #[arg(long, env = "KEY_VAULT_SEALING", value_enum, default_value = "file")]
    pub sealing: SealingKind,
    /// File holding the key that seals the vault secrets at rest with
    /// `--sealing file` (64 hex digits; created with mode 0600 if missing).
    /// Losing it makes every record unusable; a different key refuses to start.
    #[arg(
        long,
        env = "KEY_VAULT_SEALING_KEY_FILE",
        default_value = ".state/vault/sealing.key"
    )]
    pub sealing_key_file: PathBuf,
    /// Also write the public key fingerprint to this file (clients pin it).
    #[arg(long, env = "KEY_VAULT_FINGERPRINT_FILE")]
    pub fingerprint_file: Option<PathBuf>,
    #[command(flatten)]
    pub pkcs11: Pkcs11Config,
    #[command(flatten)]
    pub policy: Policy,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Generates the sealing key inside the PKCS#11 token named by the
    /// --pkcs11-* flags (AES-256, sensitive, never extractable) unless it
    /// is there already, then exits. Run it once per token, before the
    /// first start with `--sealing pkcs11`; a start never creates a key.
    Pkcs11Init,
}

/// What seals the vault secrets at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SealingKind {
    /// A key in a file (`--sealing-key-file`).
    File,
    /// A key inside a PKCS#11 token (`--pkcs11-*`).
    Pkcs11,
}

/// The record store behind the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Etcd,
}

/// The guess limit and the lifetimes of login state.
#[derive(Debug, Clone, Args)]
pub struct Policy {
    /// Wrong or abandoned logins after which a record is erased for good.
    #[arg(long, env = "KEY_VAULT_MAX_GUESSES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_guesses: u32,
    /// How long the vault keeps a login session between LoginStart and LoginFinish.
    #[arg(long, env = "KEY_VAULT_LOGIN_SESSION_TTL", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub login_session_ttl: Duration,
    /// How long a login ticket (proof of the password) stays usable.
    #[arg(long, env = "KEY_VAULT_LOGIN_TICKET_TTL", default_value = "5m",
          value_parser = humantime::parse_duration)]
    pub login_ticket_ttl: Duration,
    /// How long a challenge for a backup-key signature stays usable.
    #[arg(long, env = "KEY_VAULT_CHALLENGE_TTL", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub challenge_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_guesses: 10,
            login_session_ttl: Duration::from_secs(60),
            login_ticket_ttl: Duration::from_secs(300),
            challenge_ttl: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_the_local_stack() {
        let config = Config::try_parse_from(["key-vault"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50062");
        assert_eq!(config.db, PathBuf::from(".state/vault/vault.db"));
        assert_eq!(
            config.sealing_key_file,
            PathBuf::from(".state/vault/sealing.key")
        );
        assert_eq!(config.policy.max_guesses, 10);
        assert_eq!(config.policy.login_session_ttl, Duration::from_secs(60));
        assert_eq!(config.policy.login_ticket_ttl, Duration::from_secs(300));
        assert!(config.fingerprint_file.is_none());
        assert_eq!(
            config.tokens.token_public_key_file,
            PathBuf::from(".state/authority/token.pub")
        );
        assert!(!config.tls.insecure_plaintext);
        assert_eq!(config.sealing, SealingKind::File);
        assert_eq!(
            config.pkcs11.module,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert!(config.pkcs11.pin_file.is_none());
        assert_eq!(config.command, None);
    }

    #[test]
    fn pkcs11_flags_work_before_and_after_the_init_subcommand() {
        let config = Config::try_parse_from([
            "key-vault",
            "--sealing",
            "pkcs11",
            "--pkcs11-module",
            "/opt/hsm/lib.so",
            "--pkcs11-token-label",
            "vault-token",
        ])
        .unwrap();
        assert_eq!(config.sealing, SealingKind::Pkcs11);
        assert_eq!(config.pkcs11.module, PathBuf::from("/opt/hsm/lib.so"));
        assert_eq!(config.pkcs11.token_label, "vault-token");
        assert_eq!(config.command, None);

        let init = Config::try_parse_from([
            "key-vault",
            "pkcs11-init",
            "--pkcs11-key-label",
            "sealing-2",
            "--pkcs11-pin-file",
            "/run/pin",
        ])
        .unwrap();
        assert_eq!(init.command, Some(Command::Pkcs11Init));
        assert_eq!(init.pkcs11.key_label, "sealing-2");
        assert_eq!(init.pkcs11.pin_file, Some(PathBuf::from("/run/pin")));
        assert!(Config::try_parse_from(["key-vault", "--sealing", "hsm"]).is_err());
    }

    #[test]
    fn flags_override() {
        let config = Config::try_parse_from([
            "key-vault",
            "--max-guesses",
            "3",
            "--login-session-ttl",
            "2m",
            "--fingerprint-file",
            "fp.txt",
        ])
        .unwrap();
        assert_eq!(config.policy.max_guesses, 3);
        assert_eq!(config.policy.login_session_ttl, Duration::from_secs(120));
        assert_eq!(config.fingerprint_file, Some(PathBuf::from("fp.txt")));
        assert!(Config::try_parse_from(["key-vault", "--max-guesses", "0"]).is_err());
    }
}
