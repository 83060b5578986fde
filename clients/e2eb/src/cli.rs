//! The command line: global connection and device options (each with an
//! environment fallback whose default is what `make up` writes under
//! `.state/`) and the subcommands. Secrets have no argv form: passwords come
//! from a terminal prompt or `--password-fd`, the 64-digit key from the key
//! file, `--key-fd` or a prompt.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  any other failure (the message says what happened)
  2  usage error (bad flags, missing key file, target not empty, ...)
  3  wrong password (the message says how many guesses are left)
  4  key erased: every guess is spent and the backup can never be restored;
     `e2eb enable --password --start-over` enables backups anew
  5  integrity failure: a tampered, swapped, rolled-back or substituted backup,
     or a vault whose key does not match the pinned fingerprint
  6  service unavailable: the gateway or the vault cannot be reached; retry later
  7  wrong key: the 64-digit key is not the one this backup or the vault uses
  8  not enabled: no vault record or no backup for this account

Tokens: against the local stack (`make up`) e2eb acts as the account authority
itself, minting its own tokens with .state/authority/token.key (like
device-sim). Against a stack whose authority is elsewhere, give tokens minted
there (`mint-token --account A --audience blob-gateway|key-vault`) with
--gateway-token-file and --vault-token-file.";

#[derive(Debug, Parser)]
#[command(
    name = "e2eb",
    about = "Back up a folder end-to-end encrypted, and restore it",
    after_long_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The account to back up for (1-64 characters of [A-Za-z0-9_-]).
    #[arg(long, env = "E2EB_ACCOUNT", global = true)]
    pub account: Option<String>,
    /// The blob gateway's URL.
    #[arg(
        long,
        env = "BLOB_GATEWAY_ENDPOINT",
        default_value = "https://127.0.0.1:50061",
        global = true
    )]
    pub gateway: String,
    /// The key vault's URL.
    #[arg(
        long,
        env = "KEY_VAULT_ENDPOINT",
        default_value = "https://127.0.0.1:50062",
        global = true
    )]
    pub vault: String,
    #[command(flatten)]
    pub tls: rpc::ClientTls,
    /// The vault public key fingerprint to pin (hex SHA-256); read from
    /// --vault-fingerprint-file when not given.
    #[arg(long, env = "KEY_VAULT_FINGERPRINT", global = true)]
    pub vault_fingerprint: Option<String>,
    #[arg(
        long,
        env = "KEY_VAULT_FINGERPRINT_FILE",
        default_value = ".state/vault/fingerprint",
        global = true
    )]
    pub vault_fingerprint_file: PathBuf,
    /// Local stack only: mint this account's tokens with the authority's
    /// secret key, as device-sim does.
    #[command(flatten)]
    pub authority: account_token::AuthorityArgs,
    /// A blob-gateway token minted elsewhere (instead of the authority key).
    #[arg(
        long,
        env = "E2EB_GATEWAY_TOKEN_FILE",
        global = true,
        requires = "vault_token_file"
    )]
    pub gateway_token_file: Option<PathBuf>,
    /// A key-vault token minted elsewhere (instead of the authority key).
    #[arg(
        long,
        env = "E2EB_VAULT_TOKEN_FILE",
        global = true,
        requires = "gateway_token_file"
    )]
    pub vault_token_file: Option<PathBuf>,
    /// This device's state: `<dir>/<account>/key` (mode 0600) for a user of
    /// the 64-digit key; nothing for a password user.
    #[arg(
        long,
        env = "E2EB_DEVICE_DIR",
        default_value = ".state/e2eb",
        global = true
    )]
    pub device_dir: PathBuf,
    /// Read passwords from this file descriptor, one per line (for `password
    /// change`: the current one, then the new one), instead of a prompt.
    #[arg(long, env = "E2EB_PASSWORD_FD", global = true)]
    pub password_fd: Option<i32>,
    /// Read the 64-digit key from this file descriptor instead of the key
    /// file or a prompt.
    #[arg(long, env = "E2EB_KEY_FD", global = true)]
    pub key_fd: Option<i32>,
    /// Stretch passwords with cheap Argon2id parameters. Tests only: such
    /// passwords are cheap to crack, and every device must use the same.
    #[arg(long, env = "E2EB_INSECURE_FAST_KSF", global = true)]
    pub insecure_fast_ksf: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Which events to log on stderr (`tracing` env-filter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "warn", global = true)]
    pub log_filter: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the 64-digit backup key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Enable backups: with the 64-digit key (from `key new`) or a password.
    Enable {
        #[command(flatten)]
        method: EnableMethod,
        /// First erase what is left of an earlier backup (after the key was
        /// erased, or a forgotten key): it can never be restored.
        #[arg(long)]
        start_over: bool,
    },
    /// Back up DIR (every regular file under it) as the next generation.
    Backup { dir: PathBuf },
    /// Restore the committed backup into DIR, which must be empty or absent.
    Restore { dir: PathBuf },
    /// The backup the gateway serves and the vault's pointer to it.
    Status,
    /// Manage the backup password.
    #[command(subcommand)]
    Password(PasswordCommand),
    /// Re-encrypt the backup of DIR under a new key. A key user's new key is
    /// printed and stored before anything changes; a password user's stays
    /// in the vault.
    Rotate { dir: PathBuf },
    /// Disable backups: erase the vault record and every stored object.
    Disable {
        /// Confirm that the backup is to be deleted for good.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new 64-digit key, print it once, store it in the key file.
    New,
}

#[derive(Debug, Subcommand)]
pub enum PasswordCommand {
    /// Change the password (proof: the current password).
    Change,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct EnableMethod {
    /// Use the 64-digit key: the key file, --key-fd, or a prompt.
    #[arg(long)]
    pub key: bool,
    /// Protect a new key with a password kept by the vault (prompted, or
    /// read from --password-fd; never an argument).
    #[arg(long)]
    pub password: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_cannot_be_given_as_an_argument() {
        let error = Cli::try_parse_from(["e2eb", "enable", "--password", "hunter2"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
        let error = Cli::try_parse_from(["e2eb", "enable", "--password=hunter2"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::TooManyValues);
    }

    #[test]
    fn enable_needs_exactly_one_of_key_and_password() {
        assert!(Cli::try_parse_from(["e2eb", "enable"]).is_err());
        assert!(Cli::try_parse_from(["e2eb", "enable", "--key", "--password"]).is_err());
        assert!(Cli::try_parse_from(["e2eb", "enable", "--key"]).is_ok());
        assert!(Cli::try_parse_from(["e2eb", "enable", "--start-over"]).is_err());
        assert!(Cli::try_parse_from(["e2eb", "enable", "--password", "--start-over"]).is_ok());
    }
}
