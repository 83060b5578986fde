//! The fleet simulator against the real stack: 60 small phones over four
//! days living through every flow; the report's counts must equal what the
//! schedule (computed here from the same seed) says, every restore must
//! verify, nothing may fail; the services' metrics must count the same.

use std::process::Command;
use std::time::Instant;

use device_sim::fleet::schedule::{Action, ChangeProof, Method};
use device_sim::fleet::{FleetSpec, Flow, ProfileMix, ScenarioMix, stats};
use e2e_tests::scrape::{sample, scrape};
use e2e_tests::{MAX_GUESSES, Stack, bin};

const SEED: u64 = 11;
const DEVICES: u32 = 60;
const DAYS: u32 = 4;

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_sixty_phones_does_exactly_what_its_schedule_says() {
    // The schedule first: it must cover every flow and both key methods.
    let spec = FleetSpec {
        seed: SEED,
        devices: DEVICES,
        days: DAYS,
        profile_mix: "tiny".parse::<ProfileMix>().unwrap(),
        scenario_mix: ScenarioMix::lifecycle(),
    };
    let plans = device_sim::fleet::schedule(&spec);
    let expected = device_sim::fleet::expected(&plans);
    for flow in Flow::ALL {
        assert!(
            expected.flows[flow.name()] > 0,
            "no {} scheduled",
            flow.name()
        );
    }
    let scheduled = |method: Method, matches: &dyn Fn(&Action) -> bool| {
        plans
            .iter()
            .any(|p| p.method == method && p.events.iter().any(|e| matches(&e.action)))
    };
    for method in [Method::Key, Method::Password] {
        assert!(scheduled(method, &|a| matches!(
            a,
            Action::LosePhone { .. }
        )));
        assert!(scheduled(method, &|a| *a == Action::RotateKey));
        assert!(scheduled(method, &|a| *a == Action::Disable));
    }
    for proof in [ChangeProof::OldPassword, ChangeProof::Key] {
        assert!(scheduled(Method::Password, &|a| matches!(
            a,
            Action::ChangePassword { proof: p, .. } if *p == proof
        )));
    }
    assert!(expected.typos > 0, "no mistyped password scheduled");

    let stack = Stack::start().await.unwrap();
    let report_dir = stack.dir().join("fleet-report");
    let started = Instant::now();
    let output = Command::new(bin("device-sim"))
        .args([
            "fleet",
            "--profile-mix",
            "tiny",
            "--scenario-mix",
            "lifecycle",
        ])
        .args([
            "--devices",
            &DEVICES.to_string(),
            "--days",
            &DAYS.to_string(),
        ])
        .args(["--seed", &SEED.to_string(), "--concurrency", "8"])
        .arg("--insecure-fast-ksf")
        .arg("--report-dir")
        .arg(&report_dir)
        .envs(stack.sim_env())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every operation matches the schedule"),
        "{stdout}"
    );
    assert!(stdout.contains("report.html"), "{stdout}");
    println!("{stdout}fleet run took {secs:.1} s");

    let report = device_sim::fleet::read_report(&report_dir.join("report.json")).unwrap();
    assert_eq!(stats::counts(&report), expected.flows, "{stdout}");
    assert_eq!(
        report.expected, expected,
        "the simulator ran another schedule"
    );
    assert_eq!(report.failures, 0, "{:?}", report.errors);
    assert_eq!(report.skipped_events, 0);
    assert!(report.matches_schedule);
    assert_eq!(report.restores.count, expected.restores);
    assert_eq!(report.restores.verified, expected.restores);
    assert_eq!(report.restores.mismatched, 0);
    assert_eq!(report.max_guesses, MAX_GUESSES);
    assert_eq!(report.vault.lockouts, expected.lockouts);
    assert_eq!(
        report.vault.wrong_guesses,
        expected.typos + expected.lockouts * MAX_GUESSES as u64
    );
    services_counted_what_the_report_says(&stack, &report).await;

    // Daily backups send about what changed, not the whole phone.
    let daily = report
        .flows
        .iter()
        .find(|f| f.flow == Flow::BackupIncremental)
        .unwrap();
    let ratio = daily.upload_per_changed.unwrap();
    assert!(
        ratio < 2.0,
        "daily backups uploaded {ratio:.2}× what changed"
    );

    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Latency distribution"));
}

/// Phones larger than the test stack's 2 MiB quota cannot back up: the
/// fleet reports each failure, skips what those phones would have done
/// next, and exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_whose_backups_fail_says_so_and_exits_non_zero() {
    let stack = Stack::start().await.unwrap();
    let report_dir = stack.dir().join("fleet-report");
    let output = Command::new(bin("device-sim"))
        .args([
            "fleet",
            "--profile-mix",
            "heavy",
            "--scenario-mix",
            "steady",
        ])
        .args(["--devices", "3", "--days", "2", "--seed", "5"])
        .arg("--insecure-fast-ksf")
        .arg("--report-dir")
        .arg(&report_dir)
        .envs(stack.sim_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED: 3 operations failed"), "{stdout}");

    let report = device_sim::fleet::read_report(&report_dir.join("report.json")).unwrap();
    assert!(!report.matches_schedule);
    assert_eq!(report.failures, 3);
    let full = report
        .flows
        .iter()
        .find(|f| f.flow == Flow::BackupFull)
        .unwrap();
    assert_eq!((full.count, full.failures), (3, 3));
    assert_eq!(
        report.skipped_events, report.expected.flows["backup_incremental"],
        "a failed phone does nothing more"
    );
    assert!(
        report.errors.iter().all(|e| e.error.contains("quota")),
        "{:?}",
        report.errors
    );
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(html.contains("<h2>Failures</h2>"));
}

/// The gateway's and the vault's Prometheus endpoints, scraped after the
/// run, count what the simulator's report says happened.
async fn services_counted_what_the_report_says(
    stack: &Stack,
    report: &device_sim::fleet::FleetReport,
) {
    let gateway = scrape(&format!("127.0.0.1:{}", stack.gateway_metrics_port))
        .await
        .unwrap();
    let vault = scrape(&format!("127.0.0.1:{}", stack.vault_metrics_port))
        .await
        .unwrap();
    let committed: u64 = Flow::ALL
        .into_iter()
        .filter(|flow| flow.commits())
        .map(|flow| stats::counts(report)[flow.name()])
        .sum();
    assert_eq!(
        sample(&gateway, "gateway_commits_total", ""),
        committed as f64,
        "{gateway}"
    );
    let commit_calls = sample(
        &gateway,
        "rpc_calls_total",
        r#"method="/e2ebackup.storage.v2.BlobGateway/Commit",code="OK""#,
    );
    assert_eq!(commit_calls, committed as f64, "{gateway}");
    assert!(sample(&gateway, "gateway_objects_deleted_total", "") > 0.0);

    assert_eq!(
        sample(&vault, "vault_lockouts_total", ""),
        report.vault.lockouts as f64,
        "{vault}"
    );
    assert_eq!(
        sample(&vault, "vault_wrong_passwords_total", ""),
        report.vault.wrong_guesses as f64,
        "{vault}"
    );
    // Every guess spent was a login that finished one way or the other.
    assert_eq!(
        sample(&vault, "vault_guesses_spent_total", ""),
        sample(&vault, "vault_wrong_passwords_total", "")
            + sample(&vault, "vault_logins_succeeded_total", ""),
        "{vault}"
    );
    assert!(vault.contains("rpc_latency_seconds_bucket"), "{vault}");
}
