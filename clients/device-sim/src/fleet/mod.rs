//! Fleet mode: many simulated phones living through the whole backup
//! lifecycle against the running stack, with a report people can read.
//!
//! - [`mix`]: phone sizes and scenarios, and their weighted mixes;
//! - [`schedule`]: who the phones are and what happens to each on which
//!   day, computed up front from the seed;
//! - [`turn`]: one phone's events of one day, with the real client;
//! - [`runner`]: the days, with at most `--concurrency` phones in flight;
//! - [`stats`]: the report (JSON), [`report_table`] and [`report_html`]
//!   its two faces.

pub mod mix;
pub mod report_html;
pub mod report_table;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod turn;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

pub use runner::{FleetOutcome, FleetRun};
pub use schedule::{FleetSpec, Flow, PhonePlan, ProfileMix, ScenarioMix, expected, schedule};
pub use stats::{FleetReport, summarize};

/// `device-sim fleet`: the fleet's size and mix (the stack's endpoints,
/// seed, days and work dir are the simulator's global options).
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Phones in the fleet.
    #[arg(long, default_value_t = 20)]
    pub devices: u32,
    /// Phones in flight at once (the rest wait on disk).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Phone sizes: `default` (tiny=70,light=25,heavy=5), a name (`tiny`),
    /// or weights like `tiny=90,heavy=10`.
    #[arg(long, default_value = "default")]
    pub profile_mix: ProfileMix,
    /// Scenarios: `lifecycle` (every event, often), `idle-heavy` (nine in
    /// ten phones dormant: enabled, never backing up), or weights like
    /// `steady=5,lose-phone=1` (steady, idle, dormant, change-password,
    /// rotate-key, lose-phone, forget-password, disable).
    #[arg(long, default_value = "lifecycle")]
    pub scenario_mix: ScenarioMix,
    /// Where report.json and report.html go.
    #[arg(long, env = "DEVICE_SIM_REPORT_DIR", default_value = ".state/fleet")]
    pub report_dir: PathBuf,
    /// Print the schedule as JSON and exit, without touching the stack.
    #[arg(long)]
    pub print_schedule: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

impl FleetArgs {
    pub fn spec(&self, seed: u64, days: u32) -> FleetSpec {
        FleetSpec {
            seed,
            devices: self.devices,
            days,
            profile_mix: self.profile_mix.clone(),
            scenario_mix: self.scenario_mix.clone(),
        }
    }
}

/// Where [`write_reports`] put the report.
pub struct ReportPaths {
    pub json: PathBuf,
    pub html: PathBuf,
}

/// Writes `report.json` and `report.html` into `dir`.
pub fn write_reports(report: &FleetReport, dir: &Path) -> anyhow::Result<ReportPaths> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let paths = ReportPaths {
        json: dir.join("report.json"),
        html: dir.join("report.html"),
    };
    std::fs::write(&paths.json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("write {}", paths.json.display()))?;
    std::fs::write(&paths.html, report_html::render(report))
        .with_context(|| format!("write {}", paths.html.display()))?;
    Ok(paths)
}

