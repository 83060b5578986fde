//! The yardstick for the report: raw `aws-sdk-s3` PUT and GET of the same
//! number of bytes to the same S3 server, with no gateway and no crypto.

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use blob_gateway::config::S3Args;
use rand::RngCore;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct S3Baseline {
    pub bytes: u64,
    pub objects: usize,
    pub put_secs: f64,
    pub get_secs: f64,
}

/// PUTs then GETs `sizes` objects of random bytes under `baseline/`, one
/// after another like the backup does, then deletes them.
pub async fn measure(args: &S3Args, sizes: &[u64]) -> anyhow::Result<S3Baseline> {
    let client = blob_gateway::store::client(args);
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&size| {
            let mut body = vec![0u8; size as usize];
            rand::thread_rng().fill_bytes(&mut body);
            body
        })
        .collect();
    let key = |i: usize| format!("baseline/object-{i:06}");

    let started = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        client
            .put_object()
            .bucket(&args.bucket)
            .key(key(i))
            .body(ByteStream::from(body.clone()))
            .send()
            .await?;
    }
    let put_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let got = client
            .get_object()
            .bucket(&args.bucket)
            .key(key(i))
            .send()
            .await?
            .body
            .collect()
            .await?;
        anyhow::ensure!(
            got.into_bytes().len() == body.len(),
            "baseline GET returned a short body"
        );
    }
    let get_secs = started.elapsed().as_secs_f64();

    for i in 0..bodies.len() {
        client
            .delete_object()
            .bucket(&args.bucket)
            .key(key(i))
            .send()
            .await?;
    }
    Ok(S3Baseline {
        bytes: sizes.iter().sum(),
        objects: sizes.len(),
        put_secs,
        get_secs,
    })
}
