//! Faults on the client side (issue 10 item 5): phones ride out a gateway
//! killed and restarted mid-fleet by retrying (counted in the report); a
//! vault replica killed between LoginStart and LoginFinish is failed over
//! and the guess count stays exact; a login whose answer is lost tells the
//! user a guess may have been spent instead of spending another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use account_token::Audience;
use backup_client::RootKey;
use backup_client::vault::{KsfStrength, LoginStep, Password, VaultClient, VaultError};
use e2e_tests::{MAX_GUESSES, Stack, VAULT_REPLICAS, bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ALICE: &str = "alice";

fn password(text: &str) -> Password {
    Password::new(text)
}

/// A vault client for `account` at `endpoints` (comma-separated).
fn vault_at(stack: &Stack, endpoints: &str, fingerprint: &str) -> VaultClient {
    VaultClient::connect(
        endpoints,
        &stack.trust,
        stack.token(ALICE, Audience::KeyVault),
        ALICE,
        fingerprint,
        KsfStrength::InsecureFastForTests,
    )
    .unwrap()
}

fn wrong_password_left(error: &VaultError) -> u32 {
    match error {
        VaultError::WrongPassword { guesses_remaining } => *guesses_remaining,
        other => panic!("expected a wrong password, got {other:?}"),
    }
}

/// SIGKILLs `pid` and returns once nothing accepts on `port` any more (the
/// process is gone). Called from inside a login, so it blocks briefly.
fn kill_now(pid: u32, port: u16) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A login step observer that kills the replica serving the login once
/// LoginStart has been answered (the guess counted, the session in etcd).
fn kill_after_start(stack: &Stack, index: usize) -> impl Fn(LoginStep) + Send + Sync + 'static {
    let pid = stack.pid(VAULT_REPLICAS[index]).expect("the replica runs");
    let port = stack.vault_replica_ports[index];
    move |step| {
        if step == LoginStep::Started {
            kill_now(pid, port);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_replica_killed_mid_login_is_failed_over_and_the_count_is_exact() {
    let mut stack = Stack::start().await.unwrap();
    stack.start_etcd().await.unwrap();
    for index in 0..VAULT_REPLICAS.len() {
        stack.start_vault_replica(index).await.unwrap();
    }
    let fingerprint = stack.vault_fleet_fingerprint();
    let endpoints = stack.vault_replica_endpoints();
    let vault = vault_at(&stack, &endpoints, &fingerprint);
    let key = RootKey::generate();
    vault
        .register(&password("right"), &key, None)
        .await
        .unwrap();

    let error = vault.recover(&password("wrong")).await.unwrap_err();
    assert_eq!(wrong_password_left(&error), MAX_GUESSES - 1);

    // Replica 1 answers LoginStart and dies; LoginFinish goes to replica 2
    // (the session is in etcd) and says exactly how many guesses are left.
    let killing = vault.clone().on_login_step(kill_after_start(&stack, 0));
    let error = killing.recover(&password("wrong")).await.unwrap_err();
    assert_eq!(
        wrong_password_left(&error),
        MAX_GUESSES - 2,
        "one guess per login, none spent twice"
    );
    assert!(vault.retry().stats.retries() > 0, "the finish was retried");
    stack.kill(VAULT_REPLICAS[0]);

    // The good password, with replica 2 (now the current one) killed
    // mid-login: the flow completes on replica 3 and resets the count.
    let killing = vault.clone().on_login_step(kill_after_start(&stack, 1));
    let recovered = killing.recover(&password("right")).await.unwrap();
    assert_eq!(recovered.key.auth_public_key(), key.auth_public_key());
    stack.kill(VAULT_REPLICAS[1]);
    let error = vault.recover(&password("wrong")).await.unwrap_err();
    assert_eq!(wrong_password_left(&error), MAX_GUESSES - 1);

    // A replica that comes back serves the same records.
    stack.start_vault_replica(0).await.unwrap();
    stack.kill(VAULT_REPLICAS[2]);
    let recovered = vault.recover(&password("right")).await.unwrap();
    assert_eq!(recovered.key.auth_public_key(), key.auth_public_key());
}

/// A TCP relay to `target` that forwards everything until `drop_answers`
/// is set, then swallows what the server sends: answers are lost on the
/// way back, requests still arrive.
async fn answer_dropping_relay(target: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let drop_answers = Arc::new(AtomicBool::new(false));
    let dropping = drop_answers.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let dropping = dropping.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    if !dropping.load(Ordering::SeqCst)
                        && client_write.write_all(&buffer[..n]).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (port, drop_answers)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_whose_answer_is_lost_says_a_guess_may_be_spent() {
    let stack = Stack::start().await.unwrap();
    let vault = stack.vault(ALICE);
    let key = RootKey::generate();
    vault
        .register(&password("right"), &key, None)
        .await
        .unwrap();

    let (relay, drop_answers) = answer_dropping_relay(stack.vault_port).await;
    let policy = rpc::retry::RetryPolicy {
        call_timeout: Duration::from_secs(2),
        ..rpc::retry::RetryPolicy::default()
    };
    let observed = drop_answers.clone();
    let lossy = vault_at(
        &stack,
        &format!("https://127.0.0.1:{relay}"),
        &stack.vault_fingerprint(),
    )
    .with_retry(rpc::retry::Retry::new(policy))
    .on_login_step(move |step| {
        if step == LoginStep::Starting {
            observed.store(true, Ordering::SeqCst);
        }
    });
    let error = lossy.recover(&password("right")).await.unwrap_err();
    assert!(matches!(error, VaultError::GuessMayBeSpent(_)), "{error:?}");
    assert!(
        error.to_string().contains("may have cost one"),
        "the user is told: {error}"
    );
    assert!(
        !error.is_retryable(),
        "the caller decides, not a retry loop"
    );
    assert_eq!(
        lossy.retry().stats.retries(),
        0,
        "LoginStart is never sent twice"
    );

    // It did cost one: the next wrong guess leaves two fewer.
    let error = vault.recover(&password("wrong")).await.unwrap_err();
    assert_eq!(wrong_password_left(&error), MAX_GUESSES - 2);
    vault.recover(&password("right")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_rides_out_a_gateway_killed_and_restarted_mid_run() {
    let mut stack = Stack::start().await.unwrap();
    let report_dir = stack.dir().join("fleet-report");
    let mut fleet = tokio::process::Command::new(bin("device-sim"))
        .args(["fleet", "--profile-mix", "tiny", "--scenario-mix", "steady"])
        .args(["--devices", "30", "--days", "3", "--seed", "21"])
        .args(["--concurrency", "8", "--no-progress"])
        .arg("--insecure-fast-ksf")
        .arg("--report-dir")
        .arg(&report_dir)
        .envs(stack.sim_env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until the phones are busy backing up, then take the gateway away.
    loop {
        let objects = stack.list_bucket("").await.unwrap().len();
        if objects >= 40 {
            break;
        }
        assert!(
            fleet.try_wait().unwrap().is_none(),
            "the fleet ended before the gateway could be killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.kill("blob-gateway");
    stack.start_gateway().await.unwrap();
    assert!(
        fleet.try_wait().unwrap().is_none(),
        "the fleet was still running while the gateway was down"
    );

    let output = fleet.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report = device_sim::fleet::read_report(&report_dir.join("report.json")).unwrap();
    assert_eq!(report.failures, 0, "{:?}", report.errors);
    assert_eq!(report.skipped_events, 0);
    assert!(report.matches_schedule);
    assert!(report.retries > 0, "the outage was ridden out by retries");
    assert_eq!(report.calls_given_up, 0);
    assert!(stdout.contains("retries: "), "{stdout}");
}
