//! Crash tests with the real gateway binary: a gateway process armed with a
//! failpoint aborts (as abrupt as `kill -9`) at that step of a v3 upload or
//! commit; a fresh gateway then serves the old or the new generation whole,
//! and the next commit plus the sweep leave nothing behind.

mod harness;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use account_token::BearerToken;
use e2eb_proto::storage::v3::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v3::{
    CommitRequest, GetBackupRequest, GetManifestRequest, GetPackRequest, PackInfo, PutPackRequest,
    put_pack_request,
};
use futures::StreamExt;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use harness::Harness;

type V3 = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

fn client(harness: &Harness, endpoint: &str) -> V3 {
    BlobGatewayClient::with_interceptor(
        harness.channel(endpoint),
        BearerToken::new(harness.token("alice")),
    )
}

fn name(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn pack(n: u8) -> Vec<u8> {
    vec![n; 8192]
}

fn manifest(generation: u64) -> Vec<u8> {
    vec![generation as u8; 4096]
}

async fn put(client: &V3, n: u8) -> Result<(), Status> {
    let bytes = pack(n);
    let messages = vec![
        PutPackRequest {
            part: Some(put_pack_request::Part::Header(PackInfo {
                name: name(n),
                size: bytes.len() as u64,
            })),
        },
        PutPackRequest {
            part: Some(put_pack_request::Part::Data(bytes)),
        },
    ];
    client
        .clone()
        .put_pack(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

async fn commit(client: &V3, expected: u64, packs: &[u8], abandoned: &[u8]) -> Result<u64, Status> {
    let request = CommitRequest {
        expected_generation: expected,
        manifest: manifest(expected + 1),
        packs: packs.iter().map(|n| name(*n)).collect(),
        abandoned: abandoned.iter().map(|n| name(*n)).collect(),
    };
    Ok(client
        .clone()
        .commit(request)
        .await?
        .into_inner()
        .generation)
}

/// The committed generation, read and checked whole: its manifest and
/// every pack byte for byte.
async fn restorable(client: &V3) -> (u64, Vec<String>) {
    let backup = client
        .clone()
        .get_backup(GetBackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .clone()
        .get_manifest(GetManifestRequest {
            generation: backup.generation,
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(message) = stream.next().await {
        bytes.extend_from_slice(&message.unwrap().data);
    }
    assert_eq!(bytes, manifest(backup.generation));
    let mut names = Vec::new();
    for info in backup.packs {
        let mut stream = client
            .clone()
            .get_pack(GetPackRequest {
                name: info.name.clone(),
                offset: 0,
                length: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(message) = stream.next().await {
            bytes.extend_from_slice(&message.unwrap().data);
        }
        assert_eq!(bytes, vec![bytes[0]; 8192], "{}", info.name);
        assert_eq!(info.name, name(bytes[0]));
        names.push(info.name);
    }
    (backup.generation, names)
}

/// The gateway binary, armed with `failpoint`, serving on a port of its own.
async fn armed_gateway(harness: &Harness, failpoint: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = harness.gateway_args();
    let child = Command::new(env!("CARGO_BIN_EXE_blob-gateway"))
        .args(&args[1..])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("BLOB_GATEWAY_FAILPOINT", failpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway binary starts");
    let endpoint = format!("https://127.0.0.1:{port}");
    health_probe::wait_serving(
        &endpoint,
        harness.trust(),
        blob_gateway::SERVICE_NAME_V3,
        Duration::from_secs(20),
    )
    .await
    .expect("the armed gateway serves");
    (child, endpoint)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_every_step_leaves_one_generation_whole() {
    for failpoint in [
        "put-pack:after-store",
        "commit:after-manifest",
        "commit:after-record",
        "commit:mid-gc",
    ] {
        let mut harness = Harness::start(&["--sweep-grace", "0s", "--sweep-interval", "1h"]).await;
        let healthy = client(&harness, harness.endpoint());
        for n in [1, 2, 3] {
            put(&healthy, n).await.unwrap();
        }
        assert_eq!(commit(&healthy, 0, &[1, 2], &[]).await.unwrap(), 1);
        put(&healthy, 4).await.unwrap();

        let (mut child, endpoint) = armed_gateway(&harness, failpoint).await;
        let armed = client(&harness, &endpoint);
        let result = match failpoint {
            "put-pack:after-store" => put(&armed, 5).await.map(|()| 0),
            _ => commit(&armed, 1, &[2, 3], &[4]).await,
        };
        assert!(
            result.is_err(),
            "{failpoint}: the armed gateway aborted mid-call"
        );
        let status = child.wait().unwrap();
        assert!(!status.success(), "{failpoint}: {status:?}");

        let (generation, packs) = restorable(&healthy).await;
        match (failpoint, generation) {
            ("put-pack:after-store" | "commit:after-manifest", 1) => {
                assert_eq!(packs, [name(1), name(2)])
            }
            ("commit:after-record" | "commit:mid-gc", 2) => assert_eq!(packs, [name(2), name(3)]),
            other => panic!("{other:?}: the generation a crash at this step leaves is wrong"),
        }

        // The next backup commits on top; a restarted gateway's sweep (grace
        // 0 here) removes whatever the crash left behind.
        put(&healthy, 6).await.unwrap();
        assert_eq!(
            commit(&healthy, generation, &[6], &[]).await.unwrap(),
            generation + 1
        );
        harness.stop_gateway().await;
        harness
            .start_gateway(&["--sweep-grace", "0s", "--sweep-interval", "1h"])
            .await;
        let healthy = client(&harness, harness.endpoint());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let keys = harness.keys("v3/alice/").await;
            if keys.len() == 3 {
                assert!(keys.iter().any(|k| k.ends_with(&name(6))), "{keys:?}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{failpoint}: left behind: {keys:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(restorable(&healthy).await, (generation + 1, vec![name(6)]));
    }
}
