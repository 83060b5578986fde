//! PUT and GET rates of one 64 MiB object through `aws-sdk-s3` on loopback, for changes to
//! the write or read path. Not part of the normal run (it measures, it does not check):
//!
//! ```text
//! cargo test --release -p local-s3 --test throughput -- --ignored --nocapture
//! ```

use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use local_s3::Config;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

const MIB: usize = 1024 * 1024;
const SIZE: usize = 64 * MIB;
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures throughput; run by hand in a release build"]
async fn put_and_get_64_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("s3"),
        access_key: "bench".to_owned(),
        secret_key: "bench-secret".to_owned(),
        bucket: "bench".to_owned(),
    };
    let server = local_s3::serve(&config).await.expect("server starts");
    let client = Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(server.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "bench",
                "bench-secret",
                None,
                None,
                "static",
            ))
            .force_path_style(true)
            .build(),
    );
    let mut data = vec![0u8; SIZE];
    StdRng::seed_from_u64(64).fill_bytes(&mut data);
    let data = bytes::Bytes::from(data);

    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for round in 0..ROUNDS {
        let key = format!("object-{round}");
        let start = Instant::now();
        client
            .put_object()
            .bucket("bench")
            .key(&key)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("put");
        puts.push(rate(start));

        let start = Instant::now();
        let got = client
            .get_object()
            .bucket("bench")
            .key(&key)
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes();
        gets.push(rate(start));
        assert_eq!(got.len(), SIZE);
    }
    println!("PUT MiB/s: {}", summary(&mut puts));
    println!("GET MiB/s: {}", summary(&mut gets));
    server.shutdown().await;
}

fn rate(start: Instant) -> f64 {
    (SIZE / MIB) as f64 / start.elapsed().as_secs_f64()
}

fn summary(rates: &mut [f64]) -> String {
    rates.sort_by(f64::total_cmp);
    let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    format!(
        "median {:.0} (all: {})",
        rates[rates.len() / 2],
        all.join(", ")
    )
}
