//! The core without a network: an in-memory store, a manual clock, and a
//! device-side OPAQUE client.

use std::path::Path;
use std::sync::Arc;

use account_token::AccountId;
use rand::rngs::OsRng;
use vault_suite::Suite;
use vault_suite::opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
};

use super::login::LoginOutcome;
use super::register::RegisterFinish;
use super::*;
use crate::clock::ManualClock;
use crate::sealing::FileSealingKey;
use crate::store::RecordState;
use crate::store::sqlite::SqliteStore;

async fn vault(max_guesses: u32) -> (Vault, ManualClock) {
    let store = SqliteStore::in_memory().unwrap();
    let sealing = FileSealingKey::from_bytes(Path::new("test"), &[3; 32]);
    let secrets = VaultSecrets::load_or_create(&store, &sealing)
        .await
        .unwrap();
    let clock = ManualClock::new();
    let policy = Policy {
        max_guesses,
        ..Policy::default()
    };
    let vault = Vault::new(
        Arc::new(store),
        Arc::new(secrets),
        policy,
        Arc::new(clock.clone()),
    );
    (vault, clock)
}

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

async fn register(vault: &Vault, account: &AccountId, password: &[u8]) -> Vec<u8> {
    let start = ClientRegistration::<Suite>::start(&mut OsRng, password).unwrap();
    let started = vault
        .register_start(account, &start.message.serialize())
        .await
        .unwrap();
    let ksf = vault_suite::argon2_insecure_fast_for_tests();
    let finish = start
        .state
        .finish(
            &mut OsRng,
            password,
            RegistrationResponse::deserialize(&started.registration_response).unwrap(),
            ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
        )
        .unwrap();
    let request = RegisterFinish {
        registration_upload: finish.message.serialize().to_vec(),
        sealed_key: b"sealed by the client".to_vec(),
        key_proof_verifier: vault_suite::key_proof_verifier(b"proof").to_vec(),
        registration_id: started.registration_id.to_vec(),
        authorization: None,
    };
    vault.register_finish(account, request).await.unwrap();
    finish.export_key.to_vec()
}

/// A login as the device runs it; `None` finalization if the device found
/// the password wrong.
async fn login(
    vault: &Vault,
    account: &AccountId,
    password: &[u8],
) -> (LoginOutcome, Option<Vec<u8>>) {
    let start = ClientLogin::<Suite>::start(&mut OsRng, password).unwrap();
    let started = vault
        .login_start(account, &start.message.serialize())
        .await
        .unwrap();
    let ksf = vault_suite::argon2_insecure_fast_for_tests();
    let finished = start.state.finish(
        &mut OsRng,
        password,
        CredentialResponse::deserialize(&started.credential_response).unwrap(),
        ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
    );
    let (finalization, session_key) = match finished {
        Ok(done) => (
            done.message.serialize().to_vec(),
            Some(done.session_key.to_vec()),
        ),
        Err(_) => (Vec::new(), None),
    };
    let outcome = vault
        .login_finish(account, &started.session_id, &finalization)
        .await
        .unwrap();
    (outcome, session_key)
}

#[tokio::test]
async fn register_start_never_evaluates_a_stored_record_s_oprf() {
    let (vault, _) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    // The same blinded element, once as a registration request and once
    // inside a credential request: the evaluations must differ, or
    // RegisterStart would be an uncounted password-guessing oracle.
    let login = ClientLogin::<Suite>::start(&mut OsRng, b"guess").unwrap();
    let credential_request = login.message.serialize();
    let blinded = &credential_request[..vault_suite::REGISTRATION_REQUEST_LEN];
    let by_registration = vault.register_start(&alice(), blinded).await.unwrap();
    let again = vault.register_start(&alice(), blinded).await.unwrap();
    let by_login = vault
        .login_start(&alice(), &credential_request)
        .await
        .unwrap();
    let evaluation = |bytes: &[u8]| bytes[..32].to_vec();
    assert_ne!(
        evaluation(&by_registration.registration_response),
        evaluation(&by_login.credential_response)
    );
    assert_ne!(by_registration.registration_id, again.registration_id);
    assert_ne!(
        evaluation(&by_registration.registration_response),
        evaluation(&again.registration_response)
    );
}

