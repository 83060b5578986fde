//! Backups with the 64-digit key, and the gateway's guarantees.

use std::path::{Path, PathBuf};
use std::process::Command;

use account_token::Audience;
use backup_client::chunking::{self, ChunkIds};
use backup_client::vault::VaultError;
use backup_client::{
    BearerToken, GatewayError, IntegrityFailure, RestoreError, RootKey, back_up, device_files,
    restore,
};
use device_sim::phone::{self, PhoneProfile};
use e2e_tests::{Stack, bin};

const ALICE: &str = "alice";

pub fn small_phone(dir: &Path, seed: u64) -> PathBuf {
    let root = dir.join(format!("phone-{seed}"));
    phone::create_phone(&root, seed, &PhoneProfile::small()).expect("create a phone");
    root
}

/// The chunk ids of one device file under `key`, in order.
pub fn chunk_ids_of(key: &RootKey, file: &Path) -> Vec<String> {
    let ids = ChunkIds::new(key);
    chunking::file_chunks(file, &ids)
        .unwrap()
        .map(|c| c.unwrap().id.to_hex())
        .collect()
}

/// Every chunk id of a phone under `key`, deduplicated and sorted.
pub fn all_chunk_ids(key: &RootKey, phone: &Path) -> Vec<String> {
    let mut ids: Vec<String> = device_files::list(phone)
        .unwrap()
        .iter()
        .flat_map(|f| chunk_ids_of(key, &phone.join(&f.path)))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Why the chat database failed its integrity check (panics on any other
/// error).
fn db_integrity_failure(error: &RestoreError) -> &IntegrityFailure {
    match error {
        RestoreError::Integrity { path, reason } if path == phone::DB_FILE => reason,
        other => panic!(
            "expected an integrity error of {}, got {other:?}",
            phone::DB_FILE
        ),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn key_backup_restores_exactly_stores_no_plaintext_and_detects_a_flipped_byte() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 1);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;

    let report = back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    assert_eq!(report.files, device_files::list(&phone).unwrap().len());

    // The user types the 64 digits on a new phone.
    let typed = RootKey::parse(&key.to_display_digits()).unwrap();
    let restored = stack.dir().join("restored");
    restore(&gateway, &vault, ALICE, &typed, &restored)
        .await
        .unwrap();
    assert_eq!(
        phone::diff_trees(&phone, &restored).unwrap(),
        Vec::<String>::new()
    );

    // Nothing the storage holds is plaintext.
    let texts = phone::sample_texts(&phone, 20).unwrap();
    assert!(!texts.is_empty());
    let media = device_files::list(&phone)
        .unwrap()
        .into_iter()
        .filter(|f| f.path.starts_with("Media/"))
        .max_by_key(|f| f.size)
        .unwrap();
    let media_bytes = std::fs::read(phone.join(&media.path)).unwrap();
    let media_sample = &media_bytes[media_bytes.len() / 2..media_bytes.len() / 2 + 64];
    let stored = stack.stored_files();
    assert!(
        stored.len() > report.files,
        "every file and the manifest are stored"
    );
    for file in &stored {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains(&bytes, b"SQLite format 3"),
            "{} holds the SQLite header",
            file.display()
        );
        assert!(
            !contains(&bytes, media_sample),
            "{} holds media plaintext",
            file.display()
        );
        for text in &texts {
            assert!(
                !contains(&bytes, text.as_bytes()),
                "{} holds a message text",
                file.display()
            );
        }
    }

    // Flip one byte of the stored chat database: the restore names it and
    // leaves no partial restore behind.
    let first_chunk = &chunk_ids_of(&key, &phone.join(phone::DB_FILE))[0];
    let blob = stack
        .bucket_dir()
        .join(format!("accounts/{ALICE}/chunks/{first_chunk}"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();
    let target = stack.dir().join("restored-after-tampering");
    let error = restore(&gateway, &vault, ALICE, &typed, &target)
        .await
        .unwrap_err();
    let reason = db_integrity_failure(&error);
    assert!(matches!(reason, IntegrityFailure::Open(_)), "{reason:?}");
    assert!(error.to_string().contains(phone::DB_FILE));
    assert!(!target.exists(), "a failed restore leaves nothing behind");

    // The storage puts 8 MiB where a chunk of at most a few KiB belongs:
    // the client stops reading at the bound the manifest gives (issue 8,
    // finding 7: it used to download any size) and names the file.
    std::fs::write(&blob, vec![0x5a; 8 << 20]).unwrap();
    let target = stack.dir().join("restored-after-replacement");
    let error = restore(&gateway, &vault, ALICE, &typed, &target)
        .await
        .unwrap_err();
    assert_eq!(db_integrity_failure(&error), &IntegrityFailure::Oversized);
    assert!(!target.exists());

    // Another key cannot open the backup, and the error says so.
    let error = restore(
        &gateway,
        &vault,
        ALICE,
        &RootKey::generate(),
        &stack.dir().join("x"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RestoreError::OtherKey { .. }), "{error:?}");
    assert!(error.to_string().contains("another key"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_token_cannot_list_read_or_delete_the_backup() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 2);
    let alice = stack.client(ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    let report = back_up(&alice, &vault, ALICE, &key, &phone).await.unwrap();
    let alice_files = |stack: &Stack| -> Vec<(PathBuf, Vec<u8>)> {
        stack
            .stored_files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("/accounts/alice/"))
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    };
    let before = alice_files(&stack);
    let alice_ids = all_chunk_ids(&key, &phone);

    let bob = stack.client("bob");
    // List: Bob sees no backup, and none of Alice's chunks.
    assert!(bob.get_backup().await.unwrap().is_none());
    assert!(bob.has_chunks(&alice_ids).await.unwrap().is_empty());
    // Read: Alice's chunk ids and generation mean nothing under Bob's account.
    let read = bob.get_chunk(&alice_ids[0], 1 << 20).await;
    assert!(matches!(read, Err(GatewayError::NotFound(_))), "{read:?}");
    let manifest = bob.get_manifest(report.generation).await;
    assert!(
        matches!(manifest, Err(GatewayError::NotFound(_))),
        "{manifest:?}"
    );
    // Commit a manifest over Alice's chunks as his own: he holds none of them.
    let commit = bob.commit(0, vec![1, 2, 3], alice_ids.clone()).await;
    assert!(
        matches!(commit, Err(GatewayError::Conflict(_))),
        "{commit:?}"
    );
    // Delete: removes only Bob's (empty) data.
    bob.delete_backup().await.unwrap();
    // Bob uploading under one of Alice's ids lands in his own prefix.
    bob.put_chunk(&alice_ids[0], vec![1, 2, 3]).await.unwrap();

    assert_eq!(
        alice_files(&stack),
        before,
        "Alice's stored objects are untouched"
    );
    let restored = stack.dir().join("restored");
    restore(&alice, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    // Bob restoring with Alice's key still gets nothing of hers.
    // (He never enabled backups: the vault has no pointer for him either.)
    let bob_vault = stack.vault("bob");
    let bobs = restore(&bob, &bob_vault, "bob", &key, &stack.dir().join("bob")).await;
    assert!(
        matches!(bobs, Err(RestoreError::Vault(VaultError::NotRegistered))),
        "{bobs:?}"
    );

    // Tokens that are forged, from another authority, or expired are
    // refused (trust_tokens.rs covers audiences and the wire).
    let alice_id = account_token::AccountId::new(ALICE).unwrap();
    let forged = stack.client_with(BearerToken::new("v4.public.AAAA"));
    assert!(matches!(
        forged.get_backup().await,
        Err(GatewayError::Unauthenticated(_))
    ));
    let other_key = account_token::Authority::generate()
        .mint(
            &alice_id,
            Audience::BlobGateway,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let other = stack.client_with(BearerToken::new(other_key));
    assert!(matches!(
        other.get_backup().await,
        Err(GatewayError::Unauthenticated(_))
    ));
    let expired_token = stack
        .authority
        .mint_at(
            &alice_id,
            Audience::BlobGateway,
            std::time::SystemTime::now() - std::time::Duration::from_secs(7200),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let expired = stack.client_with(BearerToken::new(expired_token.clone()));
    let error = expired.get_backup().await.unwrap_err();
    assert!(
        matches!(error, GatewayError::Unauthenticated(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("expired"), "{error}");
    let log = std::fs::read_to_string(stack.log_path("blob-gateway")).unwrap();
    assert!(
        !log.contains(expired_token.expose_secret()),
        "tokens never reach the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_backup_sends_only_new_chunks_and_the_old_generation_is_deleted() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 3);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    let first = back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.deleted_chunks, 0);

    // New chat activity: one new photo, and one media file deleted.
    let photo: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(phone.join("Media/new-photo.jpg"), &photo).unwrap();
    let removed = device_files::list(&phone)
        .unwrap()
        .into_iter()
        .find(|f| f.path.starts_with("Media/") && f.path != "Media/new-photo.jpg")
        .unwrap();
    std::fs::remove_file(phone.join(&removed.path)).unwrap();
    let second = back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(
        second.uploaded_chunks,
        chunk_ids_of(&key, &phone.join("Media/new-photo.jpg")).len(),
        "only the new photo's chunks travel"
    );
    assert_eq!(second.uploaded_plain_bytes, photo.len() as u64);
    assert!(second.deleted_chunks > 0, "the deleted file's chunks went");

    // The bucket holds exactly the current generation: its chunks, its
    // manifest and the commit record.
    let mut expected: Vec<String> = all_chunk_ids(&key, &phone)
        .into_iter()
        .map(|id| format!("accounts/alice/chunks/{id}"))
        .collect();
    expected.push("accounts/alice/generation".into());
    expected.push(format!(
        "accounts/alice/manifests/{:020}",
        second.generation
    ));
    expected.sort();
    assert_eq!(
        stack.list_bucket("accounts/alice/").await.unwrap(),
        expected
    );

    let restored = stack.dir().join("restored");
    let restored_report = restore(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert_eq!(restored_report.generation, 2);
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    // A device that started from generation 1 loses the race clearly, and
    // the committed generation is unchanged.
    let error = gateway
        .commit(first.generation, vec![0; 8], Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Conflict(_)), "{error:?}");
    assert_eq!(gateway.get_backup().await.unwrap().unwrap().generation, 2);
    // Disabling backups deletes everything of the account.
    assert!(gateway.delete_backup().await.unwrap() > 0);
    assert!(gateway.get_backup().await.unwrap().is_none());
    assert_eq!(
        stack.list_bucket("accounts/alice/").await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_malformed_uploads_get_clear_errors() {
    let stack = Stack::start().await.unwrap();
    let gateway = stack.client(ALICE);
    let id = "ab".repeat(32);
    // A chunk above the gateway's 2 MiB test limit is refused.
    let error = gateway
        .put_chunk(&id, vec![0u8; 3 << 20])
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::TooLarge(_)), "{error:?}");
    // Ids that could escape the account prefix.
    let error = gateway.put_chunk("../x", vec![0u8]).await.unwrap_err();
    assert!(matches!(error, GatewayError::Invalid(_)), "{error:?}");
    assert_eq!(
        stack.list_bucket("accounts/").await.unwrap(),
        Vec::<String>::new()
    );
    // A commit that references a chunk the gateway does not hold.
    let error = gateway
        .commit(0, vec![0; 8], vec![id.clone()])
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Conflict(_)), "{error:?}");
    assert!(gateway.get_backup().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_over_the_quota_is_refused_and_the_last_one_stays() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 5);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();
    // Grow the phone past the 2 MiB test quota.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(phone.join("Media/huge-video.mp4"), &big).unwrap();
    let error = back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("quota"), "{error}");
    let listing = gateway.get_backup().await.unwrap().unwrap();
    assert_eq!(listing.generation, 1, "nothing was committed");
    std::fs::remove_file(phone.join("Media/huge-video.mp4")).unwrap();
    let restored = stack.dir().join("restored");
    restore(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_or_gateway_down_is_unavailable_and_loses_nothing() {
    let mut stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 4);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let vault = stack.enable_key_backup(ALICE, &key).await;
    back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap();

    stack.kill("local-s3");
    let error = restore(&gateway, &vault, ALICE, &key, &stack.dir().join("r1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RestoreError::Gateway(e) if e.is_retryable()),
        "{error:?}"
    );
    let error = back_up(&gateway, &vault, ALICE, &key, &phone)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("retry later"), "{error}");

    stack.start_s3().await.unwrap();
    let restored = stack.dir().join("r2");
    restore(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    stack.kill("blob-gateway");
    let error = restore(&gateway, &vault, ALICE, &key, &stack.dir().join("r3"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RestoreError::Gateway(GatewayError::Unavailable(_))),
        "{error:?}"
    );
    stack.start_gateway().await.unwrap();
    let restored = stack.dir().join("r4");
    restore(&gateway, &vault, ALICE, &key, &restored)
        .await
        .unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_runs_both_flows_against_the_stack() {
    let stack = Stack::start().await.unwrap();
    let output = Command::new(bin("device-sim"))
        .args([
            "demo",
            "--profile",
            "small",
            "--seed",
            "9",
            "--insecure-fast-ksf",
        ])
        .envs(stack.sim_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("byte-for-byte equal"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "key erased after {} wrong guesses",
            e2e_tests::MAX_GUESSES
        )),
        "{stdout}"
    );
}
