//! `device-sim`: drives simulated phones against the stack `make up` started.

use std::path::PathBuf;
use std::sync::Arc;

use account_token::{AccountId, AuthorityArgs};
use anyhow::Context;
use backup_client::vault::KsfStrength;
use blob_gateway::config::S3Args;
use clap::{Parser, Subcommand, ValueEnum};
use device_sim::day::DayActivity;
use device_sim::fleet::{self, FleetArgs, FleetRun};
use device_sim::lifecycle::{KeyFlow, KeyFlowReport, Storage, mib_per_sec};
use device_sim::password_flow::{PasswordFlow, PasswordFlowReport};
use device_sim::phone::PhoneProfile;
use device_sim::s3_baseline::{self, S3Baseline};
use device_sim::services::Services;
use telemetry::LogArgs;

#[derive(Parser)]
#[command(
    name = "device-sim",
    about = "Simulated phones running the encrypted-backup lifecycle"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Blob gateway URL(s), comma-separated: calls fail over between them.
    #[arg(
        long,
        env = "BLOB_GATEWAY_ENDPOINT",
        default_value = "https://127.0.0.1:50061",
        global = true
    )]
    gateway: String,
    /// Key vault replica URL(s), comma-separated: calls fail over between them.
    #[arg(
        long,
        env = "KEY_VAULT_ENDPOINT",
        default_value = "https://127.0.0.1:50062",
        global = true
    )]
    vault: String,
    /// The vault public key fingerprint to pin (hex SHA-256). Read from
    /// --vault-fingerprint-file when not given.
    #[arg(long, env = "KEY_VAULT_FINGERPRINT", global = true)]
    vault_fingerprint: Option<String>,
    #[arg(
        long,
        env = "KEY_VAULT_FINGERPRINT_FILE",
        default_value = ".state/vault/fingerprint",
        global = true
    )]
    vault_fingerprint_file: PathBuf,
    /// The simulator plays the account authority: it mints each phone's
    /// tokens with this key (the local stack's).
    #[command(flatten)]
    authority: AuthorityArgs,
    #[command(flatten)]
    tls: rpc::ClientTls,
    /// Deadlines and retries of every call.
    #[command(flatten)]
    retry: rpc::retry::RetryPolicy,
    /// Where the simulated phones live.
    #[arg(
        long,
        env = "DEVICE_SIM_WORK_DIR",
        default_value = ".state/sim",
        global = true
    )]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    #[arg(long, value_enum, default_value = "demo", global = true)]
    profile: Profile,
    /// Days of chat activity after the first backup, each ending in an
    /// incremental backup (64-digit key flow).
    #[arg(long, default_value_t = 3, global = true)]
    days: u32,
    /// Skip the key rotation at the end of the 64-digit key flow.
    #[arg(long, global = true)]
    no_rotate: bool,
    /// Storage format(s) of the 64-digit key flow, comma-separated; with
    /// several, the flow runs once in each (same phone) and a table puts
    /// them side by side.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "v2",
        global = true
    )]
    storage: Vec<Storage>,
    /// Stretch passwords with cheap Argon2id parameters (tests only).
    #[arg(long, global = true)]
    insecure_fast_ksf: bool,
    /// Also time raw aws-sdk-s3 PUT/GET of the same bytes to the same S3 server.
    #[arg(long, global = true)]
    s3_baseline: bool,
    #[command(flatten)]
    s3: S3Args,
    /// Write the report as JSON to this file as well.
    #[arg(long, global = true)]
    report_json: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Both flows below, one phone each (the default).
    Demo,
    /// 64-digit key: back up, restore on a new phone, verify.
    KeyFlow,
    /// Password and vault: enable, restore, change, lockout, start over, disable.
    PasswordFlow,
    /// Many phones through the whole lifecycle (`--days` days, `--seed`),
    /// with a report as a table, JSON and HTML.
    Fleet(FleetArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Profile {
    Demo,
    Small,
    Large,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Demo);
    if let Command::Fleet(args) = &command {
        // Thousands of phones: per-backup info lines, and the start-over
        // warning every forgetful user gets, would drown the table.
        if std::env::var_os("RUST_LOG").is_none() && cli.log.log_filter == "info" {
            cli.log.log_filter = "warn,backup_client::vault::delete=error".into();
        }
        telemetry::init(&cli.log);
        return run_fleet(&cli, args.clone()).await;
    }
    telemetry::init(&cli.log);
    let services = services(&cli)?;
    let profile = match cli.profile {
        Profile::Demo => PhoneProfile::demo(),
        Profile::Small => PhoneProfile::small(),
        Profile::Large => PhoneProfile::large(),
    };

    let mut key_reports = Vec::new();
    let mut password_report = None;
    let mut baseline = None;
    if matches!(command, Command::Demo | Command::KeyFlow) {
        let fingerprint = vault_fingerprint(&cli)?;
        for &storage in &cli.storage {
            let account = match storage {
                Storage::V2 => format!("sim-key-{}", cli.seed),
                Storage::V3 => format!("sim-key-v3-{}", cli.seed),
            };
            let flow = KeyFlow {
                services: &services,
                vault_fingerprint: fingerprint.trim(),
                account: AccountId::new(account)?,
                seed: cli.seed,
                profile,
                work_dir: &cli.work_dir,
                days: cli.days,
                activity: DayActivity::typical(),
                rotate: !cli.no_rotate,
                storage,
            };
            let report = flow.run().await.context("the 64-digit key flow failed")?;
            print_key_report(&report);
            key_reports.push(report);
        }
        if let (true, Some(report)) = (cli.s3_baseline, key_reports.last()) {
            let sizes: Vec<u64> = device_sim::phone::list_files(&report.old_phone)?
                .into_iter()
                .map(|(_, size)| size)
                .collect();
            let measured = s3_baseline::measure(&cli.s3, &sizes).await?;
            print_baseline(&measured);
            baseline = Some(measured);
        }
        if key_reports.len() > 1 {
            print_comparison(&key_reports, baseline.as_ref());
        }
    }
    if matches!(command, Command::Demo | Command::PasswordFlow) {
        let fingerprint = vault_fingerprint(&cli)?;
        let flow = PasswordFlow {
            services: &services,
            vault_fingerprint: fingerprint.trim(),
            account: AccountId::new(format!("sim-password-{}", cli.seed))?,
            seed: cli.seed + 1,
            profile,
            work_dir: &cli.work_dir,
            ksf: if cli.insecure_fast_ksf {
                KsfStrength::InsecureFastForTests
            } else {
                KsfStrength::Production
            },
        };
        let report = flow.run().await.context("the password flow failed")?;
        print_password_report(&report);
        password_report = Some(report);
    }

    if let Some(path) = &cli.report_json {
        let json = serde_json::json!({
            "key_flows": key_reports,
            "password_flow": password_report,
            "s3_baseline": baseline,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    let mismatches: Vec<&String> = key_reports
        .iter()
        .flat_map(|r| &r.mismatches)
        .chain(password_report.iter().flat_map(|r| &r.mismatches))
        .collect();
    if mismatches.is_empty() {
        println!("verify: OK, every restored phone is byte-for-byte equal");
        Ok(())
    } else {
        println!("verify: FAILED, {} paths differ:", mismatches.len());
        for path in mismatches {
            println!("  {path}");
        }
        std::process::exit(2);
    }
}

/// The service URLs, the trusted CA and the account authority's key.
fn services(cli: &Cli) -> anyhow::Result<Services> {
    Ok(Services {
        gateway_endpoint: cli.gateway.clone(),
        vault_endpoint: cli.vault.clone(),
        trust: cli.tls.load()?,
        authority: Arc::new(cli.authority.load_or_create()?),
        retry: rpc::retry::Retry::new(cli.retry),
    })
}

/// The pinned vault fingerprint: the flag or env, else the file `make up` wrote.
fn vault_fingerprint(cli: &Cli) -> anyhow::Result<String> {
    match &cli.vault_fingerprint {
        Some(fingerprint) => Ok(fingerprint.clone()),
        None => std::fs::read_to_string(&cli.vault_fingerprint_file).with_context(|| {
            format!(
                "read the pinned vault fingerprint from {} (is the vault running?)",
                cli.vault_fingerprint_file.display()
            )
        }),
    }
}

async fn run_fleet(cli: &Cli, args: FleetArgs) -> anyhow::Result<()> {
    let spec = args.spec(cli.seed, cli.days);
    if args.print_schedule {
        let plans = fleet::schedule(&spec);
        let json = serde_json::json!({
            "expected": fleet::expected(&plans),
            "phones": plans,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let run = FleetRun {
        spec: spec.clone(),
        concurrency: args.concurrency,
        services: services(cli)?,
        vault_fingerprint: vault_fingerprint(cli)?.trim().to_string(),
        ksf: if cli.insecure_fast_ksf {
            KsfStrength::InsecureFastForTests
        } else {
            KsfStrength::Production
        },
        work_dir: cli.work_dir.clone(),
        progress: !args.no_progress,
    };
    let outcome = run.run().await?;
    let report = fleet::summarize(&spec, args.concurrency, &outcome);
    let paths = fleet::write_reports(&report, &args.report_dir)?;
    print!("{}", fleet::report_table::render(&report));
    println!(
        "report: {} (json: {})",
        paths.html.display(),
        paths.json.display()
    );
    if !report.matches_schedule {
        // Failed or unverified operations, or counts off the schedule.
        std::process::exit(1);
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_key_report(report: &KeyFlowReport) {
    println!(
        "64-digit key flow, account {}, storage {:?}",
        report.account, report.storage
    );
    println!(
        "  phone            {} files, {:.1} MiB (chat db {:.1} MiB, media {:.1} MiB)",
        report.files,
        mib(report.device_bytes),
        mib(report.db_bytes),
        mib(report.media_bytes)
    );
    println!(
        "  uploaded         {:.1} MiB sealed in {} S3 objects",
        mib(report.uploaded_bytes),
        report.uploaded_objects
    );
    println!(
        "  backup           {:.2} s  {:.1} MiB/s",
        report.backup_secs,
        report.backup_mib_per_sec()
    );
    for day in &report.days {
        println!(
            "  day {:<3} changed {:>7.1} KiB (db {:>6.1} KiB, media {:>6.1} KiB)  uploaded {:>7.1} KiB plain / {:>7.1} KiB sealed ({} of {} chunks, manifest {:.1} KiB, {} objects)  {:.2} s",
            day.changed.day,
            kib(day.changed.changed_bytes),
            kib(day.changed.db_changed_bytes),
            kib(day.changed.new_media_bytes),
            kib(day.uploaded_plain_bytes),
            kib(day.uploaded_bytes),
            day.uploaded_chunks,
            day.chunks,
            kib(day.manifest_bytes),
            day.uploaded_objects,
            day.secs
        );
    }
    if let Some(secs) = report.rotation_secs {
        println!(
            "  key rotation     {:.2} s  {:.1} MiB/s (all data re-encrypted; the old key is refused)",
            secs,
            mib_per_sec(report.device_bytes, secs)
        );
    }
    println!(
        "  restore          {:.2} s  {:.1} MiB/s",
        report.restore_secs,
        report.restore_mib_per_sec()
    );
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// The flows of several storage formats side by side, raw S3 beside them.
fn print_comparison(reports: &[KeyFlowReport], baseline: Option<&S3Baseline>) {
    println!("side by side (same phone, same server, this run):");
    println!(
        "  {:<8} {:>9} {:>9} {:>8} {:>14} {:>9} {:>9}",
        "storage", "backup s", "MiB/s", "objects", "daily objects", "restore s", "MiB/s"
    );
    for report in reports {
        let daily: usize = report.days.iter().map(|d| d.uploaded_objects).sum();
        let daily = daily as f64 / report.days.len().max(1) as f64;
        println!(
            "  {:<8} {:>9.2} {:>9.1} {:>8} {:>14.1} {:>9.2} {:>9.1}",
            format!("{:?}", report.storage),
            report.backup_secs,
            report.backup_mib_per_sec(),
            report.uploaded_objects,
            daily,
            report.restore_secs,
            report.restore_mib_per_sec()
        );
    }
    if let Some(raw) = baseline {
        println!(
            "  {:<8} {:>9.2} {:>9.1} {:>8} {:>14} {:>9.2} {:>9.1}",
            "raw S3",
            raw.put_secs,
            mib_per_sec(raw.bytes, raw.put_secs),
            "-",
            "-",
            raw.get_secs,
            mib_per_sec(raw.bytes, raw.get_secs)
        );
    }
}

fn print_baseline(measured: &S3Baseline) {
    println!(
        "  raw S3 PUT       {:.2} s  {:.1} MiB/s  (same bytes, same server, no gateway, no crypto)",
        measured.put_secs,
        mib_per_sec(measured.bytes, measured.put_secs)
    );
    println!(
        "  raw S3 GET       {:.2} s  {:.1} MiB/s",
        measured.get_secs,
        mib_per_sec(measured.bytes, measured.get_secs)
    );
}

fn print_password_report(report: &PasswordFlowReport) {
    println!(
        "password flow, account {} (vault limit {} guesses)",
        report.account, report.max_guesses
    );
    for step in &report.steps {
        println!("  {:<42} {:>6.2} s  {}", step.name, step.secs, step.outcome);
    }
}
