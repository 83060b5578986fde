//! The report as a plain-text table for the terminal.

use std::fmt::Write;

use super::stats::FleetReport;

/// Human-readable bytes: B, KiB, MiB, GiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
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

/// Milliseconds as ms or s, three significant digits or so.
pub fn millis(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub fn render(report: &FleetReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet: {} phones, {} days, seed {}, concurrency {}, profiles {}, scenarios {}",
        report.devices,
        report.days,
        report.seed,
        report.concurrency,
        report.profile_mix,
        report.scenario_mix
    );
    let _ = writeln!(
        out,
        "  {:.1} s wall: {:.0} phones/min, {:.1} backups/s, {:.1} operations/s, {} moved ({:.2} MiB/s)",
        report.wall_secs,
        report.phones_per_minute,
        report.backups_per_sec,
        report.operations_per_sec,
        bytes(report.bytes_moved),
        report.mib_per_sec
    );
    let _ = writeln!(
        out,
        "{:<19} {:>6} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>10} {:>6}",
        "flow",
        "count",
        "fail",
        "refused",
        "p50",
        "p95",
        "p99",
        "max",
        "MiB/s",
        "moved",
        "uploaded",
        "changed",
        "up/ch"
    );
    for f in &report.flows {
        let expected = report.expected.flows.get(f.flow.name()).copied();
        let count = match expected {
            Some(e) if e != f.count => format!("{}≠{e}", f.count),
            _ => f.count.to_string(),
        };
        let optional = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
        };
        let byte_column = |n: u64| if n == 0 { "-".to_string() } else { bytes(n) };
        let ran = f.count > f.failures;
        let latency = |ms: f64| if ran { millis(ms) } else { "-".to_string() };
        let _ = writeln!(
            out,
            "{:<19} {:>6} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>10} {:>6}",
            f.flow.name(),
            count,
            f.failures,
            f.expected_refusals,
            latency(f.p50_ms),
            latency(f.p95_ms),
            latency(f.p99_ms),
            latency(f.max_ms),
            optional(f.mib_per_sec, 2),
            byte_column(f.bytes_moved),
            byte_column(f.bytes_uploaded),
            byte_column(f.bytes_changed),
            optional(f.upload_per_changed, 2),
        );
    }
    let _ = writeln!(
        out,
        "vault: {} wrong guesses (schedule: {}), {} lockouts at {} guesses, {} expected refusals",
        report.vault.wrong_guesses,
        report.vault.expected_wrong_guesses,
        report.vault.lockouts,
        report.max_guesses,
        report.vault.refusals
    );
    let _ = writeln!(
        out,
        "restores: {} of {} verified byte for byte, {} mismatched",
        report.restores.verified, report.restores.count, report.restores.mismatched
    );
    let _ = writeln!(
        out,
        "retries: {} call attempts repeated, {} calls given up",
        report.retries, report.calls_given_up
    );
    if report.failures > 0 || report.skipped_events > 0 {
        let _ = writeln!(
            out,
            "FAILED: {} operations failed, {} events skipped",
            report.failures, report.skipped_events
        );
        for e in &report.errors {
            let flow = e.flow.map_or("(connect)", |f| f.name());
            let _ = writeln!(out, "  phone {} day {} {flow}: {}", e.phone, e.day, e.error);
        }
    } else if report.matches_schedule {
        let _ = writeln!(out, "every operation matches the schedule; no failures");
    } else {
        let _ = writeln!(out, "WARNING: the counts differ from the schedule");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(millis(0.26), "0.3 ms");
        assert_eq!(millis(42.4), "42 ms");
        assert_eq!(millis(1500.0), "1.50 s");
    }
}
