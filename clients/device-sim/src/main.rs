//! `device-sim`: drives simulated phones against the stack `make up` started.

use std::path::PathBuf;

use account_token::{AccountId, SigningKey};
use anyhow::Context;
use clap::{Parser, ValueEnum};
use device_sim::lifecycle::{KeyFlow, mib_per_sec};
use device_sim::phone::PhoneProfile;
use device_sim::s3_baseline::{self, S3BaselineArgs};
use telemetry::LogArgs;

#[derive(Parser)]
#[command(
    name = "device-sim",
    about = "Simulated phones running the encrypted-backup lifecycle"
)]
struct Cli {
    #[arg(
        long,
        env = "BLOB_GATEWAY_ENDPOINT",
        default_value = "http://127.0.0.1:50061"
    )]
    gateway: String,
    /// The account authority's signing key (the dev key of the local stack).
    #[arg(
        long,
        env = "E2EB_TOKEN_KEY_FILE",
        default_value = ".state/token-signing.key"
    )]
    token_key_file: PathBuf,
    /// Where the simulated phones live.
    #[arg(long, env = "DEVICE_SIM_WORK_DIR", default_value = ".state/sim")]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "demo")]
    profile: Profile,
    /// Account id; defaults to `sim-<seed>`.
    #[arg(long)]
    account: Option<String>,
    /// Also time raw aws-sdk-s3 PUT/GET of the same bytes to the same S3 server.
    #[arg(long)]
    s3_baseline: bool,
    #[command(flatten)]
    s3: S3BaselineArgs,
    /// Write the report as JSON to this file as well.
    #[arg(long)]
    report_json: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Profile {
    Demo,
    Small,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.log);
    let token_key = SigningKey::load_or_create(&cli.token_key_file)?;
    let account = AccountId::new(cli.account.clone().unwrap_or(format!("sim-{}", cli.seed)))?;
    let profile = match cli.profile {
        Profile::Demo => PhoneProfile::demo(),
        Profile::Small => PhoneProfile::small(),
    };
    let flow = KeyFlow {
        gateway_endpoint: &cli.gateway,
        token_key: &token_key,
        account,
        seed: cli.seed,
        profile,
        work_dir: &cli.work_dir,
    };
    let report = flow
        .run()
        .await
        .context("the key backup/restore flow failed")?;

    println!(
        "device-sim: 64-digit key flow for account {}",
        report.account
    );
    println!(
        "  phone            {} files, {:.1} MiB (chat db {:.1} MiB, media {:.1} MiB)",
        report.files,
        mib(report.device_bytes),
        mib(report.db_bytes),
        mib(report.media_bytes)
    );
    println!(
        "  uploaded         {:.1} MiB sealed",
        mib(report.uploaded_bytes)
    );
    println!(
        "  backup           {:.2} s  {:.1} MiB/s",
        report.backup_secs,
        report.backup_mib_per_sec()
    );
    println!(
        "  restore          {:.2} s  {:.1} MiB/s",
        report.restore_secs,
        report.restore_mib_per_sec()
    );
    let mut baseline = None;
    if cli.s3_baseline {
        let sizes: Vec<u64> = device_sim::phone::list_files(&report.old_phone)?
            .into_iter()
            .map(|(_, size)| size)
            .collect();
        let measured = s3_baseline::measure(&cli.s3, &sizes).await?;
        println!(
            "  raw S3 PUT       {:.2} s  {:.1} MiB/s",
            measured.put_secs,
            mib_per_sec(measured.bytes, measured.put_secs)
        );
        println!(
            "  raw S3 GET       {:.2} s  {:.1} MiB/s",
            measured.get_secs,
            mib_per_sec(measured.bytes, measured.get_secs)
        );
        baseline = Some(measured);
    }
    if let Some(path) = &cli.report_json {
        let json = serde_json::json!({ "key_flow": report, "s3_baseline": baseline });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    if report.mismatches.is_empty() {
        println!("  verify           OK: restored phone is byte-for-byte equal");
        Ok(())
    } else {
        println!(
            "  verify           FAILED: {} paths differ:",
            report.mismatches.len()
        );
        for path in &report.mismatches {
            println!("    {path}");
        }
        std::process::exit(2);
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
