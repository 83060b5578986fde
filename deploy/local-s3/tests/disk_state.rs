//! What `local-s3` leaves on disk, and what it answers when the disk is full.
//!
//! The `fix_*` tests fail against plain `s3s_fs::FileSystem`, checked by hand by
//! forwarding the operations to it (and skipping the sweep at start): after its deletes
//! all 40 sidecar files remained in the data directory, a restart left the 4 orphans
//! there, the PUT past the simulated capacity succeeded, and a PUT into a missing
//! bucket succeeded (creating the bucket's directory). (`s3s-fs` has no full-disk
//! answer: a real `ENOSPC` is a 500 `InternalError`, which `aws-sdk-s3` retries as a
//! server fault.)
//!
//! The full disk is simulated with the hidden `--test-capacity-bytes` (see
//! `local_s3::space`), so the test needs no mount privileges.

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use common::{BUCKET, files_under, random_bytes, start, start_in, start_with, status};
use local_s3::TestOptions;
use local_s3::space::{STORAGE_FULL_CODE, STORAGE_FULL_STATUS};

/// Files in the data directory's root (where `s3s-fs` keeps sidecars and temporary
/// files), not in a bucket.
fn root_files(data_dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .expect("data dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn fix_deletes_leave_no_files_behind() {
    let h = start().await;
    let keys: Vec<String> = (0..20)
        .map(|i| format!("acct/{}/pack-{i}", i % 3))
        .collect();
    for key in &keys {
        h.client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .content_type("application/octet-stream")
            .metadata("generation", "7")
            .body(ByteStream::from(key.as_bytes().to_vec()))
            .send()
            .await
            .expect("put");
    }
    // Two sidecars per object, in the format s3s-fs reads back.
    assert_eq!(root_files(h.data_dir()).len(), 2 * keys.len());
    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key(&keys[0])
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("generation"))
            .map(String::as_str),
        Some("7")
    );

    // Half one by one, half in one DeleteObjects.
    for key in &keys[..10] {
        h.client
            .delete_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("delete");
    }
    let ids: Vec<ObjectIdentifier> = keys[10..]
        .iter()
        .map(|k| ObjectIdentifier::builder().key(k).build().expect("id"))
        .collect();
    let out = h
        .client
        .delete_objects()
        .bucket(BUCKET)
        .delete(
            Delete::builder()
                .set_objects(Some(ids))
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete objects");
    assert_eq!(out.deleted().len(), 10);
    assert!(out.errors().is_empty(), "{:?}", out.errors());

    assert!(h.keys("").await.is_empty());
    assert_eq!(root_files(h.data_dir()), Vec::<String>::new());
    assert_eq!(files_under(h.data_dir()), Vec::<std::path::PathBuf>::new());
}

/// Sidecars of objects that an earlier server deleted (s3s-fs removed only the object's
/// file) are removed when the server starts again; live objects keep theirs.
#[tokio::test]
async fn fix_sidecars_left_by_earlier_deletes_are_swept_at_start() {
    let h = start().await;
    let live_tag = h.put("acct/1/live", b"live").await;
    h.put("acct/1/gone-a", b"a").await;
    h.put("acct/1/gone-b", b"b").await;
    let data_dir = h.data_dir().to_path_buf();
    assert_eq!(root_files(&data_dir).len(), 6);
    h.server.shutdown().await;
    // What s3s-fs's DeleteObject did: the object's file only.
    for key in ["acct/1/gone-a", "acct/1/gone-b"] {
        std::fs::remove_file(data_dir.join(BUCKET).join(key)).expect("remove object file");
    }

    let h = start_in(h.dir, &TestOptions::default()).await;
    assert_eq!(
        root_files(h.data_dir()).len(),
        2,
        "{:?}",
        root_files(h.data_dir())
    );
    assert_eq!(h.get("acct/1/live").await, b"live");
    assert_eq!(h.head_e_tag("acct/1/live").await, live_tag);
}

/// A PUT into a missing bucket does not create it; deleting a bucket takes its objects'
/// sidecars with it.
#[tokio::test]
async fn fix_buckets_are_not_created_by_puts_and_leave_nothing_when_deleted() {
    let h = start().await;
    let err = h
        .client
        .put_object()
        .bucket("no-such-bucket")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("no such bucket");
    assert_eq!(status(&err), Some(404), "{err:?}");
    assert_eq!(err.code(), Some("NoSuchBucket"));
    assert!(!h.data_dir().join("no-such-bucket").exists());

    h.client
        .create_bucket()
        .bucket("scratch")
        .send()
        .await
        .expect("create bucket");
    for key in ["a/1", "b/2"] {
        h.client
            .put_object()
            .bucket("scratch")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    h.put("kept", b"kept").await;
    assert_eq!(root_files(h.data_dir()).len(), 6);
    h.client
        .delete_bucket()
        .bucket("scratch")
        .send()
        .await
        .expect("delete bucket");
    assert_eq!(
        root_files(h.data_dir()).len(),
        2,
        "{:?}",
        root_files(h.data_dir())
    );
    assert_eq!(h.get("kept").await, b"kept");
}

/// A write refused for lack of space: 507 XMinioStorageFull.
async fn assert_full(h: &common::Harness, key: &str, data: &[u8]) {
    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .expect_err("the disk is full");
    assert_eq!(status(&err), Some(STORAGE_FULL_STATUS), "{err:?}");
    assert_eq!(err.code(), Some(STORAGE_FULL_CODE), "{err:?}");
}

#[tokio::test]
async fn fix_full_disk_is_507_and_keeps_what_was_stored() {
    const KIB: usize = 1024;
    let h = start_with(&TestOptions {
        test_capacity_bytes: Some(1024 * KIB as u64),
    })
    .await;
    let record = random_bytes(200 * KIB, 1);
    let record_tag = h.put("acct/1/commit", &record).await;
    let filler = random_bytes(600 * KIB, 2);
    h.put("acct/1/pack-1", &filler).await;

    // 800 KiB stored: a new 300 KiB pack does not fit, nor does a larger commit record.
    let pack = random_bytes(300 * KIB, 3);
    assert_full(&h, "acct/1/pack-2", &pack).await;
    assert_full(&h, "acct/1/commit", &random_bytes(400 * KIB, 4)).await;

    // What was stored is intact, and nothing half-written is left.
    assert!(h.get("acct/1/commit").await == record);
    assert_eq!(h.head_e_tag("acct/1/commit").await, record_tag);
    assert_eq!(h.keys("acct/").await, ["acct/1/commit", "acct/1/pack-1"]);
    assert!(
        root_files(h.data_dir())
            .iter()
            .all(|f| !f.starts_with(".tmp.")),
        "{:?}",
        root_files(h.data_dir())
    );

    // Freeing space lets writes succeed again.
    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("acct/1/pack-1")
        .send()
        .await
        .expect("delete");
    h.put("acct/1/pack-2", &pack).await;
    assert!(h.get("acct/1/pack-2").await == pack);
}
