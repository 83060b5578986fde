//! The gateway killed at each step of upload, commit and clean-up: after a
//! restart, a complete generation (the old or the new) always restores, and
//! the next backup leaves exactly one generation in the bucket.

use std::path::Path;

use backup_client::{RootKey, back_up, restore};
use device_sim::day::{DayActivity, live_one_day};
use device_sim::phone;
use e2e_tests::Stack;

use crate::key_backup::{all_chunk_ids, small_phone};

const ALICE: &str = "alice";

fn copy_tree(from: &Path, to: &Path) {
    for (path, _) in phone::list_files(from).unwrap() {
        let target = to.join(&path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&path), target).unwrap();
    }
}

/// (failpoint, whether the interrupted backup is the one that restores)
const STEPS: &[(&str, bool)] = &[
    ("put-chunk:after-store", false),
    ("commit:after-manifest", false),
    ("commit:after-record", true),
    ("commit:mid-gc", true),
];

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_at_any_step_leaves_a_whole_generation() {
    let mut stack = Stack::start().await.unwrap();
    let phone_dir = small_phone(stack.dir(), 21);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    back_up(&gateway, ALICE, &key, &phone_dir).await.unwrap();

    for (day, &(failpoint, new_survives)) in STEPS.iter().enumerate() {
        let before = stack.dir().join(format!("before-{day}"));
        copy_tree(&phone_dir, &before);
        live_one_day(&phone_dir, 21, day as u32 + 1, DayActivity::typical()).unwrap();

        stack.kill("blob-gateway");
        stack.gateway_env = vec![("BLOB_GATEWAY_FAILPOINT".into(), failpoint.into())];
        stack.start_gateway().await.unwrap();
        let interrupted = back_up(&gateway, ALICE, &key, &phone_dir).await;
        assert!(
            interrupted.is_err(),
            "{failpoint}: the gateway should have died"
        );
        stack.kill("blob-gateway");
        stack.gateway_env.clear();
        stack.start_gateway().await.unwrap();

        let restored = stack.dir().join(format!("restored-{day}"));
        restore(&gateway, ALICE, &key, &restored)
            .await
            .unwrap_or_else(|e| panic!("{failpoint}: no whole generation: {e}"));
        let expected = if new_survives { &phone_dir } else { &before };
        assert!(
            phone::diff_trees(expected, &restored).unwrap().is_empty(),
            "{failpoint}: restored neither the old nor the expected generation"
        );

        // The next backup completes and cleans up what the crash left; after
        // an interrupted upload it does not send the stored chunks again.
        let report = back_up(&gateway, ALICE, &key, &phone_dir).await.unwrap();
        if failpoint == "put-chunk:after-store" {
            let before_ids = all_chunk_ids(&key, &before);
            let new_chunks = all_chunk_ids(&key, &phone_dir)
                .into_iter()
                .filter(|id| !before_ids.contains(id))
                .count();
            assert!(
                report.uploaded_chunks < new_chunks,
                "resumed backup sent {} of {new_chunks} new chunks",
                report.uploaded_chunks
            );
        }
        let mut expected_keys: Vec<String> = all_chunk_ids(&key, &phone_dir)
            .into_iter()
            .map(|id| format!("accounts/{ALICE}/chunks/{id}"))
            .collect();
        expected_keys.push(format!("accounts/{ALICE}/generation"));
        expected_keys.push(format!(
            "accounts/{ALICE}/manifests/{:020}",
            report.generation
        ));
        expected_keys.sort();
        assert_eq!(
            stack
                .list_bucket(&format!("accounts/{ALICE}/"))
                .await
                .unwrap(),
            expected_keys,
            "{failpoint}: leftovers after the next commit"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_restore_resumes_without_fetching_verified_chunks_again() {
    let mut stack = Stack::start().await.unwrap();
    let phone_dir = small_phone(stack.dir(), 22);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let backup = back_up(&gateway, ALICE, &key, &phone_dir).await.unwrap();
    assert!(
        backup.chunks > 10,
        "enough chunks to interrupt: {}",
        backup.chunks
    );

    // The gateway dies after serving 5 chunks.
    stack.kill("blob-gateway");
    stack.gateway_env = vec![("BLOB_GATEWAY_FAILPOINT".into(), "get-chunk:after-5".into())];
    stack.start_gateway().await.unwrap();
    let target = stack.dir().join("restored");
    let error = restore(&gateway, ALICE, &key, &target).await.unwrap_err();
    assert!(
        matches!(&error, backup_client::RestoreError::Gateway(e) if e.is_retryable()),
        "{error:?}"
    );
    assert!(
        !target.exists(),
        "nothing is in place before every file verified"
    );

    stack.kill("blob-gateway");
    stack.gateway_env.clear();
    stack.start_gateway().await.unwrap();
    let resumed = restore(&gateway, ALICE, &key, &target).await.unwrap();
    assert!(phone::diff_trees(&phone_dir, &target).unwrap().is_empty());
    assert!(
        resumed.downloaded_chunks < backup.chunks,
        "the resumed restore fetched {} of {} chunks",
        resumed.downloaded_chunks,
        backup.chunks
    );
}
