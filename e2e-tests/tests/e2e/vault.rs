//! Password backups through the real key vault: every flow, the exact guess
//! limit (also under concurrency), restarts, pinning, account isolation, and
//! no secret in any database, stored object or log line.

use account_token::Audience;
use backup_client::vault::{Password, Proof, VaultError};
use backup_client::{RootKey, back_up, restore};
use device_sim::phone;
use e2e_tests::{MAX_GUESSES, Stack};
use e2eb_proto::vault::v2::LoginStartRequest;
use e2eb_proto::vault::v2::key_vault_client::KeyVaultClient;
use tonic::Code;
use vault_suite::Suite;
use vault_suite::opaque_ke::ClientLogin;

use crate::key_backup::small_phone;

const ALICE: &str = "alice";

fn password(text: &str) -> Password {
    Password::new(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn password_flows_restore_change_lock_out_exactly_and_start_over() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 11);
    let vault = stack.vault(ALICE);
    let gateway = stack.client(ALICE);
    assert_eq!(vault.info().await.unwrap().1, MAX_GUESSES);

    // Enable with a password, back up.
    let key = RootKey::generate();
    vault
        .register(&password("hunter2 but longer"), &key, None)
        .await
        .unwrap();
    back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    // A second registration without proof is refused and changes nothing.
    let error = vault
        .register(&password("attacker"), &RootKey::generate(), None)
        .await
        .unwrap_err();
    assert!(matches!(error, VaultError::ProofRequired), "{error:?}");

    // New phone: the password recovers the key, the restore is exact.
    let recovered = vault
        .recover(&password("hunter2 but longer"))
        .await
        .unwrap();
    assert_eq!(recovered.key.expose_secret(), key.expose_secret());
    let restored = stack.dir().join("restored");
    restore(&gateway, &vault, ALICE, &recovered.key, &restored)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    // Change with the old password (login ticket), then with the key.
    vault
        .register(
            &password("second"),
            &recovered.key,
            Some(Proof::LoginTicket(&recovered.ticket)),
        )
        .await
        .unwrap();
    // The ticket is single use.
    let error = vault
        .register(
            &password("x"),
            &key,
            Some(Proof::LoginTicket(&recovered.ticket)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, VaultError::ProofRejected), "{error:?}");
    // A wrong key is no proof.
    let error = vault
        .register(
            &password("x"),
            &key,
            Some(Proof::BackupKey(&RootKey::generate())),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, VaultError::ProofRejected), "{error:?}");
    vault
        .register(&password("third"), &key, Some(Proof::BackupKey(&key)))
        .await
        .unwrap();
    for old in ["hunter2 but longer", "second"] {
        let error = vault.recover(&password(old)).await.unwrap_err();
        assert!(
            matches!(error, VaultError::WrongPassword { .. }),
            "{error:?}"
        );
    }
    // Success resets the count.
    assert_eq!(
        vault
            .recover(&password("third"))
            .await
            .unwrap()
            .key
            .expose_secret(),
        key.expose_secret()
    );

    // Forgotten password: the guesses count down, the last one erases.
    for guess in 1..MAX_GUESSES {
        match vault.recover(&password(&format!("guess {guess}"))).await {
            Err(VaultError::WrongPassword { guesses_remaining }) => {
                assert_eq!(guesses_remaining, MAX_GUESSES - guess)
            }
            other => panic!("guess {guess}: {other:?}"),
        }
    }
    let error = vault.recover(&password("last guess")).await.unwrap_err();
    assert!(matches!(error, VaultError::KeyErased), "{error:?}");
    assert!(
        error.to_string().contains("can never be restored"),
        "{error}"
    );
    // Now even the right password, a proof of the key, or a new
    // registration get the same answer.
    assert!(matches!(
        vault.recover(&password("third")).await,
        Err(VaultError::KeyErased)
    ));
    assert!(matches!(
        vault
            .register(&password("new"), &key, Some(Proof::BackupKey(&key)))
            .await,
        Err(VaultError::KeyErased)
    ));
    assert!(matches!(
        vault.delete(Proof::BackupKey(&key)).await,
        Err(VaultError::KeyErased)
    ));

    // Start over: erase, delete the old blobs, enable anew.
    vault.start_over().await.unwrap();
    gateway.delete_backup().await.unwrap();
    let new_key = RootKey::generate();
    vault
        .register(&password("fresh start"), &new_key, None)
        .await
        .unwrap();
    back_up(&gateway, &vault, ALICE, &new_key, &phone)
        .await
        .unwrap();
    let again = vault.recover(&password("fresh start")).await.unwrap();
    restore(
        &gateway,
        &vault,
        ALICE,
        &again.key,
        &stack.dir().join("after-start-over"),
    )
    .await
    .unwrap();

    // Disable backups: record and blobs gone.
    vault.delete(Proof::BackupKey(&new_key)).await.unwrap();
    gateway.delete_backup().await.unwrap();
    assert!(matches!(
        vault.recover(&password("fresh start")).await,
        Err(VaultError::NotRegistered)
    ));
    assert!(gateway.get_backup().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_concurrent_logins_are_served_exactly_the_guess_limit() {
    let stack = Stack::start().await.unwrap();
    let key = RootKey::generate();
    stack
        .vault(ALICE)
        .register(&password("right"), &key, None)
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
    let mut calls = Vec::new();
    for i in 0..100 {
        let start =
            ClientLogin::<Suite>::start(&mut rand::rngs::OsRng, format!("wrong {i}").as_bytes())
                .unwrap();
        let mut client = KeyVaultClient::with_interceptor(
            channel.clone(),
            stack.token(ALICE, Audience::KeyVault),
        );
        calls.push(tokio::spawn(async move {
            client
                .login_start(LoginStartRequest {
                    credential_request: start.message.serialize().to_vec(),
                })
                .await
        }));
    }
    let mut served = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(
                    status
                        .metadata()
                        .get(vault_suite::REASON_METADATA_KEY)
                        .unwrap(),
                    vault_suite::REASON_KEY_ERASED
                );
                refused += 1;
            }
        }
    }
    assert_eq!(served, MAX_GUESSES, "exactly N logins are served");
    assert_eq!(refused, 100 - MAX_GUESSES);
    let error = stack
        .vault(ALICE)
        .recover(&password("right"))
        .await
        .unwrap_err();
    assert!(matches!(error, VaultError::KeyErased), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_count_and_the_record_survive_a_vault_kill_and_restart() {
    let mut stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 12);
    let vault = stack.vault(ALICE);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    vault
        .register(&password("right"), &key, None)
        .await
        .unwrap();
    back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    let fingerprint = stack.vault_fingerprint();

    let error = vault.recover(&password("wrong")).await.unwrap_err();
    assert!(
        matches!(error, VaultError::WrongPassword { guesses_remaining } if guesses_remaining == MAX_GUESSES - 1)
    );
    stack.kill("key-vault");
    let error = vault.recover(&password("right")).await.unwrap_err();
    assert!(matches!(error, VaultError::Unavailable(_)), "{error:?}");
    assert!(error.is_retryable());
    stack.start_vault().await.unwrap();
    assert_eq!(
        stack.vault_fingerprint(),
        fingerprint,
        "the sealed secrets persisted"
    );

    // The guess counted before the kill still counts.
    let error = vault.recover(&password("wrong again")).await.unwrap_err();
    assert!(
        matches!(error, VaultError::WrongPassword { guesses_remaining } if guesses_remaining == MAX_GUESSES - 2)
    );
    let recovered = vault.recover(&password("right")).await.unwrap();
    let restored = stack.dir().join("restored");
    restore(&gateway, &vault, ALICE, &recovered.key, &restored)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_presenting_another_key_is_refused() {
    let mut stack = Stack::start().await.unwrap();
    let key = RootKey::generate();
    let pinned = stack.vault_fingerprint();
    stack
        .vault(ALICE)
        .register(&password("right"), &key, None)
        .await
        .unwrap();

    // An impostor vault (its own secrets) answers at the same address.
    stack.kill("key-vault");
    let impostor_state = stack.dir().join("impostor");
    stack.start_vault_in(&impostor_state).await.unwrap();
    let vault = stack.vault_pinned(ALICE, &pinned);
    for result in [
        vault
            .register(&password("right"), &key, None)
            .await
            .map(|_| ()),
        vault.recover(&password("right")).await.map(|_| ()),
        vault.delete(Proof::BackupKey(&key)).await,
    ] {
        match result {
            Err(VaultError::VaultKeyMismatch {
                pinned: p,
                presented,
            }) => {
                assert_eq!(p, pinned);
                assert_ne!(presented, pinned);
            }
            other => panic!("expected the impostor to be refused, got {other:?}"),
        }
    }
    let message = vault
        .recover(&password("right"))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("impostor"), "{message}");

    // Back to the real vault: the record is intact.
    stack.kill("key-vault");
    stack.start_vault().await.unwrap();
    let recovered = stack
        .vault(ALICE)
        .recover(&password("right"))
        .await
        .unwrap();
    assert_eq!(recovered.key.expose_secret(), key.expose_secret());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_token_cannot_touch_the_record() {
    let stack = Stack::start().await.unwrap();
    let key = RootKey::generate();
    let alice = stack.vault(ALICE);
    alice
        .register(&password("right"), &key, None)
        .await
        .unwrap();

    // Bob's token names Bob: Alice's record does not exist for him.
    let bob = stack.vault("bob");
    for _ in 0..MAX_GUESSES + 1 {
        assert!(matches!(
            bob.recover(&password("right")).await,
            Err(VaultError::NotRegistered)
        ));
    }
    assert!(matches!(
        bob.delete(Proof::BackupKey(&key)).await,
        Err(VaultError::NotRegistered)
    ));
    // His start-over and registration touch only his own account.
    bob.start_over().await.unwrap();
    bob.register(&password("bob's"), &RootKey::generate(), None)
        .await
        .unwrap();

    // Alice's record is intact and none of her guesses were spent.
    let error = alice.recover(&password("wrong")).await.unwrap_err();
    assert!(
        matches!(error, VaultError::WrongPassword { guesses_remaining } if guesses_remaining == MAX_GUESSES - 1)
    );
    let recovered = alice.recover(&password("right")).await.unwrap();
    assert_eq!(recovered.key.expose_secret(), key.expose_secret());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_or_key_in_the_vault_database_stored_objects_or_logs() {
    let mut stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 13);
    let vault = stack.vault(ALICE);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let secrets = ["correct horse battery staple", "second secret passphrase"];
    vault
        .register(&password(secrets[0]), &key, None)
        .await
        .unwrap();
    back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    let _ = vault.recover(&password("a wrong guess")).await;
    let login = vault.recover(&password(secrets[0])).await.unwrap();
    vault
        .register(
            &password(secrets[1]),
            &key,
            Some(Proof::LoginTicket(&login.ticket)),
        )
        .await
        .unwrap();
    vault.recover(&password(secrets[1])).await.unwrap();
    // Stop the vault so its database is complete on disk.
    stack.kill("key-vault");

    let raw = key.expose_secret().to_vec();
    let hex_lower = hex::encode(&raw);
    let digits = key.to_display_digits().to_string();
    let mut needles: Vec<Vec<u8>> = vec![
        raw,
        hex_lower.clone().into_bytes(),
        hex_lower.to_uppercase().into_bytes(),
        digits.into_bytes(),
    ];
    needles.extend(secrets.iter().map(|s| s.as_bytes().to_vec()));

    let mut files: Vec<std::path::PathBuf> = stack.stored_files();
    for entry in std::fs::read_dir(stack.dir().join("vault")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for name in ["local-s3", "key-vault", "blob-gateway"] {
        files.push(stack.log_path(name));
    }
    assert!(files.iter().any(|f| f.ends_with("vault.db")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{} contains a secret",
                file.display()
            );
        }
    }
}
