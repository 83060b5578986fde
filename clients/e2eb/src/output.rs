//! What the user sees: a command's result as text (colour only on a
//! terminal without `NO_COLOR`) or as one JSON object for scripts, and a
//! spinner with the elapsed time on stderr while a long step runs, only
//! when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// A command's result: lines for people, an object for scripts.
pub struct Report {
    pub lines: Vec<String>,
    pub json: Value,
}

impl Report {
    pub fn new(json: Value) -> Self {
        Self {
            lines: Vec::new(),
            json,
        }
    }

    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.lines.push(line.into());
        self
    }
}

/// How to write to this terminal, pipe or file.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
    colour: bool,
    progress: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR");
        Self {
            json,
            colour: telemetry::colour_wanted(std::io::stdout().is_terminal(), no_color.as_deref()),
            progress: !json && std::io::stderr().is_terminal(),
        }
    }

    pub fn print(&self, report: &Report) {
        if self.json {
            println!("{}", report.json);
        } else {
            for line in &report.lines {
                println!("{line}");
            }
        }
    }

    /// Prints a failure: the message on stderr, and with --json also an
    /// object on stdout naming its kind and exit code.
    pub fn print_error(&self, kind: crate::exit::Kind, error: &anyhow::Error) {
        let colour = telemetry::colour_wanted(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        let label = if colour {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        let message = message(error);
        eprintln!("{label}: {message}");
        if self.json {
            let json = serde_json::json!({
                "ok": false,
                "error": { "kind": kind, "exit_code": kind.code(), "message": message },
            });
            println!("{json}");
        }
    }

    /// `text` in green on a colour terminal.
    pub fn good(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// `text` in bold on a colour terminal.
    pub fn strong(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A spinner with `message` and the elapsed time until the guard drops.
    pub fn progress(&self, message: &str) -> Option<Spinner> {
        if !self.progress {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .expect("a valid progress template"),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(Spinner(bar))
    }
}

pub struct Spinner(ProgressBar);

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The error and its causes, each cause once: the library's messages often
/// already include their source's text.
pub fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Bytes for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("file name is not UTF-8");
        let error = anyhow::Error::new(io).context("cannot read x: file name is not UTF-8");
        assert_eq!(message(&error), "cannot read x: file name is not UTF-8");
        let error = anyhow::anyhow!("disk full").context("backup failed");
        assert_eq!(message(&error), "backup failed: disk full");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
