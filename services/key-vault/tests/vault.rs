//! The key vault against real OPAQUE clients over gRPC on loopback: the
//! whole register → login → unseal round trip, the guess limit (exact under
//! 100 concurrent logins), durability across restarts and `kill -9`,
//! authorization of password changes and deletes, and isolation between
//! accounts. One test binary; the helpers live in `support/`.

mod support;

use std::time::Duration;

use support::*;
use tonic::Code;

const PASSWORD: &[u8] = b"correct horse battery staple";
const WRONG: &[u8] = b"Tr0ub4dor&3";
const KEY_PROOF: &[u8] = &[0x4b; 32];

fn db(vault: &TestVault) -> rusqlite::Connection {
    rusqlite::Connection::open(vault.dir.join("vault/vault.db")).unwrap()
}

/// The account's row as an operator reads it from the database.
fn stored_row(vault: &TestVault, account: &str) -> Option<serde_json::Value> {
    let body: String = db(vault)
        .query_row(
            "SELECT body FROM accounts WHERE account = ?1",
            [account],
            |row| row.get(0),
        )
        .ok()?;
    Some(serde_json::from_str(&body).expect("rows are JSON"))
}

/// The row's state and guess count.
fn stored_state(vault: &TestVault, account: &str) -> Option<(String, i64)> {
    let row = stored_row(vault, account)?;
    let state = row["state"].as_str().expect("a state").to_string();
    let guesses = row["registration"]["guesses"].as_i64().unwrap_or(0);
    Some((state, guesses))
}

#[tokio::test]
async fn register_login_and_unseal_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    let backup_key = random_key();

    let info = alice.info().await.unwrap();
    assert_eq!(info.max_guesses, 10);
    assert_eq!(info.fingerprint, vault.fingerprint);
    assert_eq!(
        info.fingerprint,
        vault_suite::fingerprint(&info.server_public_key)
    );

    let registration = alice
        .register(PASSWORD, &backup_key, KEY_PROOF, None)
        .await
        .unwrap();
    // The device pins the key the OPAQUE exchange itself authenticated.
    assert_eq!(registration.server_public_key, info.server_public_key);

    let pending = alice.login_start(PASSWORD).await.unwrap();
    assert_eq!(pending.session_id.len(), vault_suite::SESSION_ID_LEN);
    assert_eq!(pending.guesses_remaining, 9);
    let logged_in = alice
        .login_finish(pending, PASSWORD)
        .await
        .unwrap()
        .success();
    assert_eq!(logged_in.server_public_key, info.server_public_key);
    assert_eq!(logged_in.ticket.len(), vault_suite::LOGIN_TICKET_LEN);
    assert_eq!(logged_in.sealed_key, registration.sealed_key);
    assert_eq!(logged_in.export_key, registration.export_key);
    let unsealed = open_backup_key(&logged_in.export_key, "alice", &logged_in.sealed_key).unwrap();
    assert_eq!(unsealed, backup_key);

    // The vault holds exactly the client's ciphertext, and neither the key
    // nor the password is anywhere in its files.
    let row = stored_row(&vault, "alice").unwrap();
    let sealed = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        row["registration"]["sealed_key"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(sealed, registration.sealed_key);
    assert_eq!(
        stored_state(&vault, "alice"),
        Some(("active".into(), 0)),
        "a successful login resets the count"
    );
    for entry in std::fs::read_dir(dir.path().join("vault")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for needle in [
            &backup_key[..],
            hex::encode(backup_key).as_bytes(),
            PASSWORD,
        ] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }
    vault.stop().await;
}

#[tokio::test]
async fn wrong_passwords_count_down_and_erase_after_exactly_n() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();

    for guess in 1..=10u32 {
        let pending = alice.login_start(WRONG).await.unwrap();
        assert_eq!(pending.guesses_remaining, 10 - guess);
        let verdict = alice.login_finish(pending, WRONG).await.unwrap();
        assert_eq!(verdict.wrong(), (10 - guess, guess == 10), "guess {guess}");
    }
    assert_eq!(stored_state(&vault, "alice").unwrap().0, "erased");

    // From now on every call for the account says the key is gone...
    assert_reason(alice.login_start(PASSWORD).await, "key-erased");
    assert_reason(
        alice
            .register(PASSWORD, &random_key(), KEY_PROOF, None)
            .await,
        "key-erased",
    );
    assert_reason(
        alice
            .delete(Some(Auth::Key(KEY_PROOF.to_vec())), false)
            .await,
        "key-erased",
    );
    let status = assert_code(alice.login_start(PASSWORD).await, Code::FailedPrecondition);
    assert!(
        status.message().contains("too many wrong password guesses"),
        "{status:?}"
    );
    // ...except the vault's info, and starting over.
    alice.info().await.unwrap();
    alice.delete(None, true).await.unwrap();
    assert_code(alice.login_start(PASSWORD).await, Code::NotFound);
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    alice.login(PASSWORD).await.unwrap().success();
    vault.stop().await;
}

