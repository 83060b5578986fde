//! Storage format v3 (packs) end to end: the real local S3, key vault and
//! blob gateway binaries, driven by `back_up_v3` / `restore_v3`. A backup
//! stores padded packs with random names and no plaintext, restores byte
//! for byte, sends only new chunks the next time, resumes from packs an
//! interrupted run uploaded, and a restore detects a tampered pack and a
//! rolled-back backup.

use std::path::{Path, PathBuf};

use account_token::Audience;
use backup_client::chunking::{ChunkIds, GearTable, keyed_file_chunks};
use backup_client::freshness::{FreshnessError, Vouched};
use backup_client::packs::manifest;
use backup_client::packs::pack::{PackKeys, PackName, PackWriter};
use backup_client::packs::{
    PackBackupOptions, PackGatewayClient, back_up_v3, back_up_v3_with, restore_v3,
};
use backup_client::vault::BackupRef;
use backup_client::{BackupError, IntegrityFailure, RestoreError, RootKey};
use device_sim::day::{DayActivity, live_one_day};
use device_sim::phone;
use e2e_tests::Stack;

use crate::key_backup::small_phone;

const ALICE: &str = "alice";

/// A stack whose gateway allows what several generations of packs need.
pub(crate) async fn stack() -> Stack {
    let mut stack = Stack::start().await.unwrap();
    stack.kill("blob-gateway");
    stack.gateway_env = vec![("BLOB_GATEWAY_QUOTA_BYTES".into(), (64u64 << 20).to_string())];
    stack.start_gateway().await.unwrap();
    stack
}

pub(crate) fn client(stack: &Stack, account: &str) -> PackGatewayClient {
    PackGatewayClient::connect(
        &stack.gateway_endpoint(),
        &stack.trust,
        stack.token(account, Audience::BlobGateway),
    )
    .unwrap()
}

/// Alice's stored packs: (path, bytes).
fn packs(stack: &Stack) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = stack.bucket_dir().join(format!("v3/{ALICE}/packs"));
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && PackName::parse(&p.file_name().unwrap().to_string_lossy()).is_some()
        })
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn same_tree(a: &Path, b: &Path) -> bool {
    phone::diff_trees(a, b).unwrap().is_empty()
}

const SMALL_PACKS: PackBackupOptions = PackBackupOptions {
    pack_target: 128 * 1024,
};