#[tokio::test]
async fn success_returns_the_sealed_key_under_the_session_key() {
    let (vault, _) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    let (outcome, session_key) = login(&vault, &alice(), b"pw").await;
    let LoginOutcome::Success {
        encrypted_sealed_key,
        login_ticket,
    } = outcome
    else {
        panic!("login failed")
    };
    let session_key = session_key.unwrap();
    let sealed =
        vault_suite::open_login_response(&session_key, "alice", &encrypted_sealed_key).unwrap();
    assert_eq!(sealed, b"sealed by the client");
    assert_eq!(login_ticket.expose_secret().len(), 32);
    assert_eq!(format!("{login_ticket:?}"), "LoginTicket(<redacted>)");
}

#[tokio::test]
async fn wrong_password_counts_down_to_erasure() {
    let (vault, _) = vault(2).await;
    register(&vault, &alice(), b"pw").await;
    let (outcome, _) = login(&vault, &alice(), b"nope").await;
    assert!(matches!(
        outcome,
        LoginOutcome::WrongPassword {
            guesses_remaining: 1,
            key_erased: false
        }
    ));
    let (outcome, _) = login(&vault, &alice(), b"nope").await;
    assert_eq!(
        format!("{outcome:?}"),
        "WrongPassword { guesses_remaining: 0, key_erased: true }"
    );
    let request = ClientLogin::<Suite>::start(&mut OsRng, b"pw")
        .unwrap()
        .message
        .serialize();
    assert!(matches!(
        vault.login_start(&alice(), &request).await,
        Err(VaultError::KeyErased)
    ));
}

#[tokio::test]
async fn tickets_are_bound_to_the_record_version_and_expire() {
    let (vault, clock) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    let ticket = |outcome: LoginOutcome| match outcome {
        LoginOutcome::Success { login_ticket, .. } => login_ticket.expose_secret().to_vec(),
        LoginOutcome::WrongPassword { .. } => panic!("login failed"),
    };
    let Some(RecordState::Active(record)) = vault.store.get_record("alice").await.unwrap() else {
        panic!("no record")
    };
    let first = ticket(login(&vault, &alice(), b"pw").await.0);
    vault
        .authorize(&alice(), &record, Some(Proof::LoginTicket(first.clone())))
        .await
        .unwrap();
    // Single use.
    assert!(matches!(
        vault
            .authorize(&alice(), &record, Some(Proof::LoginTicket(first)))
            .await,
        Err(VaultError::InvalidTicket)
    ));
    // For another version of the record.
    let second = ticket(login(&vault, &alice(), b"pw").await.0);
    let mut other = record.clone();
    other.version = [0; 16];
    assert!(matches!(
        vault
            .authorize(&alice(), &other, Some(Proof::LoginTicket(second)))
            .await,
        Err(VaultError::InvalidTicket)
    ));
    // Expired.
    let third = ticket(login(&vault, &alice(), b"pw").await.0);
    clock.advance(std::time::Duration::from_secs(300));
    assert!(matches!(
        vault
            .authorize(&alice(), &record, Some(Proof::LoginTicket(third)))
            .await,
        Err(VaultError::InvalidTicket)
    ));
    // Malformed.
    assert!(matches!(
        vault
            .authorize(&alice(), &record, Some(Proof::LoginTicket(vec![1; 31])))
            .await,
        Err(VaultError::InvalidArgument(_))
    ));
    assert!(matches!(
        vault
            .authorize(&alice(), &record, Some(Proof::KeyProof(vec![])))
            .await,
        Err(VaultError::InvalidArgument(_))
    ));
    vault
        .authorize(&alice(), &record, Some(Proof::KeyProof(b"proof".to_vec())))
        .await
        .unwrap();
    assert_eq!(
        format!("{:?}", Proof::KeyProof(b"proof".to_vec())),
        "KeyProof(<redacted>)"
    );
}

#[tokio::test]
async fn a_session_ttl_of_zero_expires_at_once() {
    let store = SqliteStore::in_memory().unwrap();
    let sealing = FileSealingKey::from_bytes(Path::new("test"), &[3; 32]);
    let secrets = VaultSecrets::load_or_create(&store, &sealing)
        .await
        .unwrap();
    let policy = Policy {
        login_session_ttl: std::time::Duration::ZERO,
        ..Policy::default()
    };
    let vault = Vault::new(
        Arc::new(store),
        Arc::new(secrets),
        policy,
        Arc::new(ManualClock::new()),
    );
    register(&vault, &alice(), b"pw").await;
    let request = ClientLogin::<Suite>::start(&mut OsRng, b"pw")
        .unwrap()
        .message
        .serialize();
    let started = vault.login_start(&alice(), &request).await.unwrap();
    assert!(matches!(
        vault.login_finish(&alice(), &started.session_id, &[]).await,
        Err(VaultError::SessionExpired)
    ));
}
