//! A fleet of simulated phones (`device-sim fleet`, the real binary) against
//! the stack in containers: every operation must match the schedule, every
//! restore must verify, and the guess counts must be exact across the vault
//! replicas' shared etcd store.

use std::process::Command;

use e2e_tests::bin;

use crate::stack::{ContainerStack, MAX_GUESSES};

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_phones_lives_its_lifecycle_against_the_stack_in_containers() {
    docker_or_skip!();
    let stack = ContainerStack::start().await.unwrap();
    let report_dir = stack.dir().join("fleet-report");
    // Vault replica 2, to show the replicas share one store (the fleet's
    // enable happened nowhere else).
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
            "16",
            "--days",
            "2",
            "--seed",
            "7",
            "--concurrency",
            "8",
        ])
        .args(["--insecure-fast-ksf", "--no-progress"])
        .arg("--report-dir")
        .arg(&report_dir)
        .env("KEY_VAULT_ENDPOINT", stack.vault_endpoint(1).await)
        .env("KEY_VAULT_FINGERPRINT", &stack.fingerprint)
        .env("BLOB_GATEWAY_ENDPOINT", stack.gateway_endpoint().await)
        .env("E2EB_AUTHORITY_KEY_FILE", stack.authority_key_file())
        .env("E2EB_TLS_CA_FILE", stack.ca_file())
        .env("DEVICE_SIM_WORK_DIR", stack.dir().join("sim"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");

    let report = device_sim::fleet::read_report(&report_dir.join("report.json")).unwrap();
    assert!(report.matches_schedule, "{stdout}");
    assert_eq!(report.failures, 0, "{:?}", report.errors);
    assert_eq!(report.skipped_events, 0);
    assert!(
        report.restores.count > 0,
        "no restore scheduled: pick another seed"
    );
    assert_eq!(report.restores.verified, report.restores.count);
    assert_eq!(report.restores.mismatched, 0);
    assert_eq!(report.max_guesses, MAX_GUESSES);
    assert_eq!(report.vault.lockouts, report.expected.lockouts);
    assert_eq!(
        report.vault.wrong_guesses,
        report.expected.typos + report.expected.lockouts * MAX_GUESSES as u64
    );
}
