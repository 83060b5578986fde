//! The S3 API of `local-s3` as the gateway sees it: a real `aws-sdk-s3` client against
//! the server started in-process on an ephemeral port over a temporary directory.
//!
//! The tests named `fix_*` each fail against plain `s3s_fs::FileSystem`.

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use common::{ACCESS_KEY, BUCKET, MIB, SECRET_KEY, client, random_bytes, start, status};

/// Defect (a): `delimiter=` (empty) was used as a delimiter, turning the first character
/// of every key into a common prefix and listing no keys.
#[tokio::test]
async fn fix_empty_delimiter_lists_real_keys() {
    let h = start().await;
    for key in ["a/b/c", "a/d", "x"] {
        h.put(key, key.as_bytes()).await;
    }

    let v2 = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .delimiter("")
        .send()
        .await
        .expect("list v2");
    let keys: Vec<_> = v2.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b/c", "a/d", "x"]);
    assert!(
        v2.common_prefixes().is_empty(),
        "{:?}",
        v2.common_prefixes()
    );

    let v1 = h
        .client
        .list_objects()
        .bucket(BUCKET)
        .delimiter("")
        .send()
        .await
        .expect("list v1");
    let keys: Vec<_> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b/c", "a/d", "x"]);
    assert!(
        v1.common_prefixes().is_empty(),
        "{:?}",
        v1.common_prefixes()
    );

    // A real delimiter still groups.
    let grouped = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .delimiter("/")
        .send()
        .await
        .expect("list with /");
    let keys: Vec<_> = grouped.contents().iter().filter_map(|o| o.key()).collect();
    let prefixes: Vec<_> = grouped
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(keys, ["x"]);
    assert_eq!(prefixes, ["a/"]);
}

/// Defect (b): a key that is a directory on disk answered 500 instead of 404 NoSuchKey.
#[tokio::test]
async fn fix_directory_key_is_no_such_key() {
    let h = start().await;
    h.put("a/b/c", b"leaf").await;

    for key in ["a/b", "a"] {
        let err = h
            .client
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect_err("HEAD of a directory key must fail");
        assert_eq!(status(&err), Some(404), "HEAD {key}: {err:?}");
        assert!(err.into_service_error().is_not_found(), "HEAD {key}");

        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect_err("GET of a directory key must fail");
        assert_eq!(status(&err), Some(404), "GET {key}: {err:?}");
        assert!(err.into_service_error().is_no_such_key(), "GET {key}");
    }

    // The file below the directory is unaffected.
    assert_eq!(h.get("a/b/c").await, b"leaf");
}

/// Defect (c), the replaced GET body: large objects and ranges come back byte-exact,
/// with the metadata s3s-fs computes. (That the body is read in large chunks is shown by
/// the unit tests in `src/body.rs`.) The suffix range longer than the object failed with
/// 500 in s3s-fs.
#[tokio::test]
async fn fix_large_get_and_ranges_are_exact() {
    let h = start().await;
    let data = random_bytes(8 * MIB, 8);
    let put_etag = h.put("big", &data).await;

    let resp = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("big")
        .send()
        .await
        .expect("get big");
    assert_eq!(resp.content_length(), Some(data.len() as i64));
    assert_eq!(resp.e_tag(), Some(put_etag.as_str()));
    let got = resp.body.collect().await.expect("body").into_bytes();
    assert!(got == data, "full GET differs");

    let resp = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("big")
        .range("bytes=1000-5000999")
        .send()
        .await
        .expect("range get");
    assert_eq!(
        resp.content_range(),
        Some(format!("bytes 1000-5000999/{}", data.len()).as_str())
    );
    let got = resp.body.collect().await.expect("body").into_bytes();
    assert!(got == data[1000..5_001_000], "range GET differs");

    let got = h.get_range("big", Some("bytes=-4096")).await;
    assert!(got == data[data.len() - 4096..], "suffix GET differs");

    let got = h.get_range("big", Some("bytes=7340032-")).await;
    assert!(got == data[7 * MIB..], "open-ended GET differs");

    let longer = format!("bytes=-{}", data.len() + 1000);
    let got = h.get_range("big", Some(&longer)).await;
    assert!(
        got == data,
        "suffix longer than the object must return all of it"
    );

    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("big")
        .range(format!("bytes={}-", data.len()))
        .send()
        .await
        .expect_err("range past the end");
    assert_eq!(status(&err), Some(416), "{err:?}");
}

#[tokio::test]
async fn round_trip_put_get_head_list_delete() {
    let h = start().await;
    assert_ne!(h.server.local_addr().port(), 0);

    let etag = h.put("acct/1/chunk-a", b"ciphertext a").await;
    h.put("acct/1/chunk-b", b"ciphertext b").await;
    h.put("acct/2/chunk-a", b"other account").await;

    assert_eq!(h.get("acct/1/chunk-a").await, b"ciphertext a");
    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("acct/1/chunk-a")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(12));
    assert_eq!(head.e_tag(), Some(etag.as_str()));

    assert_eq!(
        h.keys("acct/1/").await,
        ["acct/1/chunk-a", "acct/1/chunk-b"]
    );

    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("acct/1/chunk-a")
        .send()
        .await
        .expect("delete");
    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("acct/1/chunk-a")
        .send()
        .await
        .expect_err("deleted");
    assert!(err.into_service_error().is_no_such_key());
    assert_eq!(h.keys("acct/").await, ["acct/1/chunk-b", "acct/2/chunk-a"]);

    // Deleting a key that does not exist succeeds, as in S3.
    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("acct/1/never")
        .send()
        .await
        .expect("delete of a missing key");
}

