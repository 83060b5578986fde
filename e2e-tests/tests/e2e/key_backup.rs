//! Backups with the 64-digit key, and the gateway's guarantees.

use std::path::{Path, PathBuf};
use std::process::Command;

use backup_client::{
    BearerToken, GatewayClient, GatewayError, IntegrityFailure, RestoreError, RootKey, back_up,
    device_files, restore,
};
use device_sim::phone::{self, PhoneProfile};
use e2e_tests::{Stack, bin};

const ALICE: &str = "alice";

pub fn small_phone(dir: &Path, seed: u64) -> PathBuf {
    let root = dir.join(format!("phone-{seed}"));
    phone::create_phone(&root, seed, &PhoneProfile::small()).expect("create a phone");
    root
}

/// The stored blob that holds the device file `path` in the committed backup.
async fn stored_blob_of(stack: &Stack, account: &str, phone: &Path, path: &str) -> PathBuf {
    let files = device_files::list(phone).unwrap();
    let index = files
        .iter()
        .position(|f| f.path == path)
        .expect("file is on the phone");
    let backup = stack
        .client(account)
        .get_backup()
        .await
        .unwrap()
        .expect("a backup");
    stack
        .bucket_dir()
        .join(format!("accounts/{account}/backups/{}", backup.backup_id))
        .join(backup_client::file_blob_name(index))
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

    let report = back_up(&gateway, ALICE, &key, &phone).await.unwrap();
    assert_eq!(report.files, device_files::list(&phone).unwrap().len());

    // The user types the 64 digits on a new phone.
    let typed = RootKey::parse(&key.to_display_digits()).unwrap();
    let restored = stack.dir().join("restored");
    restore(&gateway, ALICE, &typed, &restored).await.unwrap();
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
    let blob = stored_blob_of(&stack, ALICE, &phone, phone::DB_FILE).await;
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();
    let target = stack.dir().join("restored-after-tampering");
    let error = restore(&gateway, ALICE, &typed, &target).await.unwrap_err();
    match &error {
        RestoreError::Integrity { path, reason } => {
            assert_eq!(path, phone::DB_FILE);
            assert!(matches!(reason, IntegrityFailure::Open(_)), "{reason:?}");
        }
        other => panic!("expected an integrity error, got {other:?}"),
    }
    assert!(error.to_string().contains(phone::DB_FILE));
    assert!(!target.exists(), "a failed restore leaves nothing behind");

    // A wrong key cannot open the backup at all.
    let error = restore(
        &gateway,
        ALICE,
        &RootKey::generate(),
        &stack.dir().join("x"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, RestoreError::WrongKeyOrForeignBackup),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_accounts_token_cannot_list_read_or_delete_the_backup() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 2);
    let alice = stack.client(ALICE);
    let key = RootKey::generate();
    let report = back_up(&alice, ALICE, &key, &phone).await.unwrap();
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

    let bob = stack.client("bob");
    // List: Bob sees no backup at all.
    assert!(bob.get_backup().await.unwrap().is_none());
    // Read: Alice's backup id means nothing under Bob's account.
    let read = bob.download_blob(&report.backup_id, "manifest").await;
    assert!(
        matches!(read, Err(GatewayError::NotFound(_))),
        "{:?}",
        read.err()
    );
    // Commit Alice's backup as his own: he has nothing staged under that id.
    let commit = bob.commit_backup(&report.backup_id, None).await;
    assert!(
        matches!(commit, Err(GatewayError::Conflict(_))),
        "{commit:?}"
    );
    // Delete: removes only Bob's (empty) data.
    assert_eq!(bob.delete_backup().await.unwrap(), 0);
    // Bob even staging under Alice's backup id lands in his own prefix.
    bob.upload_blob(
        &report.backup_id,
        "f000000",
        3,
        futures::stream::iter([vec![1, 2, 3]]),
    )
    .await
    .unwrap();

    assert_eq!(
        alice_files(&stack),
        before,
        "Alice's stored objects are untouched"
    );
    let restored = stack.dir().join("restored");
    restore(&alice, ALICE, &key, &restored).await.unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    // Bob restoring with Alice's key still gets nothing of hers.
    let bobs = restore(&bob, "bob", &key, &stack.dir().join("bob")).await;
    assert!(matches!(bobs, Err(RestoreError::NoBackup)), "{bobs:?}");

    // Tokens that are forged, from another key, or expired are refused.
    let forged = GatewayClient::connect(
        &stack.gateway_endpoint(),
        BearerToken::new("e2eb1.alice.9999999999.AAAA"),
    )
    .unwrap();
    assert!(matches!(
        forged.get_backup().await,
        Err(GatewayError::Unauthenticated(_))
    ));
    let other_key = account_token::SigningKey::generate().mint(
        &account_token::AccountId::new(ALICE).unwrap(),
        std::time::Duration::from_secs(60),
    );
    let other =
        GatewayClient::connect(&stack.gateway_endpoint(), BearerToken::new(other_key)).unwrap();
    assert!(matches!(
        other.get_backup().await,
        Err(GatewayError::Unauthenticated(_))
    ));
    let expired = stack
        .token_key
        .mint_at(&account_token::AccountId::new(ALICE).unwrap(), 1);
    let expired =
        GatewayClient::connect(&stack.gateway_endpoint(), BearerToken::new(expired)).unwrap();
    let error = expired.get_backup().await.unwrap_err();
    assert!(
        matches!(error, GatewayError::Unauthenticated(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("expired"), "{error}");
    let log = std::fs::read_to_string(stack.log_path("blob-gateway")).unwrap();
    assert!(
        !log.contains(
            &stack
                .token_key
                .mint_at(&account_token::AccountId::new(ALICE).unwrap(), 1)
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_backup_replaces_the_old_one_and_its_blobs_are_deleted() {
    let stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 3);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    let first = back_up(&gateway, ALICE, &key, &phone).await.unwrap();
    assert_eq!(first.deleted_blobs, 0);

    // New chat activity, then the daily backup.
    std::fs::write(phone.join("Media/new-photo.jpg"), vec![7u8; 100_000]).unwrap();
    let second = back_up(&gateway, ALICE, &key, &phone).await.unwrap();
    assert_ne!(first.backup_id, second.backup_id);
    assert_eq!(
        second.deleted_blobs as usize,
        first.files + 1,
        "old files and manifest went"
    );

    // The bucket holds the commit record and the new backup's blobs, nothing more.
    let held = stack.list_bucket("accounts/alice/").await.unwrap();
    let new_prefix = format!("accounts/alice/backups/{}/", second.backup_id);
    assert_eq!(held.len(), second.files + 2, "{held:?}");
    assert!(held.contains(&"accounts/alice/current".to_string()));
    assert!(
        held.iter()
            .all(|k| k == "accounts/alice/current" || k.starts_with(&new_prefix)),
        "only the committed backup is kept: {held:?}"
    );
    let listing = gateway.get_backup().await.unwrap().unwrap();
    assert_eq!(listing.backup_id, second.backup_id);
    assert_eq!(listing.blobs.len(), second.files + 1);

    let restored = stack.dir().join("restored");
    restore(&gateway, ALICE, &key, &restored).await.unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    // A device that started from the first backup loses the race clearly,
    // and the committed backup is unchanged.
    let stale = "0".repeat(32);
    gateway
        .upload_blob(&stale, "manifest", 1, futures::stream::iter([vec![0]]))
        .await
        .unwrap();
    let error = gateway
        .commit_backup(&stale, Some(&first.backup_id))
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Conflict(_)), "{error:?}");
    assert_eq!(
        gateway.get_backup().await.unwrap().unwrap().backup_id,
        second.backup_id
    );
    // The committed backup cannot be written to.
    let error = gateway
        .upload_blob(
            &second.backup_id,
            "manifest",
            1,
            futures::stream::iter([vec![0]]),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Conflict(_)), "{error:?}");

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
    let backup_id = "ab".repeat(16);
    // One message above the gateway's 2 MiB message limit.
    let error = gateway
        .upload_blob(
            &backup_id,
            "big",
            3 << 20,
            futures::stream::iter([vec![0u8; 3 << 20]]),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::TooLarge(_)), "{error:?}");
    // A blob above the 64 MiB object limit is refused from its header.
    let error = gateway
        .upload_blob(
            &backup_id,
            "huge",
            65 << 20,
            futures::stream::iter(Vec::<Vec<u8>>::new()),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::TooLarge(_)), "{error:?}");
    assert!(error.to_string().contains("limit"), "{error}");
    // Fewer bytes than declared: refused, nothing stored.
    let error = gateway
        .upload_blob(
            &backup_id,
            "short",
            10,
            futures::stream::iter([vec![0u8; 5]]),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Invalid(_)), "{error:?}");
    // Names that could escape the account prefix.
    let error = gateway
        .upload_blob(&backup_id, "../x", 1, futures::stream::iter([vec![0u8]]))
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Invalid(_)), "{error:?}");
    assert_eq!(
        stack.list_bucket("accounts/").await.unwrap(),
        Vec::<String>::new()
    );

    // A multipart-sized blob (3 parts of 5 MiB) round-trips.
    let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
    let pieces: Vec<Vec<u8>> = data.chunks(1 << 20).map(<[u8]>::to_vec).collect();
    gateway
        .upload_blob(
            &backup_id,
            "large",
            data.len() as u64,
            futures::stream::iter(pieces),
        )
        .await
        .unwrap();
    gateway.commit_backup(&backup_id, None).await.unwrap();
    use futures::StreamExt;
    let mut stream = gateway.download_blob(&backup_id, "large").await.unwrap();
    let mut got = Vec::new();
    while let Some(piece) = stream.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert!(got == data, "multipart blob round-trips");
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_or_gateway_down_is_unavailable_and_loses_nothing() {
    let mut stack = Stack::start().await.unwrap();
    let phone = small_phone(stack.dir(), 4);
    let gateway = stack.client(ALICE);
    let key = RootKey::generate();
    back_up(&gateway, ALICE, &key, &phone).await.unwrap();

    stack.kill("local-s3");
    let error = restore(&gateway, ALICE, &key, &stack.dir().join("r1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RestoreError::Gateway(e) if e.is_retryable()),
        "{error:?}"
    );
    let error = back_up(&gateway, ALICE, &key, &phone).await.unwrap_err();
    assert!(error.to_string().contains("retry later"), "{error}");

    stack.start_s3().await.unwrap();
    let restored = stack.dir().join("r2");
    restore(&gateway, ALICE, &key, &restored).await.unwrap();
    assert!(phone::diff_trees(&phone, &restored).unwrap().is_empty());

    stack.kill("blob-gateway");
    let error = restore(&gateway, ALICE, &key, &stack.dir().join("r3"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RestoreError::Gateway(GatewayError::Unavailable(_))),
        "{error:?}"
    );
    stack.start_gateway().await.unwrap();
    let restored = stack.dir().join("r4");
    restore(&gateway, ALICE, &key, &restored).await.unwrap();
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
        .env("KEY_VAULT_ENDPOINT", stack.vault_endpoint())
        .env("KEY_VAULT_FINGERPRINT", stack.vault_fingerprint())
        .env("BLOB_GATEWAY_ENDPOINT", stack.gateway_endpoint())
        .env("E2EB_TOKEN_KEY_FILE", stack.dir().join("token-signing.key"))
        .env("DEVICE_SIM_WORK_DIR", stack.dir().join("sim"))
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