#[tokio::test]
async fn a_bad_client_mac_is_a_wrong_guess() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(2)).await.unwrap();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    let mac = vec![0u8; vault_suite::CREDENTIAL_FINALIZATION_LEN];
    let pending = alice.login_start(PASSWORD).await.unwrap();
    let wrong = alice
        .finish_raw(&pending.session_id, mac.clone())
        .await
        .unwrap();
    assert!(matches!(
        wrong.outcome,
        Some(e2eb_proto::vault::v2::login_finish_response::Outcome::WrongPassword(ref w))
            if w.guesses_remaining == 1 && !w.key_erased
    ));
    let pending = alice.login_start(PASSWORD).await.unwrap();
    let wrong = alice.finish_raw(&pending.session_id, mac).await.unwrap();
    assert!(matches!(
        wrong.outcome,
        Some(e2eb_proto::vault::v2::login_finish_response::Outcome::WrongPassword(ref w))
            if w.guesses_remaining == 0 && w.key_erased
    ));
    assert_reason(alice.login_start(PASSWORD).await, "key-erased");
    vault.stop().await;
}

#[tokio::test]
async fn abandoned_logins_count_and_success_resets() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(3)).await.unwrap();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();

    // Two abandoned, then the right password: the count goes back to zero.
    assert_eq!(
        alice.login_start(PASSWORD).await.unwrap().guesses_remaining,
        2
    );
    assert_eq!(
        alice.login_start(PASSWORD).await.unwrap().guesses_remaining,
        1
    );
    let pending = alice.login_start(PASSWORD).await.unwrap();
    assert_eq!(pending.guesses_remaining, 0);
    alice
        .login_finish(pending, PASSWORD)
        .await
        .unwrap()
        .success();
    assert_eq!(stored_state(&vault, "alice"), Some(("active".into(), 0)));

    // A wrong one, then three abandoned: the fourth start finds the limit
    // reached and erases the record.
    assert_eq!(alice.login(WRONG).await.unwrap().wrong(), (2, false));
    for remaining in [1, 0] {
        assert_eq!(
            alice.login_start(PASSWORD).await.unwrap().guesses_remaining,
            remaining
        );
    }
    assert_reason(alice.login_start(PASSWORD).await, "key-erased");
    assert_eq!(stored_state(&vault, "alice").unwrap().0, "erased");
    vault.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_wrong_logins_serve_exactly_n() {
    const LOGINS: usize = 100;
    const N: u32 = 10;
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(N)).await.unwrap();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();

    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(vault.client("alice").await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(LOGINS));
    let mut tasks = Vec::new();
    for i in 0..LOGINS {
        let mut client = connections[i % connections.len()].with_token(vault.token("alice"));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .login_start(WRONG)
                .await
                .map(|pending| pending.guesses_remaining)
        }));
    }
    let mut served = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(remaining) => served.push(remaining),
            Err(status) => {
                assert_reason::<()>(Err(status), "key-erased");
                refused += 1;
            }
        }
    }
    served.sort_unstable();
    // Each served login saw a distinct count: no update was lost.
    assert_eq!(served, (0..N).collect::<Vec<_>>());
    assert_eq!(refused, LOGINS - N as usize);
    assert_eq!(stored_state(&vault, "alice").unwrap().0, "erased");
    vault.stop().await;
}

#[tokio::test]
async fn a_restart_between_login_start_and_finish_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let fingerprint = vault.fingerprint.clone();
    let backup_key = random_key();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &backup_key, KEY_PROOF, None)
        .await
        .unwrap();
    alice.login_start(WRONG).await.unwrap();
    let pending = alice.login_start(PASSWORD).await.unwrap();

    let vault = vault.restart().await;
    assert_eq!(
        vault.fingerprint, fingerprint,
        "secrets persist across restarts"
    );
    let mut alice = vault.client("alice").await;
    let logged_in = alice
        .login_finish(pending, PASSWORD)
        .await
        .unwrap()
        .success();
    assert_eq!(
        open_backup_key(&logged_in.export_key, "alice", &logged_in.sealed_key).unwrap(),
        backup_key
    );

    // The abandoned guess survived the restart too (and was then reset).
    let vault = vault.restart().await;
    let mut alice = vault.client("alice").await;
    assert_eq!(alice.login_start(WRONG).await.unwrap().guesses_remaining, 9);
    vault.stop().await;
}

