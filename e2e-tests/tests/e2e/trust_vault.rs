//! Issue 8 against the real key vault: an operator who edits the vault's
//! database is refused, and a proof of the key cannot be replayed. Each
//! test runs the attack, shows it failing with its own error, and shows
//! the honest flow still working.

use account_token::Audience;
use backup_client::RootKey;
use backup_client::vault::{Password, Proof, VaultError};
use e2e_tests::Stack;
use e2eb_proto::vault::v2::key_vault_client::KeyVaultClient;
use e2eb_proto::vault::v2::{
    Authorization, DeleteRecordRequest, GetChallengeRequest, KeySignature, authorization,
};
use ed25519_dalek::Signer;
use tonic::Code;
use vault_suite::proof::{ProofOperation, proof_message};

/// Finding 5: resetting `guesses` to 0 with a SQL shell gave more guesses.
/// Now the row's MAC fails, the vault refuses the record, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_guess_counter_edited_in_the_database_is_refused() {
    let stack = Stack::start().await.unwrap();
    let (alice, bob) = (stack.vault("alice"), stack.vault("bob"));
    let key = RootKey::generate();
    alice
        .register(&Password::new("right"), &key, None)
        .await
        .unwrap();
    bob.register(&Password::new("bobs"), &RootKey::generate(), None)
        .await
        .unwrap();
    for remaining in [4, 3] {
        let error = alice.recover(&Password::new("wrong")).await.unwrap_err();
        assert!(
            matches!(error, VaultError::WrongPassword { guesses_remaining } if guesses_remaining == remaining),
            "{error:?}"
        );
    }

    // The operator, with write access to the database file, resets the
    // counter as the red team did: an SQL UPDATE while the vault runs.
    let db = rusqlite::Connection::open(stack.vault_db()).unwrap();
    let edited = db
        .execute(
            "UPDATE accounts SET body = json_set(body, '$.registration.guesses', 0) \
             WHERE account = 'alice'",
            [],
        )
        .unwrap();
    assert_eq!(edited, 1);
    drop(db);

    let error = alice.recover(&Password::new("wrong")).await.unwrap_err();
    assert!(matches!(error, VaultError::RecordTampered), "{error:?}");
    let error = alice.recover(&Password::new("right")).await.unwrap_err();
    assert!(matches!(error, VaultError::RecordTampered), "{error:?}");
    assert!(
        stack
            .log_tail("key-vault")
            .contains("fails its MAC: it was edited outside the vault"),
        "the operator gets a log line to act on"
    );

    // Another account is untouched, and starting over clears the damage.
    let recovered = bob.recover(&Password::new("bobs")).await.unwrap();
    assert_eq!(recovered.previous.map(|_| ()), None);
    alice.start_over().await.unwrap();
    alice
        .register(&Password::new("again"), &key, None)
        .await
        .unwrap();
    alice.recover(&Password::new("again")).await.unwrap();
}

/// Finding 2, second half: the proof of `K` was a fixed value that could
/// be replayed forever. Now it is a signature over a single-use challenge:
/// a recorded proof is refused the second time, even for the very
/// operation it was made for.
#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_key_signature_cannot_be_replayed() {
    let stack = Stack::start().await.unwrap();
    let vault = stack.vault("alice");
    let key = RootKey::generate();
    vault
        .register(&Password::new("pw"), &key, None)
        .await
        .unwrap();

    let channel = rpc::endpoint(
        &stack.vault_endpoint(),
        &stack.trust,
        &rpc::ChannelOptions::default(),
    )
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut raw =
        KeyVaultClient::with_interceptor(channel, stack.token("alice", Audience::KeyVault));
    let challenge = raw
        .get_challenge(GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let fixed: [u8; 32] = challenge.as_slice().try_into().unwrap();
    let signature = key
        .auth_key()
        .sign(&proof_message("alice", &fixed, &ProofOperation::Delete));
    let recorded = DeleteRecordRequest {
        authorization: Some(Authorization {
            proof: Some(authorization::Proof::KeySignature(KeySignature {
                challenge,
                signature: signature.to_bytes().to_vec(),
            })),
        }),
        start_over: false,
    };
    raw.delete_record(recorded.clone()).await.unwrap();

    // The user enables backups again; the attacker replays the recording.
    vault
        .register(&Password::new("pw"), &key, None)
        .await
        .unwrap();
    let status = raw.delete_record(recorded).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.metadata().get("e2eb-reason").unwrap(),
        "challenge-unknown"
    );
    // A signature by another key over a fresh challenge fails too.
    let error = vault
        .delete(Proof::BackupKey(&RootKey::generate()))
        .await
        .unwrap_err();
    assert!(matches!(error, VaultError::ProofRejected), "{error:?}");
    // The record is intact and the honest proof still works.
    vault.recover(&Password::new("pw")).await.unwrap();
    vault.delete(Proof::BackupKey(&key)).await.unwrap();
}
