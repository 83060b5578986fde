//! Key rotation in storage format v3 (packs), end to end: after a rotation
//! the old key is refused and the new one restores, every pack under the
//! old key is gone, a password user's rotation restores at every step, and a
//! rotation whose commit answer was lost restores with the new key as the
//! pointer's pending generation and is settled by the next v3 backup.

use std::collections::HashSet;

use backup_client::freshness::Vouched;
use backup_client::packs::rotate::{finish_rotation_v3, rotate_key_with_vault_v3};
use backup_client::packs::{
    PackGatewayClient, back_up_v3, restore_v3, restore_v3_any, rotate_key_v3,
};
use backup_client::rotate::{RotateError, begin_with_vault};
use backup_client::vault::Password;
use backup_client::{RestoreError, RootKey};
use device_sim::phone;
use e2e_tests::Stack;

use crate::key_backup::small_phone;
use crate::packs_v3::{client, stack};

const ALICE: &str = "alice";

/// The names of the account's stored packs.
fn pack_names(stack: &Stack) -> HashSet<String> {
    let dir = stack.bucket_dir().join(format!("v3/{ALICE}/packs"));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn gateway_of(stack: &Stack) -> PackGatewayClient {
    client(stack, ALICE)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_v3_rotation_the_old_key_is_refused_the_new_one_restores_and_old_packs_are_gone() {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 41);
    let gateway = gateway_of(&stack);
    let old = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &old).await;
    let first = back_up_v3(&gateway, &vault, ALICE, &old, &phone_dir)
        .await
        .unwrap();
    let before = pack_names(&stack);
    assert_eq!(before.len(), first.packs);

    let new = RootKey::generate();
    let report = rotate_key_v3(&gateway, &vault, ALICE, &old, &new, &phone_dir)
        .await
        .unwrap();
    assert_eq!(report.generation, 2);
    assert!(report.pointer_confirmed);
    assert_eq!(
        report.new_chunks, report.distinct_chunks,
        "every chunk re-sealed"
    );
    assert_eq!(report.deleted_packs, first.packs as u64);
    let after = pack_names(&stack);
    assert_eq!(after.len(), report.packs);
    assert!(
        after.is_disjoint(&before),
        "no pack under the old key is left"
    );
    assert_eq!(
        vault.pointer().await.unwrap().auth_public_key,
        new.auth_public_key(),
        "the confirmed rotation made the new key the registered one"
    );

    let error = restore_v3(&gateway, &vault, ALICE, &old, &stack.dir().join("old"))
        .await
        .unwrap_err();
    match &error {
        RestoreError::OtherKey {
            backup_key_id,
            given_key_id,
        } => {
            assert_eq!(backup_key_id, &hex::encode(new.key_id()));
            assert_eq!(given_key_id, &hex::encode(old.key_id()));
        }
        other => panic!("expected OtherKey, got {other:?}"),
    }
    let target = stack.dir().join("new");
    let restored = restore_v3(&gateway, &vault, ALICE, &new, &target)
        .await
        .unwrap();
    assert_eq!(restored.vouched, Some(Vouched::Committed));
    assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());

    // The next backup under the new key sends nothing new.
    let next = back_up_v3(&gateway, &vault, ALICE, &new, &phone_dir)
        .await
        .unwrap();
    assert_eq!(next.new_chunks, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_users_v3_rotation_restores_at_every_step_with_the_vaults_keys() {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 42);
    let gateway = gateway_of(&stack);
    let vault = stack.vault(ALICE);
    let password = Password::new("rotate me too");
    let old = RootKey::generate();
    vault.register(&password, &old, None).await.unwrap();
    back_up_v3(&gateway, &vault, ALICE, &old, &phone_dir)
        .await
        .unwrap();
    let mut attempt = 0;
    let mut restore_with_password = async || {
        attempt += 1;
        let target = stack.dir().join(format!("restore-{attempt}"));
        let recovered = vault.recover(&password).await.unwrap();
        let mut keys = vec![&recovered.key];
        keys.extend(recovered.previous.as_ref());
        let report = restore_v3_any(&gateway, &vault, ALICE, &keys, &target)
            .await
            .unwrap();
        assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
        (report.key_id, recovered.previous.is_some())
    };
    let key_id = |key: &RootKey| hex::encode(key.key_id());

    // Interrupted after step 1: both keys in the vault, backup under the old.
    let new = RootKey::generate();
    begin_with_vault(&vault, &password, &old, &new)
        .await
        .unwrap();
    assert_eq!(restore_with_password().await, (key_id(&old), true));

    // Steps 2 and 3, as a rerun finishes them.
    finish_rotation_v3(&gateway, &vault, &password, ALICE, &old, &new, &phone_dir)
        .await
        .unwrap();
    assert_eq!(restore_with_password().await, (key_id(&new), false));

    // The whole rotation in one call.
    let (newest, report) =
        rotate_key_with_vault_v3(&gateway, &vault, &password, ALICE, &new, &phone_dir)
            .await
            .unwrap();
    assert!(report.deleted_packs > 0);
    assert_eq!(restore_with_password().await, (key_id(&newest), false));
    assert_eq!(pack_names(&stack).len(), report.packs);
}

/// The gateway stops right after writing the commit record of a v3
/// rotation: the answer never reaches the phone. The user holds the new
/// key; a fresh device restores with it (vouched for as pending), the old
/// key is refused, and the next v3 backup settles the rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_v3_rotation_whose_commit_answer_was_lost_restores_with_the_new_key_and_is_settled() {
    let mut stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 43);
    let old = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &old).await;
    back_up_v3(&gateway_of(&stack), &vault, ALICE, &old, &phone_dir)
        .await
        .unwrap();

    stack.kill("blob-gateway");
    stack.gateway_env.push((
        "BLOB_GATEWAY_FAILPOINT".into(),
        "commit:after-record".into(),
    ));
    stack.start_gateway().await.unwrap();
    let new = RootKey::generate();
    let shown = new.to_display_digits();
    let error = rotate_key_v3(&gateway_of(&stack), &vault, ALICE, &old, &new, &phone_dir)
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
    stack
        .gateway_env
        .retain(|(name, _)| name != "BLOB_GATEWAY_FAILPOINT");
    stack.start_gateway().await.unwrap();

    let typed = RootKey::parse(&shown).unwrap();
    let target = stack.dir().join("new-phone");
    let report = restore_v3(
        &gateway_of(&stack),
        &stack.vault(ALICE),
        ALICE,
        &typed,
        &target,
    )
    .await
    .unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.vouched, Some(Vouched::Pending));
    assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
    let error = restore_v3(
        &gateway_of(&stack),
        &vault,
        ALICE,
        &old,
        &stack.dir().join("old"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RestoreError::OtherKey { .. }), "{error:?}");

    let next = back_up_v3(&gateway_of(&stack), &vault, ALICE, &new, &phone_dir)
        .await
        .unwrap();
    assert_eq!(next.settled_generation, Some(2));
    assert_eq!(next.generation, 3);
    assert_eq!(next.new_chunks, 0);
    assert!(next.pointer_confirmed);
    let pointer = vault.pointer().await.unwrap();
    assert_eq!(pointer.auth_public_key, new.auth_public_key());
    assert_eq!(pointer.committed.map(|c| c.generation), Some(3));
    assert!(pointer.pending.is_none());
}
