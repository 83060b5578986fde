//! Key rotation: everything re-encrypted under a new key, the old generation
//! gone, and a rotation interrupted at any step still restorable, with the
//! restore saying which key it needed.

use backup_client::freshness::Vouched;
use backup_client::rotate::RotateError;
use backup_client::rotate::{
    begin_with_vault, finish_with_vault, rotate_key, rotate_key_with_vault,
};
use backup_client::vault::Password;
use backup_client::{RestoreError, RootKey, back_up, back_up_with_signer, restore, restore_any};
use device_sim::phone;
use e2e_tests::Stack;

use crate::key_backup::{all_chunk_ids, small_phone};

const ALICE: &str = "alice";

#[tokio::test(flavor = "multi_thread")]
async fn a_password_users_rotation_interrupted_at_any_step_restores_and_says_which_key() {
    let stack = Stack::start().await.unwrap();
    let phone_dir = small_phone(stack.dir(), 31);
    let vault = stack.vault(ALICE);
    let gateway = stack.client(ALICE);
    let password = Password::new("rotate me");
    let old = RootKey::generate();
    vault.register(&password, &old, None).await.unwrap();
    back_up(&gateway, &vault, ALICE, &old, &phone_dir)
        .await
        .unwrap();
    let key_id = |key: &RootKey| hex::encode(key.key_id());
    let mut attempt = 0;
    let mut restore_with_password = async || {
        attempt += 1;
        let target = stack.dir().join(format!("restore-{attempt}"));
        let (key_id, both) = restore_with(&vault, &gateway, &password, &target).await;
        assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
        (key_id, both)
    };

    // Interrupted after step 1: the vault holds both keys, the backup is
    // still under the old one.
    let new = RootKey::generate();
    begin_with_vault(&vault, &password, &old, &new)
        .await
        .unwrap();
    assert_eq!(restore_with_password().await, (key_id(&old), true));

    // Interrupted after step 2: committed under the new key (announced in
    // the pointer with the registered old key's signature).
    back_up_with_signer(&gateway, &vault, ALICE, &new, &old, &phone_dir)
        .await
        .unwrap();
    assert_eq!(restore_with_password().await, (key_id(&new), true));
    let error = restore(&gateway, &vault, ALICE, &old, &stack.dir().join("old"))
        .await
        .unwrap_err();
    match &error {
        RestoreError::OtherKey {
            backup_key_id,
            given_key_id,
        } => {
            assert_eq!(backup_key_id, &key_id(&new));
            assert_eq!(given_key_id, &key_id(&old));
        }
        other => panic!("expected OtherKey, got {other:?}"),
    }

    // Step 3: only the new key remains in the vault.
    finish_with_vault(&vault, &password, &new).await.unwrap();
    assert_eq!(restore_with_password().await, (key_id(&new), false));

    // The whole rotation in one call; only the newest key's chunks remain.
    let (newest, report) =
        rotate_key_with_vault(&gateway, &vault, &password, ALICE, &new, &phone_dir)
            .await
            .unwrap();
    assert!(report.deleted_chunks > 0);
    assert_eq!(restore_with_password().await, (key_id(&newest), false));
    let mut expected: Vec<String> = all_chunk_ids(&newest, &phone_dir)
        .into_iter()
        .map(|id| format!("accounts/{ALICE}/chunks/{id}"))
        .collect();
    expected.push(format!("accounts/{ALICE}/generation"));
    expected.push(format!(
        "accounts/{ALICE}/manifests/{:020}",
        report.generation
    ));
    expected.sort();
    assert_eq!(
        stack
            .list_bucket(&format!("accounts/{ALICE}/"))
            .await
            .unwrap(),
        expected
    );
}

