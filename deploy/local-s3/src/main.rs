//! `local-s3`: serve the S3 API over a directory until SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// S3 over a local directory, for the local stack (deployments use MinIO).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: local_s3::Config,

    #[command(flatten)]
    log: telemetry::LogArgs,

    #[command(flatten)]
    test: local_s3::TestOptions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.log);
    // Installed before the readiness line, so a SIGTERM sent as soon as the line is
    // seen still shuts down cleanly (`telemetry::shutdown_signal` installs its handlers
    // only when first polled, which is too late for that).
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let server = local_s3::serve_with(&cli.config, &cli.test)
        .await
        .context("starting local-s3")?;
    // One line on stdout that scripts and tests can wait for.
    println!(
        "local-s3 listening on {} data_dir={}",
        server.endpoint(),
        server.data_dir().display()
    );

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("stop signal received; shutting down");
    server.shutdown().await;
    Ok(())
}
