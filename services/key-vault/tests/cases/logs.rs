//! No password, key, ticket, session id, token or OPAQUE message in any of
//! the vault's log lines, at its most verbose level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;

use crate::support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every way a secret could be spelled in a log line.
fn spellings(secret: &[u8]) -> Vec<String> {
    vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        format!("{secret:?}"),
        String::from_utf8_lossy(secret).into_owned(),
    ]
}

// A current-thread runtime: the server's tasks run on this thread, so the
// thread-local subscriber sees all of them.
#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace,h2=info,hyper=info,tower=info,tonic=info")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(2)).await.unwrap();
    let token = vault.token("alice");
    let mut alice = vault.client("alice").await;
    let password = b"hunter2-but-longer-and-unique";
    let backup_key = random_key();
    let key_proof = [0x5a; 32];
    let registration = alice
        .register(password, &backup_key, &key_proof, None)
        .await
        .unwrap();
    let pending = alice.login_start(password).await.unwrap();
    let session_id = pending.session_id.clone();
    let credential_response = pending.credential_response.clone();
    let logged_in = alice
        .login_finish(pending, password)
        .await
        .unwrap()
        .success();
    let ticket = logged_in.ticket.clone();
    alice
        .register(
            b"second-password-xyz",
            &backup_key,
            &key_proof,
            Some(Auth::Ticket(ticket.clone())),
        )
        .await
        .unwrap();
    alice.login(password).await.unwrap();
    alice.login(password).await.unwrap();
    let _ = alice.login_start(password).await;
    // A refused token is logged as refused, without the token.
    let refused = authority(&vault.dir)
        .mint(
            &account_token::AccountId::new("alice").unwrap(),
            account_token::Audience::BlobGateway,
            std::time::Duration::from_secs(60),
        )
        .unwrap()
        .expose_secret()
        .to_string();
    assert!(alice.with_token(refused.clone()).info().await.is_err());
    vault.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("login succeeded"),
        "the capture is not empty:\n{logs}"
    );
    assert!(logs.contains("record erased"), "{logs}");
    assert!(logs.contains("refused an account token"), "{logs}");
    let secrets: [(&str, &[u8]); 10] = [
        ("password", password),
        ("backup key", &backup_key),
        ("key proof", &key_proof),
        ("export key", &registration.export_key),
        ("sealed key", &registration.sealed_key),
        ("session id", &session_id),
        ("credential response", &credential_response),
        ("ticket", &ticket),
        ("token", token.as_bytes()),
        ("refused token", refused.as_bytes()),
    ];
    for (name, secret) in secrets {
        for spelling in spellings(secret) {
            assert!(
                !logs.contains(&spelling),
                "the {name} appears in the logs as {spelling}"
            );
        }
    }
}