/// Recovers the keys with the password and restores with whichever made the
/// backup; returns that key's id and whether the vault held two keys.
async fn restore_with(
    vault: &backup_client::vault::VaultClient,
    gateway: &backup_client::GatewayClient,
    password: &Password,
    target: &std::path::Path,
) -> (String, bool) {
    let recovered = vault.recover(password).await.unwrap();
    let mut keys = vec![&recovered.key];
    keys.extend(recovered.previous.as_ref());
    let report = restore_any(gateway, vault, ALICE, &keys, target)
        .await
        .unwrap();
    (report.key_id, recovered.previous.is_some())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_users_old_key_is_refused_after_rotation_with_a_clear_error() {
    let stack = Stack::start().await.unwrap();
    let phone_dir = small_phone(stack.dir(), 32);
    let gateway = stack.client(ALICE);
    let old = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &old).await;
    back_up(&gateway, &vault, ALICE, &old, &phone_dir)
        .await
        .unwrap();
    let new = RootKey::generate();
    rotate_key(&gateway, &vault, ALICE, &old, &new, &phone_dir)
        .await
        .unwrap();
    assert_eq!(
        vault.pointer().await.unwrap().auth_public_key,
        new.auth_public_key(),
        "the confirmed rotation made the new key the registered one"
    );

    let error = restore(&gateway, &vault, ALICE, &old, &stack.dir().join("old"))
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::OtherKey { .. }), "{error:?}");
    assert!(
        error.to_string().contains("use the key that made it"),
        "{error}"
    );
    let target = stack.dir().join("new");
    restore(&gateway, &vault, ALICE, &new, &target)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
}

/// Issue 8, finding 6: the gateway stopped right after writing the commit
/// record of a rotation (the answer never reaches the phone). The user
/// already holds the new key; a fresh device restores with it, and the next
/// backup settles the rotation through the pointer's pending entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_whose_commit_answer_was_lost_restores_with_the_key_the_user_was_given() {
    let mut stack = Stack::start().await.unwrap();
    let phone_dir = small_phone(stack.dir(), 33);
    let old = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &old).await;
    back_up(&gateway_of(&stack), &vault, ALICE, &old, &phone_dir)
        .await
        .unwrap();

    stack.kill("blob-gateway");
    stack.gateway_env = vec![(
        "BLOB_GATEWAY_FAILPOINT".into(),
        "commit:after-record".into(),
    )];
    stack.start_gateway().await.unwrap();
    // The phone shows the new key before rotating (the API takes it).
    let new = RootKey::generate();
    let shown = new.to_display_digits();
    let error = rotate_key(&gateway_of(&stack), &vault, ALICE, &old, &new, &phone_dir)
        .await
        .unwrap_err();
    match &error {
        RotateError::Unsettled {
            old_key_id,
            new_key_id,
            ..
        } => {
            assert_eq!(old_key_id, &hex::encode(old.key_id()));
            assert_eq!(new_key_id, &hex::encode(new.key_id()));
        }
        other => panic!("expected an unsettled rotation, got {other:?}"),
    }
    assert!(error.to_string().contains("keep both keys"), "{error}");
    stack.kill("blob-gateway");
    stack.gateway_env.clear();
    stack.start_gateway().await.unwrap();

    // A fresh device with the key the user was shown: the committed
    // generation is the pointer's pending one, and it restores.
    let typed = RootKey::parse(&shown).unwrap();
    let target = stack.dir().join("new-phone");
    let report = restore(
        &gateway_of(&stack),
        &stack.vault(ALICE),
        ALICE,
        &typed,
        &target,
    )
    .await
    .unwrap();
    assert_eq!(report.vouched, Some(Vouched::Pending));
    assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
    let error = restore(
        &gateway_of(&stack),
        &vault,
        ALICE,
        &old,
        &stack.dir().join("old"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RestoreError::OtherKey { .. }), "{error:?}");

    // The next backup with the new key confirms the lost commit.
    let next = back_up(&gateway_of(&stack), &vault, ALICE, &new, &phone_dir)
        .await
        .unwrap();
    assert_eq!(next.settled_generation, Some(report.generation));
    assert!(next.pointer_confirmed);
    let pointer = vault.pointer().await.unwrap();
    assert_eq!(pointer.auth_public_key, new.auth_public_key());
    assert_eq!(pointer.committed.unwrap().generation, next.generation);
}

/// A new connection, as a phone makes after a failure (the old one died
/// with the gateway).
fn gateway_of(stack: &Stack) -> backup_client::GatewayClient {
    stack.client(ALICE)
}
