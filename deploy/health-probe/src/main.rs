//! `health-probe --endpoint https://127.0.0.1:50061 --service NAME --wait-secs 60`
//! exits 0 once the service is SERVING, 1 if it is not by the deadline (or
//! at once if the server's certificate is not trusted).

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    endpoint: String,
    /// Service name to check; empty checks the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// How long to keep trying, in seconds.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
    #[command(flatten)]
    tls: rpc::ClientTls,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let waited = match cli.tls.load() {
        Ok(trust) => {
            health_probe::wait_serving(
                &cli.endpoint,
                &trust,
                &cli.service,
                Duration::from_secs(cli.wait_secs),
            )
            .await
        }
        Err(error) => Err(error.into()),
    };
    if let Err(error) = waited {
        eprintln!("health-probe: {error:#}");
        std::process::exit(1);
    }
}
