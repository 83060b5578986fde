//! Issue 8, findings 3 and 4: a storage operator who puts an older backup
//! back (rollback) or serves another backup of the same account
//! (substitution). The vault's backup pointer is the only server state the
//! device trusts; a fresh device refuses both, and no backup is committed on
//! top of them. The honest flow around each attack still restores.

use std::path::{Path, PathBuf};

use backup_client::freshness::FreshnessError;
use backup_client::{BackupError, RestoreError, RootKey, back_up, restore};
use device_sim::day::{DayActivity, live_one_day};
use device_sim::phone;
use e2e_tests::Stack;

use crate::crash::copy_tree;
use crate::key_backup::small_phone;

const ALICE: &str = "alice";

/// What the storage operator saves: every file of the local S3 data
/// directory (objects and their metadata), by relative path.
struct Snapshot(Vec<(PathBuf, Vec<u8>)>);

impl Snapshot {
    fn take(stack: &Stack) -> Self {
        let root = stack.s3_data_dir();
        Self(
            stack
                .stored_files()
                .into_iter()
                .map(|path| {
                    let bytes = std::fs::read(&path).unwrap();
                    (path.strip_prefix(&root).unwrap().to_path_buf(), bytes)
                })
                .collect(),
        )
    }

    /// Puts the saved files back in place of the account's current ones.
    fn put_back(&self, stack: &Stack) {
        let root = stack.s3_data_dir();
        std::fs::remove_dir_all(stack.bucket_dir()).unwrap();
        for (relative, bytes) in &self.0 {
            let path = root.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
}

/// Alice's phone (from `seed`) backed up once with a new key.
async fn backed_up(
    stack: &Stack,
    seed: u64,
) -> (
    PathBuf,
    backup_client::GatewayClient,
    RootKey,
    backup_client::vault::VaultClient,
) {
    let phone_dir = small_phone(stack.dir(), seed);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    (phone_dir, gateway, key, vault)
}

fn same_tree(a: &Path, b: &Path) -> bool {
    phone::diff_trees(a, b).unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_backup_is_refused_on_a_fresh_device_and_never_built_upon() {
    let stack = Stack::start().await.unwrap();
    let (phone_dir, gateway, key, vault) = backed_up(&stack, 41).await;
    let generation_1 = Snapshot::take(&stack);
    live_one_day(&phone_dir, 41, 1, DayActivity::typical()).unwrap();
    let second = back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    assert_eq!(second.generation, 2);

    // The operator puts generation 1 back.
    generation_1.put_back(&stack);
    assert_eq!(gateway.get_backup().await.unwrap().unwrap().generation, 1);

    // A fresh device (its own connections, only the key) refuses it.
    let fresh_vault = stack.vault(ALICE);
    let target = stack.dir().join("fresh");
    let error = restore(&stack.client(ALICE), &fresh_vault, ALICE, &key, &target)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RestoreError::Freshness(FreshnessError::RolledBack {
                served: 1,
                committed: 2
            })
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("rollback"), "{error}");
    assert!(!target.exists(), "nothing is written from a refused backup");

    // The old phone does not commit on top of it either.
    let error = back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackupError::Freshness(FreshnessError::RolledBack { .. })
        ),
        "{error:?}"
    );
    assert_eq!(
        gateway.get_backup().await.unwrap().unwrap().generation,
        1,
        "nothing was committed on top of the rolled-back backup"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_substituted_backup_of_the_same_account_and_key_is_refused() {
    let stack = Stack::start().await.unwrap();
    let (phone_dir, gateway, key, vault) = backed_up(&stack, 42).await;
    live_one_day(&phone_dir, 42, 1, DayActivity::typical()).unwrap();
    back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    let first_chain = Snapshot::take(&stack);
    let first_phone = stack.dir().join("first-phone");
    copy_tree(&phone_dir, &first_phone);

    // Backups disabled and enabled again with the same key: a new chain
    // whose generation 2 holds other messages.
    vault
        .delete(backup_client::vault::Proof::BackupKey(&key))
        .await
        .unwrap();
    gateway.delete_backup().await.unwrap();
    vault.enable_key_backup(&key, None).await.unwrap();
    live_one_day(&phone_dir, 42, 2, DayActivity::typical()).unwrap();
    back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    live_one_day(&phone_dir, 42, 3, DayActivity::typical()).unwrap();
    let current = back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    assert_eq!(current.generation, 2);

    // The honest state restores.
    let honest = stack.dir().join("honest");
    restore(&gateway, &vault, ALICE, &key, &honest)
        .await
        .unwrap();
    assert!(same_tree(&phone_dir, &honest));

    // The operator serves the first chain's generation 2: same account,
    // same key, same generation number, a valid manifest; only the pointer
    // tells them apart.
    first_chain.put_back(&stack);
    let target = stack.dir().join("substituted");
    let error = restore(
        &stack.client(ALICE),
        &stack.vault(ALICE),
        ALICE,
        &key,
        &target,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            RestoreError::Freshness(FreshnessError::Substituted { served: 2 })
        ),
        "{error:?}"
    );
    assert!(!target.exists());
    let error = back_up(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackupError::Freshness(FreshnessError::Substituted { .. })
        ),
        "{error:?}"
    );
    assert!(!same_tree(&first_phone, &phone_dir));
}
