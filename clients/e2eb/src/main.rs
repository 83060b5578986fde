//! `e2eb`: back up a folder of your own, end-to-end encrypted, against the
//! stack's blob gateway and key vault, and restore it. A thin binary over
//! `backup-client` (the library the simulator uses): parse, connect, run
//! one command, print its report, exit with a code that says what failed.

mod cli;
mod commands;
mod connect;
mod exit;
mod output;
mod secrets;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, KeyCommand, PasswordCommand};
use crate::commands::Session;
use crate::output::{Output, Report};
use crate::secrets::{KeyFiles, Secrets};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&telemetry::LogArgs {
        log_format: telemetry::LogFormat::Plain,
        log_filter: cli.global.log_filter.clone(),
        log_file: None,
    });
    let out = Output::new(cli.global.json);
    match run(cli, out).await {
        Ok(report) => {
            out.print(&report);
            ExitCode::SUCCESS
        }
        Err(error) => {
            let kind = exit::classify(&error);
            out.print_error(kind, &error);
            ExitCode::from(kind.code())
        }
    }
}

async fn run(cli: Cli, out: Output) -> anyhow::Result<Report> {
    let global = &cli.global;
    let account = connect::account(global)?;
    let files = KeyFiles::new(&global.device_dir, account.as_str());
    if let Command::Key(KeyCommand::New) = &cli.command {
        return commands::key_new(&files, out);
    }
    let mut session = Session {
        services: connect::Services::connect(global)?,
        files,
        secrets: Secrets::new(global.password_fd, global.key_fd),
        out,
    };
    match &cli.command {
        Command::Key(KeyCommand::New) => commands::key_new(&session.files, out),
        Command::Enable { method, start_over } => {
            commands::enable(&mut session, method.password, *start_over).await
        }
        Command::Backup { dir } => commands::backup(&mut session, dir).await,
        Command::Restore { dir } => commands::restore(&mut session, dir).await,
        Command::Status => commands::status(&session).await,
        Command::Password(PasswordCommand::Change) => commands::password_change(&mut session).await,
        Command::Rotate { dir } => commands::rotate(&mut session, dir).await,
        Command::Disable { yes } => commands::disable(&mut session, *yes).await,
    }
}
