//! Who can prove what, against the real binaries: tokens are for one
//! audience and from one authority, expire, and never cross the wire in the
//! clear; clients trust only their CA; plaintext happens only when both
//! sides are explicitly told to allow it.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use account_token::{AccountId, Audience, Authority, BearerToken};
use backup_client::vault::{KsfStrength, VaultClient, VaultError};
use backup_client::{GatewayClient, GatewayError, RootKey, back_up, restore};
use e2e_tests::{GATEWAY_SERVICE, Stack, bin, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::key_backup::small_phone;

/// Long enough that it cannot turn up in ciphertext by chance.
const WATCHED: &str = "wire-watched-account-7f3a";

fn vault_with(stack: &Stack, account: &str, token: BearerToken) -> VaultClient {
    VaultClient::connect(
        &stack.vault_endpoint(),
        &stack.trust,
        token,
        account,
        &stack.vault_fingerprint(),
        KsfStrength::InsecureFastForTests,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_refuses_the_other_services_tokens_and_accepts_its_own() {
    let stack = Stack::start().await.unwrap();

    // A vault token at the gateway: refused, and the reason names both.
    let misdirected = stack.client_with(stack.token("alice", Audience::KeyVault));
    let error = misdirected.get_backup().await.unwrap_err();
    let GatewayError::Unauthenticated(reason) = &error else {
        panic!("expected UNAUTHENTICATED, got {error:?}")
    };
    assert!(
        reason.contains("\"key-vault\"") && reason.contains("blob-gateway"),
        "{reason}"
    );
    // The gateway's own token works.
    let right = stack.client_with(stack.token("alice", Audience::BlobGateway));
    assert!(right.get_backup().await.unwrap().is_none());

    // A gateway token at the vault: refused, with the reason.
    let misdirected = vault_with(&stack, "alice", stack.token("alice", Audience::BlobGateway));
    let error = misdirected.info().await.unwrap_err();
    let VaultError::Unauthenticated(reason) = &error else {
        panic!("expected UNAUTHENTICATED, got {error:?}")
    };
    assert!(
        reason.contains("\"blob-gateway\"") && reason.contains("key-vault"),
        "{reason}"
    );
    let right = vault_with(&stack, "alice", stack.token("alice", Audience::KeyVault));
    assert_eq!(right.info().await.unwrap().0, stack.vault_fingerprint());
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_from_another_authority_or_expired_are_refused_by_both_services() {
    let stack = Stack::start().await.unwrap();
    let alice = AccountId::new("alice").unwrap();
    let impostor = Authority::generate();
    for audience in Audience::ALL {
        let foreign = impostor
            .mint(&alice, audience, Duration::from_secs(600))
            .unwrap();
        let expired = stack
            .authority
            .mint_at(
                &alice,
                audience,
                SystemTime::now() - Duration::from_secs(3600),
                Duration::from_secs(900),
            )
            .unwrap();
        for (token, expected) in [(foreign, "not signed"), (expired, "expired at")] {
            let message = match audience {
                Audience::BlobGateway => {
                    match stack
                        .client_with(BearerToken::new(token))
                        .get_backup()
                        .await
                    {
                        Err(GatewayError::Unauthenticated(message)) => message,
                        other => panic!("{audience}: expected UNAUTHENTICATED, got {other:?}"),
                    }
                }
                Audience::KeyVault => {
                    match vault_with(&stack, "alice", BearerToken::new(token))
                        .info()
                        .await
                    {
                        Err(VaultError::Unauthenticated(message)) => message,
                        other => panic!("{audience}: expected UNAUTHENTICATED, got {other:?}"),
                    }
                }
            };
            assert!(message.contains(expected), "{audience}: {message}");
        }
    }
    // The stack's own authority, fresh tokens: both work.
    assert!(stack.client("alice").get_backup().await.unwrap().is_none());
    stack.vault("alice").info().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_refuse_servers_whose_certificate_is_not_from_their_ca() {
    let stack = Stack::start().await.unwrap();
    let other_ca = stack.dir().join("other-ca");
    rpc::dev_certs::generate(&other_ca, &["blob-gateway", "key-vault"]).unwrap();
    let other_trust = rpc::Trust::from_ca_file(&rpc::dev_certs::ca_path(&other_ca)).unwrap();

    let gateway = GatewayClient::connect(
        &stack.gateway_endpoint(),
        &other_trust,
        stack.token("alice", Audience::BlobGateway),
    )
    .unwrap();
    let error = gateway.get_backup().await.unwrap_err();
    assert!(
        matches!(&error, GatewayError::UntrustedServer(reason) if reason.contains("UnknownIssuer")),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "retrying cannot fix trust");

    let vault = VaultClient::connect(
        &stack.vault_endpoint(),
        &other_trust,
        stack.token("alice", Audience::KeyVault),
        "alice",
        &stack.vault_fingerprint(),
        KsfStrength::InsecureFastForTests,
    )
    .unwrap();
    let error = vault.info().await.unwrap_err();
    assert!(
        matches!(&error, VaultError::UntrustedServer(_)),
        "{error:?}"
    );

    // The readiness probe says so at once instead of waiting out its deadline.
    let output = Command::new(bin("health-probe"))
        .args(["--endpoint", &stack.gateway_endpoint()])
        .args(["--service", GATEWAY_SERVICE, "--wait-secs", "60"])
        .arg("--tls-ca")
        .arg(rpc::dev_certs::ca_path(&other_ca))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not trust"), "{stderr}");

    // The stack's own CA: everything works.
    assert!(stack.client("alice").get_backup().await.unwrap().is_none());
    let output = Command::new(bin("health-probe"))
        .args(["--endpoint", &stack.gateway_endpoint()])
        .args(["--service", GATEWAY_SERVICE, "--wait-secs", "5"])
        .arg("--tls-ca")
        .arg(rpc::dev_certs::ca_path(&stack.tls_dir()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// What a TCP relay saw of each connection, per direction.
#[derive(Default)]
struct Recording {
    /// Client to server, one entry per connection.
    requests: Vec<Vec<u8>>,
    /// Every byte in both directions.
    all: Vec<u8>,
}

/// A TCP relay on loopback that forwards to `target` and records every
/// byte: a network attacker's view of the connection.
async fn recording_relay(target: u16) -> (u16, Arc<Mutex<Recording>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Recording::default()));
    let recording = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
            let connection = {
                let mut recording = recording.lock().unwrap();
                recording.requests.push(Vec::new());
                recording.requests.len() - 1
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = Some(connection);
            tokio::spawn(copy_recording(
                client_read,
                server_write,
                recording.clone(),
                up,
            ));
            tokio::spawn(copy_recording(
                server_read,
                client_write,
                recording.clone(),
                None,
            ));
        }
    });
    (port, seen)
}

async fn copy_recording(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Recording>>,
    request_of: Option<usize>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                {
                    let mut seen = seen.lock().unwrap();
                    seen.all.extend_from_slice(&buffer[..n]);
                    if let Some(connection) = request_of {
                        seen.requests[connection].extend_from_slice(&buffer[..n]);
                    }
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What an attacker who speaks HTTP/2 reads from recorded client bytes:
/// the `authorization` headers of the first `requests` requests
/// (HPACK-decoded; h2 Huffman-codes header values, so a plain byte search
/// would miss them). An error when the bytes are not HTTP/2 at all (TLS).
async fn authorization_headers(
    client_bytes: Vec<u8>,
    requests: usize,
) -> Result<Vec<String>, h2::Error> {
    // The pipe holds the whole recording, and stays open while decoding: at
    // end of input h2 would drop requests it has decoded but not handed out.
    let (mut replay, server_side) = tokio::io::duplex(client_bytes.len() + (1 << 16));
    replay.write_all(&client_bytes).await.unwrap();
    let decode = async {
        let mut connection = h2::server::handshake(server_side).await?;
        let mut found = Vec::new();
        for _ in 0..requests {
            let Some(accepted) = connection.accept().await else {
                break;
            };
            let (request, _respond) = accepted?;
            if let Some(value) = request.headers().get("authorization") {
                found.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
        }
        Ok(found)
    };
    let decoded = tokio::time::timeout(Duration::from_secs(30), decode)
        .await
        .expect("the recording holds the requests asked for");
    drop(replay);
    decoded
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_or_account_is_readable_on_the_wire() {
    let stack = Stack::start().await.unwrap();
    let (port, seen) = recording_relay(stack.gateway_port).await;
    let account = AccountId::new(WATCHED).unwrap();
    let token = stack
        .authority
        .mint(&account, Audience::BlobGateway, Duration::from_secs(600))
        .unwrap();
    let through_relay = GatewayClient::connect(
        &format!("https://127.0.0.1:{port}"),
        &stack.trust,
        BearerToken::new(token.clone()),
    )
    .unwrap();

    // A whole backup and restore through the relay.
    let phone = small_phone(stack.dir(), 31);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(WATCHED, &key).await;
    back_up(&through_relay, &vault, WATCHED, &key, &phone)
        .await
        .unwrap();
    let restored = stack.dir().join("restored");
    restore(&through_relay, &vault, WATCHED, &key, &restored)
        .await
        .unwrap();
    assert!(
        device_sim::phone::diff_trees(&phone, &restored)
            .unwrap()
            .is_empty()
    );

    let (all, requests) = {
        let recording = seen.lock().unwrap();
        (recording.all.clone(), recording.requests.clone())
    };
    assert!(all.len() > 10_000, "the relay carried the backup");
    for (what, needle) in [
        ("the token", token.expose_secret().as_bytes()),
        (
            "the token's signed body",
            &token.expose_secret().as_bytes()[10..40],
        ),
        ("the Bearer scheme", b"Bearer".as_slice()),
        ("the account id", WATCHED.as_bytes()),
    ] {
        assert!(!contains(&all, needle), "{what} crossed the wire readable");
    }
    // An attacker who decodes HTTP/2 gets nothing either: it is TLS.
    assert!(!requests.is_empty());
    for bytes in requests {
        assert_eq!(
            bytes[0], 0x16,
            "each connection starts with a TLS handshake"
        );
        assert!(authorization_headers(bytes, 1).await.is_err());
    }
}

/// A child process killed when the test ends, also on panic.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway_command(stack: &Stack, port: u16) -> Command {
    let mut command = Command::new(bin("blob-gateway"));
    command
        .env("BLOB_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("S3_ENDPOINT", stack.s3_endpoint())
        .env("E2EB_TOKEN_PUBLIC_KEY_FILE", stack.token_public_key_file())
        .env("RUST_LOG", "info")
        .env_remove("TLS_CERT_FILE")
        .env_remove("TLS_KEY_FILE")
        .env_remove("INSECURE_PLAINTEXT")
        // Not the stack's certificates: the defaults under .state/tls,
        // relative to a directory where none exist.
        .current_dir(stack.dir())
        .stdin(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_only_with_the_explicit_flag_on_both_sides() {
    let stack = Stack::start().await.unwrap();

    // No certificate and no flag: the gateway refuses to start, and says why.
    let port = free_port();
    let output = gateway_command(&stack, port).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no TLS certificate for blob-gateway")
            && stderr.contains("--insecure-plaintext"),
        "{stderr}"
    );

    // With --insecure-plaintext it serves plaintext...
    let child = gateway_command(&stack, port)
        .arg("--insecure-plaintext")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _gateway = Killed(child);
    let url = format!("http://127.0.0.1:{port}");
    let plaintext = rpc::Trust::insecure_plaintext_only();
    health_probe::wait_serving(&url, &plaintext, GATEWAY_SERVICE, Duration::from_secs(30))
        .await
        .unwrap();

    // ...which a client refuses unless it is told to allow plaintext too.
    let token = || stack.token("alice", Audience::BlobGateway);
    let refused = GatewayClient::connect(&url, &stack.trust, token()).err();
    assert!(
        matches!(
            refused,
            Some(GatewayError::Connect(
                rpc::ClientSetupError::PlaintextRefused { .. }
            ))
        ),
        "{refused:?}"
    );

    // Allowed on both sides, it works, and the wire shows why it is not the
    // default: the relay reads the token and the account.
    let (relay, seen) = recording_relay(port).await;
    let account = AccountId::new(WATCHED).unwrap();
    let watched = stack
        .authority
        .mint(&account, Audience::BlobGateway, Duration::from_secs(600))
        .unwrap();
    let insecure = GatewayClient::connect(
        &format!("http://127.0.0.1:{relay}"),
        &stack.trust.clone().allow_insecure_plaintext(),
        BearerToken::new(watched.clone()),
    )
    .unwrap();
    assert!(insecure.get_backup().await.unwrap().is_none());
    let requests = seen.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 1, "one connection, one GetBackup call");
    let read = authorization_headers(requests[0].clone(), 1).await.unwrap();
    assert_eq!(read, [format!("Bearer {}", watched.expose_secret())]);

    // The TLS gateway of the stack does not answer a plaintext client.
    let downgraded = GatewayClient::connect(
        &format!("http://127.0.0.1:{}", stack.gateway_port),
        &plaintext,
        token(),
    )
    .unwrap();
    assert!(downgraded.get_backup().await.is_err());
    assert!(stack.client("alice").get_backup().await.unwrap().is_none());
}