#[tokio::test]
async fn multipart_upload_of_three_parts_reads_back_exact() {
    let h = start().await;
    let sizes = [5 * MIB, 5 * MIB, MIB + 3];
    let data = random_bytes(sizes.iter().sum(), 3);

    let upload_id = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("multi")
        .send()
        .await
        .expect("create upload")
        .upload_id
        .expect("upload id");

    let mut parts = Vec::new();
    let mut offset = 0;
    for (i, size) in sizes.into_iter().enumerate() {
        let number = i as i32 + 1;
        let part = h
            .client
            .upload_part()
            .bucket(BUCKET)
            .key("multi")
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(data[offset..offset + size].to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {number}: {e:?}"));
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag.expect("part ETag"))
                .build(),
        );
        offset += size;
    }

    let listed = h
        .client
        .list_parts()
        .bucket(BUCKET)
        .key("multi")
        .upload_id(&upload_id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(listed.parts().len(), 3);

    let done = h
        .client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("multi")
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete upload");
    assert!(
        done.e_tag()
            .is_some_and(|e| e.trim_matches('"').ends_with("-3")),
        "multipart ETag: {:?}",
        done.e_tag()
    );

    let got = h.get("multi").await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "multipart object differs");
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let h = start().await;
    h.put("secret-chunk", b"ciphertext").await;

    let endpoint = h.server.endpoint();
    // s3s answers an unknown access key with `NotSignedUp` (AWS says InvalidAccessKeyId).
    let cases = [
        (ACCESS_KEY, "wrong-secret", "SignatureDoesNotMatch"),
        ("someone-else", SECRET_KEY, "NotSignedUp"),
    ];
    for (ak, sk, code) in cases {
        let intruder = client(&endpoint, ak, sk);
        let err = intruder
            .get_object()
            .bucket(BUCKET)
            .key("secret-chunk")
            .send()
            .await
            .expect_err("GET with wrong credentials");
        assert_eq!(status(&err), Some(403), "{ak}: {err:?}");

        let err = intruder
            .put_object()
            .bucket(BUCKET)
            .key("planted")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect_err("PUT with wrong credentials");
        assert_eq!(status(&err), Some(403), "{ak}: {err:?}");
        assert_eq!(err.code(), Some(code), "{ak}");
    }
    assert_eq!(h.keys("").await, ["secret-chunk"]);
}

/// Every operation s3s-fs implements and the wrapper forwards still answers (the
/// `S3` trait's default for an unforwarded operation is NotImplemented).
#[tokio::test]
async fn every_forwarded_operation_answers() {
    let h = start().await;
    let c = &h.client;

    let buckets = c.list_buckets().send().await.expect("list buckets");
    assert!(buckets.buckets().iter().any(|b| b.name() == Some(BUCKET)));
    c.head_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("head bucket");
    c.get_bucket_location()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket location");

    c.create_bucket()
        .bucket("scratch")
        .send()
        .await
        .expect("create bucket");
    c.head_bucket()
        .bucket("scratch")
        .send()
        .await
        .expect("head new bucket");
    c.delete_bucket()
        .bucket("scratch")
        .send()
        .await
        .expect("delete bucket");
    let err = c
        .head_bucket()
        .bucket("scratch")
        .send()
        .await
        .expect_err("deleted bucket");
    assert_eq!(status(&err), Some(404));

    let data = random_bytes(6 * MIB, 6);
    h.put("src", &data).await;
    c.copy_object()
        .bucket(BUCKET)
        .key("dst")
        .copy_source(format!("{BUCKET}/src"))
        .send()
        .await
        .expect("copy object");
    assert!(h.get("dst").await == data, "copy differs");

    // Multipart: a part copied from an object, listed, then the upload aborted.
    let upload_id = c
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("abandoned")
        .send()
        .await
        .expect("create upload")
        .upload_id
        .expect("upload id");
    c.upload_part_copy()
        .bucket(BUCKET)
        .key("abandoned")
        .upload_id(&upload_id)
        .part_number(1)
        .copy_source(format!("{BUCKET}/src"))
        .copy_source_range("bytes=0-5242879")
        .send()
        .await
        .expect("upload part copy");
    let listed = c
        .list_parts()
        .bucket(BUCKET)
        .key("abandoned")
        .upload_id(&upload_id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(listed.parts().len(), 1);
    assert_eq!(listed.parts()[0].size(), Some(5 * MIB as i64));
    c.abort_multipart_upload()
        .bucket(BUCKET)
        .key("abandoned")
        .upload_id(&upload_id)
        .send()
        .await
        .expect("abort upload");

    let ids = ["src", "dst"].map(|k| ObjectIdentifier::builder().key(k).build().expect("id"));
    c.delete_objects()
        .bucket(BUCKET)
        .delete(
            Delete::builder()
                .set_objects(Some(ids.to_vec()))
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete objects");
    assert!(h.keys("").await.is_empty());
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let h = start().await;
    let addr = h.server.local_addr();
    h.put("k", b"v").await;

    h.server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
