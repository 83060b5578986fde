//! Turns a run's samples into the report: per flow the count, failures,
//! expected refusals, latency percentiles and histogram, throughput and
//! bytes uploaded against bytes changed; vault guesses and lockouts;
//! restores verified; throughput over time; and the schedule's expected
//! counts beside what happened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::runner::FleetOutcome;
use super::schedule::{Expected, FleetSpec, Flow, expected};
use super::turn::Sample;

const MIB: f64 = 1024.0 * 1024.0;
/// Errors listed one by one in the report (all are counted).
const LISTED_ERRORS: usize = 50;
/// Buckets of the throughput-over-time chart.
const TIMELINE_BUCKETS: usize = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetReport {
    pub seed: u64,
    pub devices: u32,
    pub days: u32,
    pub concurrency: usize,
    pub profile_mix: String,
    pub scenario_mix: String,
    /// The vault's guess limit (0 when no phone used a password).
    pub max_guesses: u32,
    pub wall_secs: f64,
    pub phones_per_minute: f64,
    /// Operations that committed a backup generation.
    pub backups: u64,
    pub backups_per_sec: f64,
    pub operations: u64,
    pub operations_per_sec: f64,
    /// Sealed bytes up and down over the whole run, and per wall second.
    pub bytes_moved: u64,
    pub mib_per_sec: f64,
    pub flows: Vec<FlowStats>,
    pub vault: VaultStats,
    pub restores: RestoreStats,
    /// Operations that failed unexpectedly or did not verify.
    pub failures: u64,
    /// Events not run because their phone had stopped on an error.
    pub skipped_events: u64,
    /// Call attempts repeated after a failed one: faults the phones rode
    /// out (reported, not hidden).
    #[serde(default)]
    pub retries: u64,
    /// Calls that gave up after transient failures (each also shows up as
    /// a failure, unless the flow expected the refusal).
    #[serde(default)]
    pub calls_given_up: u64,
    pub errors: Vec<ErrorLine>,
    /// What the schedule says must happen.
    pub expected: Expected,
    /// Every flow's count equals the schedule's, and nothing failed.
    pub matches_schedule: bool,
    /// Upper edges (ms) of the latency histogram buckets; the last bucket
    /// is everything above the last edge.
    pub latency_edges_ms: Vec<f64>,
    pub timeline: Timeline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowStats {
    pub flow: Flow,
    /// Operations attempted.
    pub count: u64,
    pub failures: u64,
    /// Answers the user expected (wrong password, key erased).
    pub expected_refusals: u64,
    pub wrong_guesses: u64,
    pub lockouts: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub bytes_moved: u64,
    pub bytes_uploaded: u64,
    pub bytes_changed: u64,
    /// Bytes moved per second of operation time (one phone's view);
    /// `None` where no bytes move.
    pub mib_per_sec: Option<f64>,
    /// Bytes uploaded per byte changed.
    pub upload_per_changed: Option<f64>,
    /// Successful operations per latency bucket (see `latency_edges_ms`).
    pub histogram: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VaultStats {
    pub wrong_guesses: u64,
    pub expected_wrong_guesses: u64,
    pub lockouts: u64,
    pub refusals: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestoreStats {
    pub count: u64,
    pub verified: u64,
    pub mismatched: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorLine {
    pub phone: u32,
    pub day: u32,
    pub flow: Option<Flow>,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_secs: f64,
    pub buckets: Vec<Bucket>,
    /// When each simulated day began (the runner finishes one day's turns
    /// before it starts the next).
    pub day_starts_secs: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub start_secs: f64,
    /// Operations completed per second.
    pub ops_per_sec: f64,
    /// Generations committed per second.
    pub backups_per_sec: f64,
    /// Sealed bytes moved per second, each operation's bytes spread over
    /// its duration.
    pub mib_per_sec: f64,
}

/// Latency bucket edges: 1 ms to 100 s, four per decade.
pub fn latency_edges_ms() -> Vec<f64> {
    (0..=20).map(|k| 10f64.powf(k as f64 / 4.0)).collect()
}

pub fn summarize(spec: &FleetSpec, concurrency: usize, outcome: &FleetOutcome) -> FleetReport {
    let samples = &outcome.samples;
    let wall = outcome.wall_secs.max(1e-9);
    let edges = latency_edges_ms();
    let flows: Vec<FlowStats> = Flow::ALL
        .iter()
        .map(|&flow| flow_stats(flow, samples, &edges))
        .collect();
    let expected = expected(&outcome.plans);
    let failures = samples.iter().filter(|s| s.error.is_some()).count() as u64;
    let backups = samples
        .iter()
        .filter(|s| s.error.is_none() && s.flow.is_some_and(Flow::commits))
        .count() as u64;
    let bytes_moved: u64 = samples.iter().map(|s| s.bytes_moved).sum();
    let restores = samples.iter().filter(|s| s.flow == Some(Flow::Restore));
    let restores = RestoreStats {
        count: restores.clone().count() as u64,
        verified: restores
            .clone()
            .filter(|s| s.verified == Some(true))
            .count() as u64,
        mismatched: restores.filter(|s| s.verified == Some(false)).count() as u64,
    };
    let vault = VaultStats {
        wrong_guesses: samples.iter().map(|s| s.wrong_guesses as u64).sum(),
        expected_wrong_guesses: expected.wrong_guesses(outcome.max_guesses),
        lockouts: samples.iter().map(|s| s.lockouts as u64).sum(),
        refusals: samples.iter().map(|s| s.refusals as u64).sum(),
    };
    let matches_schedule = failures == 0
        && outcome.skipped_events == 0
        && flows
            .iter()
            .all(|f| expected.flows.get(f.flow.name()).copied().unwrap_or(0) == f.count)
        && vault.wrong_guesses == vault.expected_wrong_guesses
        && vault.lockouts == expected.lockouts
        && restores.verified == expected.restores;
    FleetReport {
        seed: spec.seed,
        devices: spec.devices,
        days: spec.days,
        concurrency,
        profile_mix: spec.profile_mix.to_string(),
        scenario_mix: spec.scenario_mix.to_string(),
        max_guesses: outcome.max_guesses,
        wall_secs: outcome.wall_secs,
        phones_per_minute: spec.devices as f64 * 60.0 / wall,
        backups,
        backups_per_sec: backups as f64 / wall,
        operations: samples.len() as u64,
        operations_per_sec: samples.len() as f64 / wall,
        bytes_moved,
        mib_per_sec: bytes_moved as f64 / MIB / wall,
        flows,
        vault,
        restores,
        failures,
        skipped_events: outcome.skipped_events,
        retries: outcome.retries,
        calls_given_up: outcome.calls_given_up,
        errors: samples
            .iter()
            .filter_map(|s| {
                s.error.as_ref().map(|error| ErrorLine {
                    phone: s.phone,
                    day: s.day,
                    flow: s.flow,
                    error: error.clone(),
                })
            })
            .take(LISTED_ERRORS)
            .collect(),
        expected,
        matches_schedule,
        latency_edges_ms: edges,
        timeline: Timeline {
            day_starts_secs: outcome.day_starts_secs.clone(),
            ..timeline(samples, outcome.wall_secs)
        },
    }
}

fn flow_stats(flow: Flow, samples: &[Sample], edges: &[f64]) -> FlowStats {
    let of_flow: Vec<&Sample> = samples.iter().filter(|s| s.flow == Some(flow)).collect();
    let mut ms: Vec<f64> = of_flow
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.secs * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let mut histogram = vec![0u64; edges.len() + 1];
    for &value in &ms {
        histogram[edges.partition_point(|&edge| edge <= value)] += 1;
    }
    let sum = |f: fn(&Sample) -> u64| of_flow.iter().map(|s| f(s)).sum::<u64>();
    let bytes_moved = sum(|s| s.bytes_moved);
    let bytes_uploaded = sum(|s| s.bytes_uploaded);
    let bytes_changed = sum(|s| s.bytes_changed);
    let busy_secs: f64 = of_flow.iter().map(|s| s.secs).sum();
    FlowStats {
        flow,
        count: of_flow.len() as u64,
        failures: of_flow.iter().filter(|s| s.error.is_some()).count() as u64,
        expected_refusals: sum(|s| s.refusals as u64),
        wrong_guesses: sum(|s| s.wrong_guesses as u64),
        lockouts: sum(|s| s.lockouts as u64),
        p50_ms: percentile(&ms, 0.50),
        p95_ms: percentile(&ms, 0.95),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        mean_ms: if ms.is_empty() {
            0.0
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        },
        bytes_moved,
        bytes_uploaded,
        bytes_changed,
        mib_per_sec: (bytes_moved > 0).then(|| bytes_moved as f64 / MIB / busy_secs.max(1e-9)),
        upload_per_changed: (bytes_changed > 0 && bytes_uploaded > 0)
            .then(|| bytes_uploaded as f64 / bytes_changed as f64),
        histogram,
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn timeline(samples: &[Sample], wall_secs: f64) -> Timeline {
    let bucket_secs = (wall_secs / TIMELINE_BUCKETS as f64).max(0.5);
    let n = ((wall_secs / bucket_secs).ceil() as usize).clamp(1, TIMELINE_BUCKETS + 1);
    let mut ops = vec![0u64; n];
    let mut commits = vec![0u64; n];
    let mut bytes = vec![0f64; n];
    let bucket_of = |t: f64| ((t / bucket_secs) as usize).min(n - 1);
    for s in samples.iter().filter(|s| s.error.is_none()) {
        let end = s.start_secs + s.secs;
        ops[bucket_of(end)] += 1;
        commits[bucket_of(end)] += s.flow.is_some_and(Flow::commits) as u64;
        if s.bytes_moved == 0 {
            continue;
        }
        // Spread the bytes over the buckets the operation overlaps.
        let (first, last) = (bucket_of(s.start_secs), bucket_of(end));
        for (b, slot) in bytes.iter_mut().enumerate().take(last + 1).skip(first) {
            let lo = s.start_secs.max(b as f64 * bucket_secs);
            let hi = end.min((b + 1) as f64 * bucket_secs);
            let share = if s.secs > 0.0 {
                ((hi - lo) / s.secs).max(0.0)
            } else {
                1.0
            };
            *slot += s.bytes_moved as f64 * share;
        }
    }
    let buckets = (0..n)
        .map(|b| Bucket {
            start_secs: b as f64 * bucket_secs,
            ops_per_sec: ops[b] as f64 / bucket_secs,
            backups_per_sec: commits[b] as f64 / bucket_secs,
            mib_per_sec: bytes[b] / MIB / bucket_secs,
        })
        .collect();
    Timeline {
        bucket_secs,
        buckets,
        day_starts_secs: Vec::new(),
    }
}

/// Counts per flow, by name, as the schedule's `Expected::flows` has them.
pub fn counts(report: &FleetReport) -> BTreeMap<String, u64> {
    report
        .flows
        .iter()
        .map(|f| (f.flow.name().to_string(), f.count))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn histogram_and_timeline_place_every_operation() {
        let sample = |flow, start_secs, secs, bytes_moved| Sample {
            flow: Some(flow),
            start_secs,
            secs,
            bytes_moved,
            ..Sample::default()
        };
        let samples = vec![
            sample(Flow::BackupFull, 0.0, 0.0004, 0),
            sample(Flow::BackupFull, 0.0, 0.05, 1 << 20),
            sample(Flow::BackupFull, 1.0, 2.0, 4 << 20),
            sample(Flow::Restore, 5.0, 200.0, 0),
        ];
        let edges = latency_edges_ms();
        let stats = flow_stats(Flow::BackupFull, &samples, &edges);
        assert_eq!(stats.count, 3);
        assert_eq!(stats.histogram.iter().sum::<u64>(), 3);
        assert_eq!(stats.histogram[0], 1, "under 1 ms");
        let restore = flow_stats(Flow::Restore, &samples, &edges);
        assert_eq!(restore.histogram[edges.len()], 1, "over 100 s");
        let timeline = timeline(&samples[..3], 6.0);
        let moved: f64 = timeline
            .buckets
            .iter()
            .map(|b| b.mib_per_sec * timeline.bucket_secs)
            .sum();
        assert!((moved - 5.0).abs() < 1e-6, "{moved}");
        let ops: f64 = timeline
            .buckets
            .iter()
            .map(|b| b.ops_per_sec * timeline.bucket_secs)
            .sum();
        assert!((ops - 3.0).abs() < 1e-6);
    }
}
