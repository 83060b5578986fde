use clap::Parser;
use key_vault::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log);
    key_vault::run(config, telemetry::shutdown_signal()).await
}
