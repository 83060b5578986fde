//! Who may change what: password changes and deletes need a login ticket
//! or the key proof, a login cannot outlive a password change, and one
//! account's token reaches only that account's record.

use std::time::Duration;

use tonic::Code;

use crate::support::*;
use crate::{KEY_PROOF, PASSWORD, WRONG, stored_state};

#[tokio::test]
async fn password_change_needs_a_ticket_or_the_key_proof() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    let backup_key = random_key();
    alice
        .register(PASSWORD, &backup_key, KEY_PROOF, None)
        .await
        .unwrap();

    assert_reason(
        alice.register(b"new", &backup_key, KEY_PROOF, None).await,
        "proof-required",
    );
    let wrong_proof = Some(Auth::Key(vec![0; 32]));
    assert_code(
        alice
            .register(b"new", &backup_key, KEY_PROOF, wrong_proof)
            .await,
        Code::PermissionDenied,
    );
    let bogus_ticket = Some(Auth::Ticket(vec![0; 32]));
    assert_code(
        alice
            .register(b"new", &backup_key, KEY_PROOF, bogus_ticket)
            .await,
        Code::PermissionDenied,
    );

    // With the old password: a login's ticket, good once.
    let ticket = alice.login(PASSWORD).await.unwrap().success().ticket;
    alice.login_start(WRONG).await.unwrap();
    let with_ticket = Some(Auth::Ticket(ticket.clone()));
    alice
        .register(b"second", &backup_key, KEY_PROOF, with_ticket.clone())
        .await
        .unwrap();
    assert_eq!(
        stored_state(&vault, "alice"),
        Some(("active".into(), 0)),
        "guesses reset"
    );
    assert_code(
        alice
            .register(b"third", &backup_key, KEY_PROOF, with_ticket)
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(alice.login(PASSWORD).await.unwrap().wrong(), (9, false));
    let logged_in = alice.login(b"second").await.unwrap().success();
    assert_eq!(
        open_backup_key(&logged_in.export_key, "alice", &logged_in.sealed_key).unwrap(),
        backup_key
    );

    // An expired ticket is refused.
    vault.clock.advance(Duration::from_secs(301));
    let expired = Some(Auth::Ticket(logged_in.ticket));
    assert_code(
        alice
            .register(b"third", &backup_key, KEY_PROOF, expired)
            .await,
        Code::PermissionDenied,
    );

    // With the key proof.
    let new_proof = [0x77; 32];
    let with_key = Some(Auth::Key(KEY_PROOF.to_vec()));
    alice
        .register(b"third", &backup_key, &new_proof, with_key.clone())
        .await
        .unwrap();
    alice.login(b"third").await.unwrap().success();
    // The verifier was replaced along with the record.
    assert_code(
        alice
            .register(b"fourth", &backup_key, KEY_PROOF, with_key)
            .await,
        Code::PermissionDenied,
    );
    vault.stop().await;
}

#[tokio::test]
async fn a_login_started_before_a_password_change_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    let pending = alice.login_start(PASSWORD).await.unwrap();
    let other = alice.login_start(PASSWORD).await.unwrap();
    let with_key = Some(Auth::Key(KEY_PROOF.to_vec()));
    alice
        .register(b"new", &random_key(), KEY_PROOF, with_key)
        .await
        .unwrap();
    // Sessions are bound to the registration they started against: after
    // the change neither can finish, right or wrong.
    assert_reason(
        alice.login_finish(pending, PASSWORD).await,
        "record-changed",
    );
    assert_reason(
        alice.finish_raw(&other.session_id, Vec::new()).await,
        "record-changed",
    );
    vault.stop().await;
}

