//! The multipart operations the gateway's sweeper uses: ListMultipartUploads to find
//! uploads a crashed writer left, AbortMultipartUpload to end them.
//!
//! `fix_*` tests fail against plain `s3s_fs::FileSystem`: it does not implement
//! ListMultipartUploads (501 NotImplemented), answers an unknown upload id with 403
//! AccessDenied rather than 404 NoSuchUpload, and answers a part list naming a part
//! never uploaded with 500 InternalError after it has deleted the upload (checked by
//! hand by forwarding these operations to it).

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{BUCKET, Harness, MIB, random_bytes, start, status};

impl Harness {
    async fn create_upload(&self, key: &str) -> String {
        self.client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("create upload")
            .upload_id
            .expect("upload id")
    }

    async fn upload_part(&self, key: &str, id: &str, number: i32, data: &[u8]) -> CompletedPart {
        let out = self
            .client
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .expect("upload part");
        CompletedPart::builder()
            .part_number(number)
            .e_tag(out.e_tag.expect("part etag"))
            .build()
    }

    /// (key, upload id) of every upload in progress under `prefix`, in listing order.
    async fn uploads(&self, prefix: Option<&str>) -> Vec<(String, String)> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(BUCKET)
            .set_prefix(prefix.map(str::to_owned))
            .send()
            .await
            .expect("list uploads");
        assert_eq!(out.is_truncated(), Some(false));
        out.uploads()
            .iter()
            .map(|u| {
                assert!(u.initiated().is_some(), "an upload has its start time");
                (
                    u.key().expect("key").to_owned(),
                    u.upload_id().expect("id").to_owned(),
                )
            })
            .collect()
    }

    /// Files in the data directory's root that belong to upload `id`.
    fn upload_files(&self, id: &str) -> usize {
        std::fs::read_dir(self.data_dir())
            .expect("data dir")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .contains(id)
            })
            .count()
    }
}

#[tokio::test]
async fn fix_uploads_are_listed_and_aborted_for_good() {
    let h = start().await;
    let a = h.create_upload("acct/1/pack-a").await;
    h.upload_part("acct/1/pack-a", &a, 1, &random_bytes(1000, 1))
        .await;
    let b = h.create_upload("acct/1/pack-b").await;
    let c = h.create_upload("acct/2/pack-c").await;

    let all = h.uploads(None).await;
    assert_eq!(
        all,
        [
            ("acct/1/pack-a".to_owned(), a.clone()),
            ("acct/1/pack-b".to_owned(), b.clone()),
            ("acct/2/pack-c".to_owned(), c.clone()),
        ]
    );
    assert_eq!(h.uploads(Some("acct/1/")).await.len(), 2);
    assert!(h.uploads(Some("acct/3/")).await.is_empty());

    // One page at a time, as a sweeper pages through many.
    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    loop {
        let page = h
            .client
            .list_multipart_uploads()
            .bucket(BUCKET)
            .max_uploads(2)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .expect("page");
        seen.extend(
            page.uploads()
                .iter()
                .map(|u| u.upload_id().expect("id").to_owned()),
        );
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
    assert_eq!(seen, [a.clone(), b.clone(), c.clone()]);

    // Abort one: it leaves the listing and the disk.
    assert!(h.upload_files(&a) > 0);
    h.client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("acct/1/pack-a")
        .upload_id(&a)
        .send()
        .await
        .expect("abort");
    assert_eq!(h.upload_files(&a), 0, "files of an aborted upload remain");
    assert_eq!(
        h.uploads(Some("acct/1/")).await,
        [("acct/1/pack-b".to_owned(), b.clone())]
    );

    // A second sweeper that aborts it again, or a writer that still uses it, learns
    // that it is gone.
    let err = h
        .client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("acct/1/pack-a")
        .upload_id(&a)
        .send()
        .await
        .expect_err("already aborted");
    assert_eq!(status(&err), Some(404), "{err:?}");
    assert_eq!(err.code(), Some("NoSuchUpload"));
    let err = h
        .client
        .upload_part()
        .bucket(BUCKET)
        .key("acct/1/pack-a")
        .upload_id(&a)
        .part_number(2)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await
        .expect_err("part of an aborted upload");
    assert_eq!(err.code(), Some("NoSuchUpload"), "{err:?}");
    let err = h
        .client
        .list_parts()
        .bucket(BUCKET)
        .key("acct/1/pack-a")
        .upload_id(&a)
        .send()
        .await
        .expect_err("parts of an aborted upload");
    assert_eq!(err.code(), Some("NoSuchUpload"), "{err:?}");

    // Uploads of other writers are untouched, and a completed one leaves the listing.
    let part = h.upload_part("acct/1/pack-b", &b, 1, b"pack b").await;
    h.client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("acct/1/pack-b")
        .upload_id(&b)
        .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
        .send()
        .await
        .expect("complete");
    assert_eq!(h.get("acct/1/pack-b").await, b"pack b");
    assert_eq!(h.uploads(None).await, [("acct/2/pack-c".to_owned(), c)]);
    assert_eq!(h.upload_files(&b), 0, "files of a completed upload remain");
}

/// A CompleteMultipartUpload that names a part never uploaded is refused and leaves the
/// upload as it was, so the writer can upload the part and complete.
#[tokio::test]
async fn fix_a_bad_part_list_leaves_the_upload_intact() {
    let h = start().await;
    let key = "acct/1/pack";
    let id = h.create_upload(key).await;
    let first = random_bytes(5 * MIB, 1);
    let second = random_bytes(1000, 2);
    let part1 = h.upload_part(key, &id, 1, &first).await;
    let missing = CompletedPart::builder()
        .part_number(2)
        .e_tag("\"00000000000000000000000000000000\"")
        .build();

    let err = h
        .client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(part1.clone())
                .parts(missing)
                .build(),
        )
        .send()
        .await
        .expect_err("part 2 was never uploaded");
    assert_eq!(status(&err), Some(400), "{err:?}");
    assert_eq!(err.code(), Some("InvalidPart"));
    assert!(h.keys("acct/").await.is_empty(), "an object appeared");

    let part2 = h.upload_part(key, &id, 2, &second).await;
    h.client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(part1)
                .parts(part2)
                .build(),
        )
        .send()
        .await
        .expect("complete after the part is uploaded");
    let got = h.get(key).await;
    assert!(got == [first, second].concat(), "assembled object differs");
}