#[tokio::test(flavor = "multi_thread")]
async fn v3_backup_restores_exactly_from_padded_packs_and_sends_only_new_chunks() {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 31);
    let gateway = client(&stack, ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    std::fs::create_dir_all(phone_dir.join("Backups/none-yet")).unwrap();

    let first = back_up_v3_with(&gateway, &vault, ALICE, &key, &key, &phone_dir, SMALL_PACKS)
        .await
        .unwrap();
    assert_eq!(first.generation, 1);
    assert!(first.pointer_confirmed);
    assert!(first.uploaded_packs >= 2, "{first:?}");
    assert_eq!(first.packs, first.uploaded_packs);
    assert_eq!(first.new_chunks, first.distinct_chunks);

    // The storage holds padded packs under random names, and no plaintext.
    let stored = packs(&stack);
    assert_eq!(stored.len(), first.packs);
    let texts = phone::sample_texts(&phone_dir, 20).unwrap();
    assert!(!texts.is_empty());
    for (path, bytes) in &stored {
        assert!(padme::is_padded(bytes.len() as u64), "{}", path.display());
        assert!(!contains(bytes, b"SQLite format 3"), "{}", path.display());
        for text in &texts {
            assert!(!contains(bytes, text.as_bytes()), "{}", path.display());
        }
    }

    let restored = stack.dir().join("restored-1");
    let report = restore_v3(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert_eq!(report.generation, 1);
    assert!(same_tree(&phone_dir, &restored));
    assert!(restored.join("Backups/none-yet").is_dir());

    // Nothing changed: nothing is sent but the manifest.
    let unchanged = back_up_v3_with(&gateway, &vault, ALICE, &key, &key, &phone_dir, SMALL_PACKS)
        .await
        .unwrap();
    assert_eq!(unchanged.generation, 2);
    assert_eq!((unchanged.new_chunks, unchanged.uploaded_packs), (0, 0));
    assert_eq!(unchanged.uploaded_bytes, unchanged.manifest_bytes);

    // A day of chat: a few new chunks, in one new pack.
    live_one_day(&phone_dir, 31, 1, DayActivity::typical()).unwrap();
    let daily = back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    assert_eq!(daily.generation, 3);
    assert_eq!(daily.uploaded_packs, 1, "{daily:?}");
    assert!(
        daily.new_chunks > 0 && daily.new_chunks < daily.distinct_chunks,
        "{daily:?}"
    );
    let restored = stack.dir().join("restored-3");
    restore_v3(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(same_tree(&phone_dir, &restored));

    // Another key is named as such.
    let error = restore_v3(
        &gateway,
        &vault,
        ALICE,
        &RootKey::generate(),
        &stack.dir().join("x"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RestoreError::OtherKey { .. }), "{error:?}");

    // One flipped byte in each pack: the restore stops, names a file, and
    // leaves nothing behind.
    for (path, mut bytes) in packs(&stack) {
        bytes[100] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
    }
    let target = stack.dir().join("restored-after-tampering");
    let error = restore_v3(&gateway, &vault, ALICE, &key, &target)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            RestoreError::Integrity {
                reason: IntegrityFailure::Open(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_v3_backup_resumes_from_its_uploaded_packs() {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 32);
    let gateway = client(&stack, ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;

    // What an interrupted run left: a pack of the chat database's chunks,
    // uploaded and never committed; and a pack that is not one of ours.
    let (ids, gear) = (ChunkIds::new(&key), GearTable::new(&key));
    let mut writer = PackWriter::new(PackKeys::new(&key, ALICE));
    let mut db_chunks = std::collections::HashSet::new();
    for chunk in keyed_file_chunks(&phone_dir.join(phone::DB_FILE), &ids, &gear).unwrap() {
        let chunk = chunk.unwrap();
        if db_chunks.insert(chunk.id) {
            writer.add(&chunk.id, &chunk.data);
        }
    }
    let left = writer.finish();
    gateway
        .put_pack(&left.name, left.bytes.clone().into())
        .await
        .unwrap();
    let foreign = PackName::random();
    gateway
        .put_pack(&foreign, vec![7u8; 4096].into())
        .await
        .unwrap();
    assert_eq!(gateway.list_uploads().await.unwrap().len(), 2);

    let report = back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    assert_eq!(report.resumed_chunks, db_chunks.len(), "{report:?}");
    assert_eq!(report.abandoned_packs, 1);
    assert_eq!(report.new_chunks, report.distinct_chunks - db_chunks.len());
    assert!(gateway.list_uploads().await.unwrap().is_empty());
    let backup = gateway.get_backup().await.unwrap().unwrap();
    assert!(backup.packs.iter().any(|p| p.name == left.name.as_str()));
    assert!(!backup.packs.iter().any(|p| p.name == foreign.as_str()));

    let restored = stack.dir().join("restored");
    restore_v3(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(same_tree(&phone_dir, &restored));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_v3_backup_is_refused_and_never_built_upon() {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 33);
    let gateway = client(&stack, ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    let saved = stack.dir().join("s3-generation-1");
    crate::crash::copy_tree(&stack.s3_data_dir(), &saved);
    live_one_day(&phone_dir, 33, 1, DayActivity::typical()).unwrap();
    back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();

    // The storage operator puts generation 1 back.
    std::fs::remove_dir_all(stack.bucket_dir()).unwrap();
    crate::crash::copy_tree(&saved, &stack.s3_data_dir());
    assert_eq!(gateway.get_backup().await.unwrap().unwrap().generation, 1);
    let error = restore_v3(&gateway, &vault, ALICE, &key, &stack.dir().join("r"))
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
    let error = back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackupError::Freshness(FreshnessError::RolledBack { .. })
        ),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v3_commit_whose_confirmation_was_lost_restores_as_pending_and_the_next_backup_settles_it()
 {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 34);
    let gateway = client(&stack, ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();

    // Generation 2 announced and committed; the confirmation never came.
    let backup = gateway.get_backup().await.unwrap().unwrap();
    let sealed_1 = gateway.get_manifest(1, backup.manifest_size).await.unwrap();
    let mut next = manifest::open(&key, ALICE, 1, &sealed_1).unwrap();
    next.generation = 2;
    next.previous_digest = manifest::digest(&sealed_1).to_vec();
    let sealed_2 = manifest::seal(&key, &next);
    let announced = BackupRef {
        generation: 2,
        manifest_digest: manifest::digest(&sealed_2),
    };
    vault.set_pending(&key, announced, &key).await.unwrap();
    gateway
        .commit(1, sealed_2, next.packs.clone(), Vec::new())
        .await
        .unwrap();

    let restored = stack.dir().join("restored");
    let report = restore_v3(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.vouched, Some(Vouched::Pending));
    assert!(same_tree(&phone_dir, &restored));

    let settled = back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    assert_eq!(settled.settled_generation, Some(2));
    assert_eq!(settled.generation, 3);
    assert_eq!(settled.new_chunks, 0);
    let pointer = vault.pointer().await.unwrap();
    assert_eq!(pointer.committed.map(|c| c.generation), Some(3));
    assert!(pointer.pending.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_v3_backup_fills_16_mib_packs_uploaded_in_bounded_messages() {
    use rand::{RngCore, SeedableRng};
    let stack = stack().await;
    let phone_dir = stack.dir().join("phone-with-a-video");
    std::fs::create_dir_all(phone_dir.join("Media")).unwrap();
    let mut video = vec![0u8; 40 << 20];
    rand::rngs::StdRng::seed_from_u64(35).fill_bytes(&mut video);
    std::fs::write(phone_dir.join("Media/video.mp4"), &video).unwrap();
    std::fs::write(phone_dir.join("notes.txt"), b"hello").unwrap();
    let gateway = client(&stack, ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;

    let report = back_up_v3(&gateway, &vault, ALICE, &key, &phone_dir)
        .await
        .unwrap();
    // 40 MiB of sealed chunks: two full packs and the rest.
    assert_eq!(report.uploaded_packs, 3, "{report:?}");
    let mut sizes: Vec<u64> = packs(&stack)
        .iter()
        .map(|(_, bytes)| bytes.len() as u64)
        .collect();
    sizes.sort();
    assert_eq!(sizes.len(), 3);
    for size in &sizes {
        assert!(padme::is_padded(*size));
    }
    assert!(sizes[1] >= 16 << 20 && sizes[2] <= 18 << 20, "{sizes:?}");

    let restored = stack.dir().join("restored");
    let restore = restore_v3(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(same_tree(&phone_dir, &restored));
    // Only chunks were read: no padding, header or trailer.
    assert!(restore.downloaded_bytes < sizes.iter().sum::<u64>());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_v3_restore_keeps_the_staged_files_that_verify() {
    let stack = stack().await;
    let phone_dir = small_phone(stack.dir(), 36);
    let gateway = client(&stack, ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    back_up_v3_with(&gateway, &vault, ALICE, &key, &key, &phone_dir, SMALL_PACKS)
        .await
        .unwrap();
    let whole = stack.dir().join("whole");
    let full = restore_v3(&gateway, &vault, ALICE, &key, &whole)
        .await
        .unwrap();

    // What an interrupted restore of this backup left: every file staged,
    // the database altered, one media file missing.
    let backup = gateway.get_backup().await.unwrap().unwrap();
    let sealed = gateway
        .get_manifest(backup.generation, backup.manifest_size)
        .await
        .unwrap();
    let target = stack.dir().join("resumed");
    let staging = stack.dir().join(".resumed.restoring");
    crate::crash::copy_tree(&whole, &staging);
    std::fs::write(
        staging.join(".e2eb-restoring"),
        format!(
            "{} {}",
            backup.generation,
            hex::encode(manifest::digest(&sealed))
        ),
    )
    .unwrap();
    let db = staging.join(phone::DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&db, bytes).unwrap();
    let media = phone::list_files(&staging)
        .unwrap()
        .into_iter()
        .find(|(path, _)| path.starts_with("Media/"))
        .unwrap()
        .0;
    std::fs::remove_file(staging.join(&media)).unwrap();

    let resumed = restore_v3(&gateway, &vault, ALICE, &key, &target)
        .await
        .unwrap();
    assert!(same_tree(&phone_dir, &target));
    assert!(!staging.exists());
    assert!(
        resumed.downloaded_chunks > 0 && resumed.downloaded_chunks < full.downloaded_chunks,
        "{} of {} chunks fetched again",
        resumed.downloaded_chunks,
        full.downloaded_chunks
    );
}
