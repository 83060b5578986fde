//! Logging and shutdown plumbing shared by every binary of the workspace: a
//! `tracing` subscriber with an env filter, as plain text or JSON lines.
//! Binaries flatten [`LogArgs`] into their clap config and call [`init`].

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Which events to log, in `tracing` env-filter syntax (e.g. `info,blob_gateway=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Append log lines to this file instead of stderr (so a command's own
    /// output stays alone on the terminal).
    #[arg(long, env = "LOG_FILE")]
    pub log_file: Option<std::path::PathBuf>,
}

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set (<https://no-color.org>). Logs written to a file or a
/// pipe stay plain text.
pub fn colour_wanted(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Installs the global subscriber; logs go to stderr (or `--log-file`) so
/// stdout stays for output. Calling it twice keeps the first subscriber. A
/// log file that cannot be opened is said once on stderr, and logs stay on
/// stderr.
pub fn init(args: &LogArgs) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let file = args.log_file.as_ref().and_then(|path| {
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        opened
            .inspect_err(|error| eprintln!("cannot log to {}: {error}", path.display()))
            .ok()
    });
    let colour = file.is_none()
        && colour_wanted(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
    let writer = match file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    let _ = match args.log_format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGINT or SIGTERM, so servers can drain and stop cleanly.
/// The handlers are installed when this is called, not when first polled, so
/// a signal that arrives while the server is still starting is not lost.
/// Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(
            !colour_wanted(false, None),
            "a file or a pipe gets plain text"
        );
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count, as no-color.org says.
        assert!(colour_wanted(true, Some(OsStr::new(""))));
    }
}
