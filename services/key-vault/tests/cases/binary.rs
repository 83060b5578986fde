//! The real `key-vault` binary: the fingerprint line and file, health, and
//! a `kill -9` between LoginStart and LoginFinish.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and returns it with its stdout fingerprint once it
/// answers health checks as SERVING.
async fn spawn(dir: &Path, port: u16) -> (Child, String) {
    prepare(dir);
    let tls = tls_dir(dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_key-vault"))
        .env("KEY_VAULT_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEY_VAULT_DB", dir.join("vault/vault.db"))
        .env("KEY_VAULT_SEALING_KEY_FILE", dir.join("vault-sealing.key"))
        .env(
            "E2EB_TOKEN_PUBLIC_KEY_FILE",
            account_token::public_key_file(&authority_key_file(dir)),
        )
        .env(
            "TLS_CERT_FILE",
            rpc::dev_certs::cert_path(&tls, key_vault::SERVICE),
        )
        .env(
            "TLS_KEY_FILE",
            rpc::dev_certs::key_path(&tls, key_vault::SERVICE),
        )
        .env("KEY_VAULT_FINGERPRINT_FILE", dir.join("fingerprint"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn key-vault");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the vault prints its fingerprint within 30 s")
    .unwrap()
    .expect("a fingerprint line");
    let fingerprint = line
        .strip_prefix("key-vault public key fingerprint: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    for _ in 0..200 {
        let url = format!("https://127.0.0.1:{port}");
        let endpoint = rpc::endpoint(&url, &trust(dir), &rpc::ChannelOptions::default()).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            let mut health = HealthClient::new(channel);
            let request = HealthCheckRequest {
                service: key_vault::SERVICE_NAME.into(),
            };
            if let Ok(response) = health.check(request).await {
                assert_eq!(response.into_inner().status(), ServingStatus::Serving);
                return (child, fingerprint);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("key-vault did not become healthy on port {port}");
}

#[tokio::test]
async fn the_binary_survives_kill_9_between_login_start_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, fingerprint) = spawn(dir.path(), port).await;
    assert_eq!(fingerprint.len(), 64);
    let written = std::fs::read_to_string(dir.path().join("fingerprint")).unwrap();
    assert_eq!(written.trim(), fingerprint);

    let token = |account: &str| token_in(dir.path(), account);
    let trust = trust(dir.path());
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut alice = VaultClient::connect(addr, &trust, "alice", token("alice")).await;
    assert_eq!(alice.info().await.unwrap().fingerprint, fingerprint);
    let backup_key = random_key();
    alice
        .register(b"pw", &backup_key, &[1; 32], None)
        .await
        .unwrap();
    alice.login_start(b"wrong").await.unwrap();
    let pending = alice.login_start(b"pw").await.unwrap();

    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    let port = free_port();
    let (_child, again) = spawn(dir.path(), port).await;
    assert_eq!(again, fingerprint, "the same secrets after a kill -9");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut alice = VaultClient::connect(addr, &trust, "alice", token("alice")).await;
    let logged_in = alice.login_finish(pending, b"pw").await.unwrap().success();
    assert_eq!(
        open_backup_key(&logged_in.export_key, "alice", &logged_in.sealed_key).unwrap(),
        backup_key
    );
}
