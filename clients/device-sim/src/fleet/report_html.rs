//! The report as one self-contained HTML page: inline CSS and inline SVG
//! charts drawn here (no script, no fonts, no network), so it opens from a
//! file in any browser, offline.

use std::fmt::Write;

use super::report_table::{bytes, millis};
use super::stats::{FleetReport, FlowStats};

const CSS: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fafbfc; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #5a6270; margin-bottom: 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card span { color: #5a6270; font-size: 12px; }
.bad b { color: #b42318; } .good b { color: #067647; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dde1e6; padding: 4px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 6px; }
svg text { font: 11px system-ui, sans-serif; fill: #3b4250; }
.err { color: #b42318; font-family: monospace; }
";

const COLORS: [&str; 3] = ["#2563eb", "#d97706", "#059669"];
const P99_COLOR: &str = "#b42318";

pub fn render(report: &FleetReport) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Fleet report, seed {seed}</title><style>{CSS}</style></head><body>\n\
         <h1>Fleet report</h1><div class=\"sub\">{devices} phones over {days} days, seed {seed}, \
         concurrency {concurrency}; profiles {profiles}; scenarios {scenarios}</div>\n",
        seed = report.seed,
        devices = report.devices,
        days = report.days,
        concurrency = report.concurrency,
        profiles = escape(&report.profile_mix),
        scenarios = escape(&report.scenario_mix),
    );
    html.push_str(&cards(report));
    html.push_str("<h2>Flows</h2>\n");
    html.push_str(&flow_table(report));
    html.push_str("<h2>Latency distribution per flow</h2>\n<div class=\"grid\">\n");
    for flow in report.flows.iter().filter(|f| f.count > f.failures) {
        html.push_str(&histogram(flow, &report.latency_edges_ms));
    }
    html.push_str("</div>\n<h2>Throughput over time</h2>\n<div class=\"grid\">\n");
    let buckets = &report.timeline.buckets;
    let series = |f: fn(&super::stats::Bucket) -> f64| -> Vec<(f64, f64)> {
        buckets.iter().map(|b| (b.start_secs, f(b))).collect()
    };
    let days = &report.timeline.day_starts_secs;
    html.push_str(&line_chart(
        "sealed MiB/s moved",
        &[("MiB/s", series(|b| b.mib_per_sec))],
        days,
    ));
    html.push_str(&line_chart(
        "operations and backups per second",
        &[
            ("operations/s", series(|b| b.ops_per_sec)),
            ("backups/s", series(|b| b.backups_per_sec)),
        ],
        days,
    ));
    html.push_str("</div>\n");
    if !report.errors.is_empty() {
        html.push_str("<h2>Failures</h2>\n<ul>\n");
        for e in &report.errors {
            let _ = writeln!(
                html,
                "<li class=\"err\">phone {} day {} {}: {}</li>",
                e.phone,
                e.day,
                e.flow.map_or("(connect)", |f| f.name()),
                escape(&e.error)
            );
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</body></html>\n");
    html
}

fn cards(report: &FleetReport) -> String {
    let failed = report.failures > 0 || report.skipped_events > 0;
    let items = [
        ("", format!("{:.1} s", report.wall_secs), "wall time"),
        (
            "",
            format!("{:.0}", report.phones_per_minute),
            "phones / minute",
        ),
        (
            "",
            format!("{:.1}", report.backups_per_sec),
            "backups / second",
        ),
        ("", bytes(report.bytes_moved), "sealed bytes moved"),
        (
            if report.restores.mismatched > 0 {
                "bad"
            } else {
                "good"
            },
            format!("{} / {}", report.restores.verified, report.restores.count),
            "restores verified",
        ),
        (
            "",
            format!("{} / {}", report.vault.wrong_guesses, report.vault.lockouts),
            "wrong guesses / lockouts",
        ),
        (
            if failed { "bad" } else { "good" },
            report.failures.to_string(),
            "failures",
        ),
        (
            if report.calls_given_up > 0 {
                "bad"
            } else {
                "good"
            },
            report.retries.to_string(),
            "retries",
        ),
    ];
    let mut out = String::from("<div class=\"cards\">\n");
    for (class, value, label) in items {
        let _ = writeln!(
            out,
            "<div class=\"card {class}\"><b>{value}</b><span>{label}</span></div>"
        );
    }
    out.push_str("</div>\n");
    out
}

fn flow_table(report: &FleetReport) -> String {
    let mut out = String::from(
        "<table><tr><th>flow</th><th>count</th><th>schedule</th><th>failures</th>\
         <th title=\"expected refusals: wrong password, key erased\">refused</th><th>p50</th><th>p95</th><th>p99</th><th>max</th>\
         <th>MiB/s</th><th>moved</th><th>uploaded</th><th>changed</th><th title=\"bytes uploaded per byte changed\">up / changed</th></tr>\n",
    );
    for f in &report.flows {
        let scheduled = report
            .expected
            .flows
            .get(f.flow.name())
            .copied()
            .unwrap_or(0);
        let dash = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"));
        let size = |n: u64| if n == 0 { "–".to_string() } else { bytes(n) };
        let ran = f.count > f.failures;
        let latency = |ms: f64| if ran { millis(ms) } else { "–".to_string() };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.flow.name(),
            f.count,
            scheduled,
            if f.failures > 0 { " class=\"err\"" } else { "" },
            f.failures,
            f.expected_refusals,
            latency(f.p50_ms),
            latency(f.p95_ms),
            latency(f.p99_ms),
            latency(f.max_ms),
            dash(f.mib_per_sec),
            size(f.bytes_moved),
            size(f.bytes_uploaded),
            size(f.bytes_changed),
            dash(f.upload_per_changed),
        );
    }
    out.push_str("</table>\n");
    out
}

/// A bar per latency bucket on a log axis, with p50/p95/p99 marked.
fn histogram(flow: &FlowStats, edges: &[f64]) -> String {
    let (w, h, left, bottom, top) = (300.0, 180.0, 34.0, 22.0, 38.0);
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let buckets = flow.histogram.len() as f64;
    let bar_w = plot_w / buckets;
    let max = flow.histogram.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut svg = format!(
        "<div class=\"chart\"><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"><title>{name} latency</title>\
         <text x=\"{left}\" y=\"14\" font-weight=\"bold\">{name} ({n} ok)</text>",
        name = flow.flow.name(),
        n = flow.count - flow.failures,
    );
    for (i, &count) in flow.histogram.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let bar_h = plot_h * count as f64 / max;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
             <title>{count}</title></rect>",
            left + i as f64 * bar_w + 0.5,
            top + plot_h - bar_h,
            (bar_w - 1.0).max(1.0),
            bar_h,
            COLORS[0]
        );
    }
    // Bucket i spans [edges[i-1], edges[i]); x of a latency on that scale.
    let x_of = |ms: f64| {
        let position = if ms < edges[0] {
            0.5
        } else {
            1.0 + (ms / edges[0]).log10() * 4.0
        };
        left + position.min(buckets) * bar_w
    };
    for (label, ms) in [
        ("1ms", 1.0),
        ("10ms", 10.0),
        ("100ms", 100.0),
        ("1s", 1e3),
        ("10s", 1e4),
        ("100s", 1e5),
    ] {
        let x = x_of(ms);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"#8a919e\"/>\
             <text x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{label}</text>",
            y0 = top + plot_h,
            y1 = top + plot_h + 4.0,
            ty = h - 6.0
        );
    }
    for (label, ms, color) in [
        ("p50", flow.p50_ms, COLORS[2]),
        ("p95", flow.p95_ms, COLORS[1]),
        ("p99", flow.p99_ms, P99_COLOR),
    ] {
        let x = x_of(ms);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{color}\" \
             stroke-dasharray=\"3 2\"><title>{label} {}</title></line>",
            top + plot_h,
            millis(ms)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" stroke=\"#3b4250\"/>\
         <text x=\"{lx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{lx:.1}\" y=\"{y:.1}\" text-anchor=\"end\">0</text>\
         <text x=\"{left}\" y=\"28\"><tspan fill=\"{c50}\">p50 {}</tspan> · \
         <tspan fill=\"{c95}\">p95 {}</tspan> · <tspan fill=\"{c99}\">p99 {}</tspan></text>\
         </svg></div>",
        millis(flow.p50_ms),
        millis(flow.p95_ms),
        millis(flow.p99_ms),
        y = top + plot_h,
        x2 = left + plot_w,
        lx = left - 4.0,
        ty = top + 8.0,
        max = max as u64,
        c50 = COLORS[2],
        c95 = COLORS[1],
        c99 = P99_COLOR,
    );
    svg.push('\n');
    svg
}

