//! The core without a network: an in-memory store, a manual clock, a
//! device-side OPAQUE client and a backup auth key. Pointer and integrity
//! cases live in their own modules.

mod integrity;
mod pointer;

use std::path::Path;
use std::sync::Arc;

use account_token::AccountId;
use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;
use vault_suite::Suite;
use vault_suite::opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
};
use vault_suite::proof::{ProofOperation, proof_message};

use super::login::LoginOutcome;
use super::register::RegisterFinish;
use super::*;
use crate::clock::ManualClock;
use crate::sealing::FileSealingKey;
use crate::store::sqlite::SqliteStore;
use row::{Account, RowState};

/// The backup auth key of the tests' `K`.
fn auth_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(key: &SigningKey) -> [u8; 32] {
    key.verifying_key().to_bytes()
}

/// A proof of `key` for `operation`, over a fresh challenge, as a device
/// makes it.
async fn signed(
    vault: &Vault,
    account: &AccountId,
    key: &SigningKey,
    operation: ProofOperation<'_>,
) -> Proof {
    let challenge = vault.challenge(account).await.unwrap();
    let signature = key.sign(&proof_message(account.as_str(), &challenge, &operation));
    Proof::KeySignature {
        challenge: challenge.to_vec(),
        signature: signature.to_bytes().to_vec(),
    }
}

/// The account's active record.
async fn account_of(vault: &Vault, account: &AccountId) -> Account {
    match vault.read(account).await.unwrap().expect("a row").0.state {
        RowState::Active(current) => current,
        RowState::Erased => panic!("erased"),
    }
}

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
        auth_public_key: public(&auth_key(1)).to_vec(),
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
async fn tickets_are_single_use_bound_to_the_registration_and_expire() {
    let (vault, clock) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    let ticket = |outcome: LoginOutcome| match outcome {
        LoginOutcome::Success { login_ticket, .. } => login_ticket.expose_secret().to_vec(),
        LoginOutcome::WrongPassword { .. } => panic!("login failed"),
    };
    let record = account_of(&vault, &alice()).await;
    let authorize = |record: Account, proof: Proof| {
        let vault = vault.clone();
        async move {
            vault
                .authorize(
                    &alice(),
                    &record,
                    Some(proof),
                    ProofOperation::Delete,
                    proof::Signers::Registered,
                )
                .await
        }
    };
    let first = ticket(login(&vault, &alice(), b"pw").await.0);
    authorize(record.clone(), Proof::LoginTicket(first.clone()))
        .await
        .unwrap();
    // Single use.
    assert!(matches!(
        authorize(record.clone(), Proof::LoginTicket(first)).await,
        Err(VaultError::InvalidTicket)
    ));
    // For another registration.
    let second = ticket(login(&vault, &alice(), b"pw").await.0);
    let mut other = record.clone();
    other.registration.as_mut().unwrap().version = [0; 16];
    assert!(matches!(
        authorize(other, Proof::LoginTicket(second)).await,
        Err(VaultError::InvalidTicket)
    ));
    // Expired.
    let third = ticket(login(&vault, &alice(), b"pw").await.0);
    clock.advance(std::time::Duration::from_secs(300));
    assert!(matches!(
        authorize(record.clone(), Proof::LoginTicket(third)).await,
        Err(VaultError::InvalidTicket)
    ));
    // Malformed.
    assert!(matches!(
        authorize(record, Proof::LoginTicket(vec![1; 31])).await,
        Err(VaultError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn key_signatures_are_single_use_and_bound_to_key_operation_and_time() {
    let (vault, clock) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    let record = account_of(&vault, &alice()).await;
    let check = |proof: Proof| {
        let (vault, record) = (vault.clone(), record.clone());
        async move {
            vault
                .authorize(
                    &alice(),
                    &record,
                    Some(proof),
                    ProofOperation::Delete,
                    proof::Signers::Registered,
                )
                .await
        }
    };
    // The honest proof works once.
    let good = signed(&vault, &alice(), &auth_key(1), ProofOperation::Delete).await;
    let Proof::KeySignature {
        challenge,
        signature,
    } = &good
    else {
        unreachable!()
    };
    let replay = Proof::KeySignature {
        challenge: challenge.clone(),
        signature: signature.clone(),
    };
    check(good).await.unwrap();
    assert!(matches!(
        check(replay).await,
        Err(VaultError::ChallengeUnknown)
    ));
    // Another key, or a signature made for another operation.
    let other_key = signed(&vault, &alice(), &auth_key(2), ProofOperation::Delete).await;
    assert!(matches!(
        check(other_key).await,
        Err(VaultError::BadKeySignature)
    ));
    let pk = public(&auth_key(1));
    let other_op = signed(
        &vault,
        &alice(),
        &auth_key(1),
        ProofOperation::EnableKey {
            auth_public_key: &pk,
        },
    )
    .await;
    assert!(matches!(
        check(other_op).await,
        Err(VaultError::BadKeySignature)
    ));
    // A challenge issued to another account, or one that expired.
    let bob = AccountId::new("bob").unwrap();
    let challenge = vault.challenge(&bob).await.unwrap();
    let foreign = Proof::KeySignature {
        challenge: challenge.to_vec(),
        signature: auth_key(1)
            .sign(&proof_message("alice", &challenge, &ProofOperation::Delete))
            .to_bytes()
            .to_vec(),
    };
    assert!(matches!(
        check(foreign).await,
        Err(VaultError::ChallengeUnknown)
    ));
    let late = signed(&vault, &alice(), &auth_key(1), ProofOperation::Delete).await;
    clock.advance(std::time::Duration::from_secs(61));
    assert!(matches!(
        check(late).await,
        Err(VaultError::ChallengeUnknown)
    ));
    assert_eq!(
        format!("{:?}", Proof::LoginTicket(vec![1; 32])),
        "LoginTicket(<redacted>)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_spend_exactly_the_limit() {
    let (vault, _) = vault(5).await;
    register(&vault, &alice(), b"pw").await;
    let starts = (0..30).map(|_| {
        let vault = vault.clone();
        tokio::spawn(async move {
            let request = ClientLogin::<Suite>::start(&mut OsRng, b"guess")
                .unwrap()
                .message
                .serialize();
            vault.login_start(&alice(), &request).await
        })
    });
    let mut counted = 0;
    for start in starts.collect::<Vec<_>>() {
        match start.await.unwrap() {
            Ok(_) => counted += 1,
            Err(VaultError::KeyErased) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(counted, 5, "exactly the limit is evaluated");
    assert!(vault.read(&alice()).await.unwrap().unwrap().0.state == RowState::Erased);
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
