//! The blob gateway: the cloud-storage stand-in (Google Drive / iCloud in
//! WhatsApp's design). It authenticates accounts by token, streams
//! client-encrypted blobs to S3-compatible storage under a per-account
//! prefix, and keeps exactly one committed backup per account: a commit
//! atomically replaces the previous backup, whose blobs are deleted only
//! afterwards. It never sees a key or plaintext.
//!
//! Two services share the binary while clients move over: v1
//! ([`service`]: whole backups of named blobs) and v2 ([`v2`]: content-
//! addressed chunks and generations, with garbage collection after every
//! commit and an orphan sweep at start).

pub mod config;
pub mod download;
pub mod error;
pub mod failpoint;
pub mod layout;
pub mod locks;
pub mod service;
pub mod store;
pub mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use account_token::SigningKey;
use e2eb_proto::storage::v1::blob_gateway_server::BlobGatewayServer;
use e2eb_proto::storage::v2::blob_gateway_server::BlobGatewayServer as BlobGatewayV2Server;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::config::Config;
use crate::locks::CommitLocks;
use crate::store::Store;

/// The gRPC service names, as health checks know them.
pub const SERVICE_NAME: &str = "e2ebackup.storage.v1.BlobGateway";
pub const SERVICE_NAME_V2: &str = "e2ebackup.storage.v2.BlobGateway";

/// Binds `config.listen` and runs the gateway until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    serve(config, listener, shutdown).await
}

/// Runs the gateway on `listener` (whose address wins over `config.listen`)
/// until `shutdown` resolves. Health answers NOT_SERVING until the object
/// storage answers and the bucket exists; then the v2 orphan sweep starts in
/// the background.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(name) = config.failpoint {
        failpoint::arm(name);
    }
    let key = SigningKey::load_or_create(&config.token_key_file)?;
    let store = Store::new(&config.s3, config.limits.part_bytes);
    let locks = Arc::new(CommitLocks::default());
    let gateway = service::Gateway::new(store.clone(), config.limits.clone(), locks.clone());
    let gateway_v2 = v2::service::Gateway::new(store.clone(), config.limits.clone(), locks.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", SERVICE_NAME, SERVICE_NAME_V2] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let create_bucket = config.s3.create_bucket;
    let endpoint = config.s3.endpoint.clone();
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            match store.ensure_bucket(create_bucket).await {
                Ok(()) => break,
                Err(error) if !logged => {
                    warn!(%endpoint, %error, "object storage not ready; retrying");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        info!(%endpoint, "object storage ready");
        for name in ["", SERVICE_NAME, SERVICE_NAME_V2] {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        v2::gc::sweep(&store, &locks).await;
    });

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(e2eb_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let authenticator = account_token::grpc::Authenticator::new(key);
    let max_message = config.limits.max_message_bytes;
    let gateway = BlobGatewayServer::new(gateway)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let gateway =
        tonic::service::interceptor::InterceptedService::new(gateway, authenticator.clone());
    // A v2 commit and a manifest download are single messages.
    let max_message_v2 = config.limits.v2_message_limit();
    let gateway_v2 = BlobGatewayV2Server::new(gateway_v2)
        .max_decoding_message_size(max_message_v2)
        .max_encoding_message_size(max_message_v2);
    let gateway_v2 =
        tonic::service::interceptor::InterceptedService::new(gateway_v2, authenticator);

    info!(listen = %listener.local_addr()?, "blob-gateway listening");
    tonic::transport::Server::builder()
        // Large windows: blobs stream in megabytes, not in 64 KiB round trips.
        .initial_stream_window_size(8 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(gateway)
        .add_service(gateway_v2)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, Nagle plus delayed ACKs stall every
            // small response by ~40 ms.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    info!("blob-gateway stopped");
    Ok(())
}
