//! Mints an account token with the dev signing key: the account authority's
//! job in a real deployment, a command here.

use std::path::PathBuf;
use std::time::Duration;

use account_token::{AccountId, SigningKey};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Print a signed account token for the local stack")]
struct Cli {
    /// The account the token is for.
    #[arg(long)]
    account: String,
    /// How long the token is valid, e.g. `1h`, `30m`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The signing key shared with the services (created if missing).
    #[arg(
        long,
        env = "E2EB_TOKEN_KEY_FILE",
        default_value = ".state/token-signing.key"
    )]
    token_key_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let key = SigningKey::load_or_create(&cli.token_key_file)?;
    println!("{}", key.mint(&AccountId::new(cli.account)?, cli.ttl));
    Ok(())
}
