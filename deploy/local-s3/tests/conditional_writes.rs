//! Conditional writes through `aws-sdk-s3`: what the gateway's commit record relies on so
//! that two gateway replicas can never both commit.
//!
//! The tests named `fix_*` fail against plain `s3s_fs::FileSystem`. Checked by hand by
//! making `PatchedFs::put_object` and `complete_multipart_upload` forward to `s3s-fs`
//! (`return self.inner.put_object(req).await`) and running this file three times: in
//! every run each race had several winners (s3s-fs checks the condition, then streams
//! the body, then renames), the PUT with a wrong `Content-MD5` replaced the object while
//! answering `BadDigest`, and a GET returned a new body with the previous ETag. (The
//! races needed one task per request and unsigned payloads to fail there: from a single
//! task the SDK hashes and sends one request after another, and the requests hardly
//! overlapped.)

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{BUCKET, Harness, MIB, random_bytes, start, status};
use futures::future::join_all;

/// A PUT's ETag, or its HTTP status and S3 error code.
type Outcome = Result<String, (Option<u16>, Option<String>)>;

/// Writers racing for one key. Bodies are large enough that each upload takes several
/// reads, as a real commit record written next to other traffic would.
const WRITERS: usize = 16;
const BODY: usize = MIB;

fn bodies(seed: u64) -> Vec<Vec<u8>> {
    (0..WRITERS)
        .map(|i| random_bytes(BODY, seed + i as u64))
        .collect()
}