/// Lines over time (x in seconds from the start), one colour per series,
/// with a dashed mark where each simulated day began.
fn line_chart(title: &str, series: &[(&str, Vec<(f64, f64)>)], day_starts: &[f64]) -> String {
    let (w, h, left, bottom, top) = (920.0, 240.0, 48.0, 30.0, 30.0);
    let plot_w = w - left - 12.0;
    let plot_h = h - bottom - top;
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = nice_ceiling(points.map(|p| p.1).fold(0.0, f64::max));
    let x_of = |x: f64| left + plot_w * x / x_max;
    let y_of = |y: f64| top + plot_h - plot_h * y / y_max;
    let mut svg = format!(
        "<div class=\"chart\"><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"><title>{t}</title>\
         <text x=\"{left}\" y=\"16\" font-weight=\"bold\">{t}</text>",
        t = escape(title)
    );
    for step in 0..=4 {
        let value = y_max * step as f64 / 4.0;
        let y = y_of(value);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e7eb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 4.0,
            y + 4.0,
            short(value)
        );
    }
    let x_step = nice_ceiling(x_max / 8.0);
    for step in 0..=(x_max / x_step) as usize {
        let value = x_step * step as f64;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>",
            x_of(value),
            h - 12.0,
            short(value)
        );
    }
    for (day, &start) in day_starts.iter().enumerate() {
        let x = x_of(start.min(x_max));
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#9aa1ad\" \
             stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\">day {day}</text>",
            top + plot_h,
            x + 3.0,
            top + 10.0
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <rect x=\"{:.1}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"17\">{}</text>",
            path.join(" "),
            w - 250.0 + i as f64 * 120.0,
            w - 236.0 + i as f64 * 120.0,
            escape(name)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#3b4250\"/></svg></div>",
        left + plot_w,
        y = top + plot_h
    );
    svg.push('\n');
    svg
}

/// The next 1, 2 or 5 times a power of ten at or above `value` (1 for 0).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * magnitude)
}

fn short(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_round_up_to_readable_values() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(47.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
