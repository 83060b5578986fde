//! The blob gateway: the cloud-storage stand-in (Google Drive / iCloud in
//! WhatsApp's design). It authenticates accounts by token, streams
//! client-encrypted blobs to S3-compatible storage under a per-account
//! prefix, and keeps exactly one committed backup per account: a commit
//! atomically replaces the previous backup, whose blobs are deleted only
//! afterwards. It never sees a key or plaintext.

pub mod config;
pub mod error;
pub mod layout;
pub mod service;
pub mod store;

use std::future::Future;
use std::time::Duration;

use account_token::SigningKey;
use e2eb_proto::storage::v1::blob_gateway_server::BlobGatewayServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::config::Config;
use crate::store::Store;

/// The gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str = "e2ebackup.storage.v1.BlobGateway";

/// Runs the gateway until `shutdown` resolves. Health answers NOT_SERVING
/// until the object storage answers and the bucket exists.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let key = SigningKey::load_or_create(&config.token_key_file)?;
    let store = Store::new(&config.s3, config.limits.part_bytes);
    let gateway = service::Gateway::new(store.clone(), config.limits.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;
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
        health.set_service_status("", ServingStatus::Serving).await;
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
    });

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(e2eb_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max_message = config.limits.max_message_bytes;
    let gateway = BlobGatewayServer::new(gateway)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let gateway = tonic::service::interceptor::InterceptedService::new(
        gateway,
        account_token::grpc::Authenticator::new(key),
    );

    let listener = TcpListener::bind(config.listen).await?;
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
