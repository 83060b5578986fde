use clap::Parser;
use key_vault::config::{Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log);
    match config.command {
        Some(Command::Pkcs11Init) => key_vault::pkcs11_init(&config).await,
        None => key_vault::run(config, telemetry::shutdown_signal()).await,
    }
}