/// Reads a `report.json` that [`write_reports`] wrote.
pub fn read_report(path: &Path) -> anyhow::Result<FleetReport> {
    let json = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&json).with_context(|| format!("parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::schedule::{Action, Method};
    use super::turn::Sample;
    use super::*;

    /// A report as a run that did exactly what the schedule says would
    /// give, with made-up timings.
    fn perfect_run() -> (FleetSpec, FleetOutcome) {
        let spec = FleetSpec {
            seed: 4,
            devices: 30,
            days: 3,
            profile_mix: ProfileMix::default_mix(),
            scenario_mix: ScenarioMix::lifecycle(),
        };
        let plans = schedule(&spec);
        let max_guesses = 5;
        let mut samples = Vec::new();
        for plan in &plans {
            for (n, event) in plan.events.iter().enumerate() {
                for &flow in event.action.flows() {
                    let typo = matches!(
                        event.action,
                        Action::ChangePassword { typo: true, .. }
                            | Action::LosePhone { typo: true }
                    );
                    let lockout = flow == Flow::Lockout;
                    samples.push(Sample {
                        flow: Some(flow),
                        phone: plan.index,
                        day: event.day,
                        start_secs: event.day as f64 + n as f64 * 0.01,
                        secs: 0.002 * (1 + plan.index % 7) as f64,
                        bytes_moved: if flow.commits() { 40_000 } else { 0 },
                        bytes_uploaded: if flow.commits() { 40_000 } else { 0 },
                        bytes_changed: if flow.commits() { 30_000 } else { 0 },
                        wrong_guesses: if lockout { max_guesses } else { typo as u32 },
                        refusals: if lockout {
                            max_guesses + 1
                        } else {
                            typo as u32
                        },
                        lockouts: lockout as u32,
                        verified: (flow == Flow::Restore).then_some(true),
                        error: None,
                    });
                }
            }
        }
        assert!(plans.iter().any(|p| p.method == Method::Password));
        let outcome = FleetOutcome {
            plans,
            samples,
            wall_secs: 4.0,
            max_guesses,
            skipped_events: 0,
            day_starts_secs: vec![0.0, 1.0, 2.0, 3.0],
            retries: 3,
            calls_given_up: 0,
        };
        (spec, outcome)
    }

    fn perfect_report() -> FleetReport {
        let (spec, outcome) = perfect_run();
        summarize(&spec, 4, &outcome)
    }

    #[test]
    fn a_run_that_follows_the_schedule_matches_it_and_renders() {
        let report = perfect_report();
        assert!(report.matches_schedule, "{}", report_table::render(&report));
        assert_eq!(stats::counts(&report), report.expected.flows);
        let table = report_table::render(&report);
        assert!(table.contains("backup_incremental"), "{table}");
        assert!(table.contains("every operation matches the schedule"));
        assert!(
            table.contains("retries: 3 call attempts repeated"),
            "{table}"
        );

        let html = report_html::render(&report);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        let flows_with_ops = report.flows.iter().filter(|f| f.count > 0).count();
        assert_eq!(
            html.matches(">day ").count(),
            2 * 4,
            "day marks on both charts"
        );
        // One histogram per flow that ran, two throughput charts.
        assert_eq!(html.matches("<svg ").count(), flows_with_ops + 2);
        assert_eq!(
            html.matches("<svg ").count(),
            html.matches("</svg>").count()
        );
        assert!(!html.contains("<script"), "no scripts");
        let without_namespace = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!without_namespace.contains("http"), "no network references");
        assert!(!html.contains("NaN") && !html.contains("inf"));

        let json = serde_json::to_string(&report).unwrap();
        let back: FleetReport = serde_json::from_str(&json).unwrap();
        assert_eq!(stats::counts(&back), report.expected.flows);
    }

    #[test]
    fn a_failure_or_a_missing_operation_breaks_the_match() {
        let (spec, mut outcome) = perfect_run();
        let restore = outcome
            .samples
            .iter()
            .position(|s| s.flow == Some(Flow::Restore))
            .unwrap();
        outcome.samples.remove(restore);
        let report = summarize(&spec, 4, &outcome);
        assert!(!report.matches_schedule);
        let table = report_table::render(&report);
        assert!(
            table.contains("the counts differ from the schedule"),
            "{table}"
        );

        let (spec, mut outcome) = perfect_run();
        outcome.samples[3].error = Some("boom <b>".into());
        let report = summarize(&spec, 4, &outcome);
        assert_eq!(report.failures, 1);
        assert!(!report.matches_schedule);
        assert!(report_table::render(&report).contains("FAILED: 1 operations failed"));
        assert!(report_html::render(&report).contains("boom &lt;b&gt;"));
    }
}