#[tokio::test]
async fn delete_needs_proof_unless_starting_over() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let mut alice = vault.client("alice").await;
    assert_code(
        alice
            .delete(Some(Auth::Key(KEY_PROOF.to_vec())), false)
            .await,
        Code::NotFound,
    );
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();

    assert_reason(alice.delete(None, false).await, "proof-required");
    assert_code(
        alice.delete(Some(Auth::Key(vec![1; 32])), false).await,
        Code::PermissionDenied,
    );
    alice
        .delete(Some(Auth::Key(KEY_PROOF.to_vec())), false)
        .await
        .unwrap();
    assert_eq!(stored_state(&vault, "alice"), None);
    assert_code(alice.login_start(PASSWORD).await, Code::NotFound);

    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    let ticket = alice.login(PASSWORD).await.unwrap().success().ticket;
    alice
        .delete(Some(Auth::Ticket(ticket)), false)
        .await
        .unwrap();
    assert_eq!(stored_state(&vault, "alice"), None);

    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    alice.delete(None, true).await.unwrap();
    assert_eq!(stored_state(&vault, "alice"), None);
    // Starting over with nothing to delete is fine.
    alice.delete(None, true).await.unwrap();
    vault.stop().await;
}

#[tokio::test]
async fn another_accounts_token_cannot_touch_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(3)).await.unwrap();
    let mut alice = vault.client("alice").await;
    let mut mallory = vault.client("mallory").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    let ticket = alice.login(PASSWORD).await.unwrap().success().ticket;

    // Mallory's token names Mallory: she reaches only her own (absent) record.
    assert_code(mallory.login_start(PASSWORD).await, Code::NotFound);
    assert_code(
        mallory
            .delete(Some(Auth::Key(KEY_PROOF.to_vec())), false)
            .await,
        Code::NotFound,
    );
    mallory.delete(None, true).await.unwrap();
    mallory
        .register(b"mine", &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    assert_code(
        mallory
            .delete(Some(Auth::Ticket(ticket.clone())), false)
            .await,
        Code::PermissionDenied,
    );
    // Alice's record, count and ticket are untouched.
    assert_eq!(stored_state(&vault, "alice"), Some(("active".into(), 0)));
    alice
        .delete(Some(Auth::Ticket(ticket)), false)
        .await
        .unwrap();

    // No token, an edited token, another authority's token, a token for
    // the blob gateway, or an expired one: UNAUTHENTICATED, with the reason.
    let mut anonymous = alice.with_token(String::new());
    assert_code(anonymous.info().await, Code::Unauthenticated);
    let forged = edit_one_character(&vault.token("alice"));
    let status = assert_code(
        alice.with_token(forged).login_start(PASSWORD).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("not signed"), "{status:?}");
    let alice_id = account_token::AccountId::new("alice").unwrap();
    let foreign = account_token::Authority::generate()
        .mint(
            &alice_id,
            account_token::Audience::KeyVault,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_code(
        alice
            .with_token(foreign.expose_secret().to_string())
            .info()
            .await,
        Code::Unauthenticated,
    );
    let gateway_token = authority(&vault.dir)
        .mint(
            &alice_id,
            account_token::Audience::BlobGateway,
            Duration::from_secs(60),
        )
        .unwrap();
    let status = assert_code(
        alice
            .with_token(gateway_token.expose_secret().to_string())
            .login_start(PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("\"blob-gateway\""), "{status:?}");
    let expired = authority(&vault.dir)
        .mint_at(
            &alice_id,
            account_token::Audience::KeyVault,
            std::time::SystemTime::now() - Duration::from_secs(3600),
            Duration::from_secs(600),
        )
        .unwrap();
    let status = assert_code(
        alice
            .with_token(expired.expose_secret().to_string())
            .info()
            .await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("expired"), "{status:?}");
    // The honest token on the same connection still works.
    alice.info().await.unwrap();
    vault.stop().await;
}

/// `token` with one character of its signed body changed.
fn edit_one_character(token: &str) -> String {
    let index = token.len() / 2;
    let replacement = if &token[index..=index] == "A" {
        "B"
    } else {
        "A"
    };
    format!("{}{replacement}{}", &token[..index], &token[index + 1..])
}
