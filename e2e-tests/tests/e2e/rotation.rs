//! Key rotation: everything re-encrypted under a new key, the old generation
//! gone, and a rotation interrupted at any step still restorable, with the
//! restore saying which key it needed.

use backup_client::rotate::{
    begin_with_vault, finish_with_vault, rotate_key, rotate_key_with_vault,
};
use backup_client::vault::Password;
use backup_client::{RestoreError, RestoreOptions, RootKey, back_up, restore, restore_any};
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
    back_up(&gateway, ALICE, &old, &phone_dir).await.unwrap();
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

    // Interrupted after step 2: committed under the new key.
    back_up(&gateway, ALICE, &new, &phone_dir).await.unwrap();
    assert_eq!(restore_with_password().await, (key_id(&new), true));
    let error = restore(&gateway, ALICE, &old, &stack.dir().join("old"))
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
    let report = restore_any(gateway, ALICE, &keys, target, RestoreOptions::default())
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
    back_up(&gateway, ALICE, &old, &phone_dir).await.unwrap();
    let (new, _) = rotate_key(&gateway, ALICE, &phone_dir).await.unwrap();

    let error = restore(&gateway, ALICE, &old, &stack.dir().join("old"))
        .await
        .unwrap_err();
    assert!(matches!(error, RestoreError::OtherKey { .. }), "{error:?}");
    assert!(
        error.to_string().contains("use the key that made it"),
        "{error}"
    );
    let target = stack.dir().join("new");
    restore(&gateway, ALICE, &new, &target).await.unwrap();
    assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
}
