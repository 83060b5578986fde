//! The blob gateway: the cloud-storage stand-in (Google Drive / iCloud in
//! WhatsApp's design). It authenticates accounts by token, stores
//! client-encrypted chunks and manifests in S3-compatible storage under a
//! per-account prefix, and keeps exactly one committed generation per
//! account (`e2ebackup.storage.v2`, in [`v2`]): a commit atomically replaces
//! the previous generation, whose chunks are deleted only afterwards, and an
//! orphan sweep at start cleans what crashes left. It never sees a key or
//! plaintext.

pub mod config;
pub mod download;
pub mod error;
pub mod failpoint;
pub mod locks;
pub mod store;
pub mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use account_token::SigningKey;
use e2eb_proto::storage::v2::blob_gateway_server::BlobGatewayServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::config::Config;
use crate::locks::CommitLocks;
use crate::store::Store;

/// The gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str = "e2ebackup.storage.v2.BlobGateway";

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
    let gateway = v2::service::Gateway::new(store.clone(), config.limits.clone(), locks.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", SERVICE_NAME] {
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
        for name in ["", SERVICE_NAME] {
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
    // A commit and a manifest download are single messages.
    let max_message = config.limits.message_limit();
    let gateway = BlobGatewayServer::new(gateway)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let gateway = tonic::service::interceptor::InterceptedService::new(gateway, authenticator);

    info!(listen = %listener.local_addr()?, "blob-gateway listening");
    tonic::transport::Server::builder()
        // Large windows: blobs stream in megabytes, not in 64 KiB round trips.
        .initial_stream_window_size(8 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(gateway)
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