impl Harness {
    /// Sends every body at once as a conditional PUT of `key`; returns, per body, the
    /// ETag or the HTTP status and S3 error code.
    async fn race(
        &self,
        key: &str,
        bodies: &[Vec<u8>],
        if_match: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Vec<Outcome> {
        // One task per PUT, so that the requests leave together rather than one after
        // another from a single task; unsigned payloads, so that no PUT waits for its
        // body to be hashed before it is sent.
        let puts = bodies.iter().map(|body| {
            let put = self
                .client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .set_if_match(if_match.map(str::to_owned))
                .set_if_none_match(if_none_match.map(str::to_owned))
                .body(ByteStream::from(body.clone()))
                .customize()
                .disable_payload_signing()
                .send();
            tokio::spawn(put)
        });
        join_all(puts)
            .await
            .into_iter()
            .map(|r| match r.expect("PUT task") {
                Ok(out) => Ok(out.e_tag.expect("a successful PUT returns an ETag")),
                Err(e) => Err((status(&e), e.code().map(str::to_owned))),
            })
            .collect()
    }
}

/// Exactly one result is a success; every other is 412 PreconditionFailed. Returns the
/// winner's index and ETag.
fn one_winner(results: &[Outcome]) -> (usize, String) {
    let winners: Vec<(usize, &String)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|e| (i, e)))
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}; all: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            r,
            &(Some(412), Some("PreconditionFailed".to_owned())),
            "a loser must get 412 PreconditionFailed"
        );
    }
    (winners[0].0, winners[0].1.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fix_concurrent_if_none_match_creates_exactly_once() {
    let h = start().await;
    let bodies = bodies(100);

    let results = h.race("acct/1/commit", &bodies, None, Some("*")).await;
    let (winner, e_tag) = one_winner(&results);

    assert!(
        h.get("acct/1/commit").await == bodies[winner],
        "stored body is not the winner's"
    );
    assert_eq!(h.head_e_tag("acct/1/commit").await, e_tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fix_concurrent_if_match_replaces_exactly_once() {
    let h = start().await;
    let first = random_bytes(BODY, 1);
    let first_tag = h.put("acct/2/commit", &first).await;
    let bodies = bodies(200);

    let results = h
        .race("acct/2/commit", &bodies, Some(&first_tag), None)
        .await;
    let (winner, e_tag) = one_winner(&results);
    assert_ne!(e_tag, first_tag);
    assert!(
        h.get("acct/2/commit").await == bodies[winner],
        "stored body is not the winner's"
    );
    assert_eq!(h.head_e_tag("acct/2/commit").await, e_tag);

    // The stale ETag and a made-up one both fail and change nothing.
    let wrong = "\"00000000000000000000000000000000\"".to_owned();
    for stale in [first_tag, wrong] {
        let results = h
            .race("acct/2/commit", &bodies[..1], Some(&stale), None)
            .await;
        assert_eq!(
            results[0],
            Err((Some(412), Some("PreconditionFailed".to_owned()))),
            "If-Match {stale}"
        );
        assert!(
            h.get("acct/2/commit").await == bodies[winner],
            "changed by If-Match {stale}"
        );
        assert_eq!(h.head_e_tag("acct/2/commit").await, e_tag);
    }

    // The honest next commit, on the current ETag, succeeds.
    let next = random_bytes(BODY, 3);
    let results = h
        .race(
            "acct/2/commit",
            std::slice::from_ref(&next),
            Some(&e_tag),
            None,
        )
        .await;
    let (_, next_tag) = one_winner(&results);
    assert!(h.get("acct/2/commit").await == next);
    assert_eq!(h.head_e_tag("acct/2/commit").await, next_tag);
}

/// S3 answers `If-Match` on a missing key with 404 NoSuchKey, and `If-None-Match: *` on
/// an existing key with 412; neither writes.
#[tokio::test]
async fn conditions_on_missing_and_existing_keys() {
    let h = start().await;
    let body = random_bytes(1000, 4);

    let results = h
        .race(
            "acct/3/commit",
            std::slice::from_ref(&body),
            Some("\"0123456789abcdef0123456789abcdef\""),
            None,
        )
        .await;
    assert_eq!(results[0], Err((Some(404), Some("NoSuchKey".to_owned()))));
    assert!(
        h.keys("acct/3/").await.is_empty(),
        "If-Match on a missing key wrote"
    );

    let e_tag = h.put("acct/3/commit", b"first").await;
    let results = h.race("acct/3/commit", &[body], None, Some("*")).await;
    assert_eq!(
        results[0],
        Err((Some(412), Some("PreconditionFailed".to_owned())))
    );
    assert_eq!(h.get("acct/3/commit").await, b"first");
    assert_eq!(h.head_e_tag("acct/3/commit").await, e_tag);
}

/// A PUT whose Content-MD5 does not match its body is refused and leaves the stored
/// version, body and ETag, as it was.
#[tokio::test]
async fn fix_bad_digest_leaves_the_object_unchanged() {
    let h = start().await;
    let e_tag = h.put("acct/4/commit", b"committed record").await;

    // base64 of MD5("something else"), sent with another body.
    let wrong_md5 = "nM9dWfRh4jfMx2umpfhTeA==";
    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("acct/4/commit")
        .content_md5(wrong_md5)
        .body(ByteStream::from_static(b"tampered record"))
        .send()
        .await
        .expect_err("a wrong Content-MD5 must be refused");
    assert_eq!(status(&err), Some(400), "{err:?}");
    assert_eq!(err.code(), Some("BadDigest"));

    assert_eq!(h.get("acct/4/commit").await, b"committed record");
    assert_eq!(h.head_e_tag("acct/4/commit").await, e_tag);
}

/// While one key is overwritten again and again, every GET returns a body whose MD5 is
/// the ETag it came with (the SDK also checks the CRC32 it came with).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fix_reads_see_one_version_at_a_time() {
    let h = start().await;
    let versions: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(512 * 1024, 300 + i)).collect();
    let mut tags = Vec::new();
    for v in &versions {
        tags.push(h.put("acct/5/commit", v).await);
    }

    let writer = async {
        for round in 0..24 {
            h.put("acct/5/commit", &versions[round % versions.len()])
                .await;
        }
    };
    let reader = async {
        for _ in 0..48 {
            let resp = h
                .client
                .get_object()
                .bucket(BUCKET)
                .key("acct/5/commit")
                .send()
                .await
                .expect("get during overwrites");
            let e_tag = resp.e_tag.clone().expect("etag");
            let body = resp.body.collect().await.expect("body").into_bytes();
            let index = tags.iter().position(|t| *t == e_tag).expect("a known ETag");
            assert!(
                body == versions[index],
                "body of another version than its ETag"
            );
        }
    };
    tokio::join!(writer, reader, async {
        // A second reader through HEAD: the size always belongs to the ETag.
        for _ in 0..48 {
            let head = h
                .client
                .head_object()
                .bucket(BUCKET)
                .key("acct/5/commit")
                .send()
                .await
                .expect("head");
            let index = tags
                .iter()
                .position(|t| Some(t.as_str()) == head.e_tag())
                .expect("a known ETag");
            assert_eq!(head.content_length(), Some(versions[index].len() as i64));
        }
    });
}

/// Starts an upload of `key` with one part of `data`; returns its id and part list.
async fn one_part_upload(
    h: &Harness,
    key: &str,
    data: &[u8],
) -> (String, CompletedMultipartUpload) {
    let id = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("create upload")
        .upload_id
        .expect("upload id");
    let part = h
        .client
        .upload_part()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .expect("upload part");
    let parts = CompletedMultipartUpload::builder()
        .parts(
            CompletedPart::builder()
                .part_number(1)
                .e_tag(part.e_tag.expect("part etag"))
                .build(),
        )
        .build();
    (id, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fix_concurrent_if_none_match_completes_exactly_once() {
    let h = start().await;
    let key = "acct/6/pack";
    let mut uploads = Vec::new();
    let datas: Vec<Vec<u8>> = (0..6).map(|i| random_bytes(MIB, 600 + i)).collect();
    for data in &datas {
        uploads.push(one_part_upload(&h, key, data).await);
    }

    let completes = uploads.iter().map(|(id, parts)| {
        h.client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(id)
            .if_none_match("*")
            .multipart_upload(parts.clone())
            .send()
    });
    let results = join_all(completes).await;
    let winners: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status(err), Some(412), "{err:?}");
    }
    let winner = winners[0];
    let e_tag = results[winner]
        .as_ref()
        .expect("winner")
        .e_tag()
        .expect("etag")
        .to_owned();
    assert!(
        h.get(key).await == datas[winner],
        "stored body is not the winner's"
    );
    assert_eq!(h.head_e_tag(key).await, e_tag);

    // A loser's upload is still there, to be aborted (S3 keeps it too).
    let (loser_id, _) = &uploads[(winner + 1) % uploads.len()];
    h.client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(loser_id)
        .send()
        .await
        .expect("abort a loser's upload");

    // If-Match with the winner's ETag completes the next version.
    let next = random_bytes(MIB, 699);
    let (id, parts) = one_part_upload(&h, key, &next).await;
    h.client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .if_match(&e_tag)
        .multipart_upload(parts)
        .send()
        .await
        .expect("If-Match on the current ETag");
    assert!(h.get(key).await == next);
}
