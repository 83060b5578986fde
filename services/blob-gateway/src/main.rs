use blob_gateway::config::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log);
    blob_gateway::run(config, telemetry::shutdown_signal()).await
}
