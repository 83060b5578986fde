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

use account_token::Audience;
use e2eb_proto::storage::v2::blob_gateway_server::BlobGatewayServer;
use rpc::{RpcServer, ServerOptions};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::locks::CommitLocks;
use crate::store::Store;

/// The gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str =
    <BlobGatewayServer<v2::service::Gateway> as tonic::server::NamedService>::NAME;

/// The name of this service: its token audience, its certificate's name.
pub const SERVICE: &str = "blob-gateway";

/// Binds `config.listen` and runs the gateway until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    serve(config, listener, shutdown).await
}

/// Runs the gateway on `listener` (whose address wins over `config.listen`)
/// until `shutdown` resolves, over TLS unless explicitly plaintext, with
/// blob-gateway tokens only. Health answers NOT_SERVING until the object
/// storage answers and the bucket exists; then the v2 orphan sweep starts
/// in the background.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(name) = config.failpoint {
        failpoint::arm(name);
    }
    let verifier = config.tokens.verifier(Audience::BlobGateway)?;
    let transport = config.tls.load(SERVICE)?;
    let store = Store::new(&config.s3, config.limits.part_bytes);
    let locks = Arc::new(CommitLocks::default());
    let gateway = v2::service::Gateway::new(store.clone(), config.limits.clone(), locks.clone());

    let (ready, is_ready) = tokio::sync::oneshot::channel::<()>();
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
        let _ = ready.send(());
        v2::gc::sweep(&store, &locks).await;
    });

    // A commit and a manifest download are single messages.
    let max_message = config.limits.message_limit();
    let gateway = BlobGatewayServer::new(gateway)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let options = ServerOptions {
        file_descriptor_sets: vec![e2eb_proto::FILE_DESCRIPTOR_SET],
        // Large windows: blobs stream in megabytes, not in 64 KiB round trips.
        stream_window_bytes: Some(8 * 1024 * 1024),
        connection_window_bytes: Some(16 * 1024 * 1024),
    };
    // Health says NOT_SERVING until the object storage answers.
    let ready = async {
        let _ = is_ready.await;
    };
    RpcServer::new(transport, verifier, options)?
        .add_service(gateway)
        .serve(listener, ready, shutdown)
        .await?;
    info!("blob-gateway stopped");
    Ok(())
}