#[tokio::test]
async fn expired_unknown_and_foreign_sessions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    let mut bob = vault.client("bob").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();

    // Unknown.
    assert_reason(
        alice.finish_raw(&[7; 16], Vec::new()).await,
        "session-unknown",
    );
    // Another account's session id is unknown to it, and stays usable.
    let pending = alice.login_start(PASSWORD).await.unwrap();
    assert_reason(
        bob.finish_raw(&pending.session_id, Vec::new()).await,
        "session-unknown",
    );
    let session_id = pending.session_id.clone();
    alice
        .login_finish(pending, PASSWORD)
        .await
        .unwrap()
        .success();
    // Single use.
    assert_reason(
        alice.finish_raw(&session_id, Vec::new()).await,
        "session-unknown",
    );
    // Expired after the 60 s default (the clock is the vault's, moved by hand).
    let pending = alice.login_start(PASSWORD).await.unwrap();
    vault.clock.advance(Duration::from_secs(61));
    assert_reason(
        alice.login_finish(pending, PASSWORD).await,
        "session-expired",
    );
    // The expired login was a guess all the same.
    assert_eq!(
        alice.login_start(PASSWORD).await.unwrap().guesses_remaining,
        8
    );
    vault.stop().await;
}

#[tokio::test]
async fn malformed_inputs_are_refused_without_counting_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    use e2eb_proto::vault::v2 as pb;

    for bad in [vec![], vec![0; 95], vec![0; 97], vec![0xff; 96]] {
        let request = alice.request(pb::LoginStartRequest {
            credential_request: bad,
        });
        assert_code(alice.grpc.login_start(request).await, Code::InvalidArgument);
    }
    let request = alice.request(pb::RegisterStartRequest {
        registration_request: vec![1; 33],
    });
    assert_code(
        alice.grpc.register_start(request).await,
        Code::InvalidArgument,
    );
    let request = alice.request(pb::RegisterFinishRequest {
        registration_upload: vec![0; 192],
        sealed_key: vec![0; vault_suite::MAX_SEALED_KEY_LEN + 1],
        auth_public_key: vec![0; 32],
        authorization: None,
        registration_id: vec![0; 16],
    });
    assert_code(
        alice.grpc.register_finish(request).await,
        Code::InvalidArgument,
    );
    assert_code(
        alice.finish_raw(&[0; 15], Vec::new()).await,
        Code::InvalidArgument,
    );
    assert_code(
        alice.finish_raw(&[0; 16], vec![0; 63]).await,
        Code::InvalidArgument,
    );
    let huge = alice.request(pb::LoginStartRequest {
        credential_request: vec![0; 64 * 1024],
    });
    assert_code(alice.grpc.login_start(huge).await, Code::OutOfRange);

    assert_eq!(
        alice.login_start(PASSWORD).await.unwrap().guesses_remaining,
        9
    );
    vault.stop().await;
}

#[tokio::test]
async fn secrets_persist_and_a_wrong_sealing_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let fingerprint = vault.fingerprint.clone();
    let vault = vault.restart().await;
    assert_eq!(vault.fingerprint, fingerprint);
    vault.stop().await;

    let key_file = dir.path().join("vault-sealing.key");
    let right = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, "11".repeat(32)).unwrap();
    let error = TestVault::start(dir.path(), policy(10))
        .await
        .err()
        .expect("must refuse");
    let message = format!("{error:#}");
    assert!(
        message.contains("do not open with the sealing key"),
        "{message}"
    );
    assert!(message.contains("vault-sealing.key"), "{message}");

    std::fs::write(&key_file, right).unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    assert_eq!(
        vault.fingerprint, fingerprint,
        "nothing was replaced by the failed start"
    );
    vault.stop().await;
}

#[path = "cases/authorization.rs"]
mod authorization;
#[path = "cases/binary.rs"]
mod binary;
#[path = "support/etcd.rs"]
mod etcd;
#[path = "cases/fleet.rs"]
mod fleet;
#[path = "cases/logs.rs"]
mod logs;
#[path = "cases/malformed.rs"]
mod malformed;
#[path = "cases/pkcs11.rs"]
mod pkcs11;
#[path = "support/softhsm.rs"]
mod softhsm;
