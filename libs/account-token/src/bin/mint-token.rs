//! `mint-token`: the account authority's tool. Prints a signed account
//! token for one account and one audience, creating the authority's key
//! pair on first use (the public half lands beside it as `.pub` for the
//! services). `--init` only creates the key pair (`make up` runs it).

use std::time::Duration;

use account_token::{AccountId, Audience, AuthorityArgs};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "mint-token",
    about = "Print a signed account token (PASETO v4.public) for one account and one service"
)]
struct Cli {
    /// The account the token is for (1-64 characters of [A-Za-z0-9_-]).
    #[arg(long, required_unless_present = "init")]
    account: Option<String>,
    /// The service the token is for; the other service refuses it.
    #[arg(long, value_enum, required_unless_present = "init")]
    audience: Option<Audience>,
    /// How long the token is valid, e.g. `15m`, `1h`.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Only create the key pair if it is missing, and print where the
    /// public key (what the services need) is.
    #[arg(long, conflicts_with_all = ["account", "audience"])]
    init: bool,
    #[command(flatten)]
    authority: AuthorityArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let authority = cli.authority.load_or_create()?;
    match (cli.account, cli.audience) {
        (Some(account), Some(audience)) => {
            let token = authority.mint(&AccountId::new(account)?, audience, cli.ttl)?;
            println!("{}", token.expose_secret());
        }
        _ => println!(
            "account authority key ready; services verify with {}",
            account_token::public_key_file(&cli.authority.authority_key_file).display()
        ),
    }
    Ok(())
}
