//! `dev-certs`: a development CA and one TLS certificate per service for the
//! local stack (`deploy/stack.sh` runs it). Keeps a complete existing set;
//! `--force` makes a new one.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "dev-certs",
    about = "Create a development CA and per-service TLS certificates"
)]
struct Cli {
    /// Directory for ca.pem, <service>.pem and <service>.key.
    #[arg(long, env = "E2EB_TLS_DIR", default_value = rpc::server::DEFAULT_TLS_DIR)]
    dir: PathBuf,
    /// Services to make certificates for (their names are also DNS names).
    #[arg(long = "service", default_values = ["key-vault", "blob-gateway"])]
    services: Vec<String>,
    /// Replace an existing set.
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let services: Vec<&str> = cli.services.iter().map(String::as_str).collect();
    let made = if cli.force {
        rpc::dev_certs::generate(&cli.dir, &services)?;
        true
    } else {
        rpc::dev_certs::ensure(&cli.dir, &services)?
    };
    let verb = if made { "created" } else { "kept" };
    println!(
        "{verb} development certificates in {} (CA: {})",
        cli.dir.display(),
        rpc::dev_certs::ca_path(&cli.dir).display()
    );
    Ok(())
}
