//! The blob gateway: the cloud-storage stand-in (Google Drive / iCloud in
//! WhatsApp's design). It authenticates accounts by token, stores
//! client-encrypted data in S3-compatible storage under a per-account
//! prefix, and keeps exactly one committed generation per account. It
//! never sees a key or plaintext. Two services run side by side:
//! `e2ebackup.storage.v3` ([`v3`]: packs, commits by S3 conditional writes,
//! so several gateways may share one store; a periodic orphan sweep) and
//! the older `e2ebackup.storage.v2` ([`v2`]: one object per chunk, commit
//! order from process-local locks), which goes once the device speaks v3.
//! Health follows the object storage (a periodic cheap probe).

pub mod config;
pub mod download;
pub mod error;
pub mod failpoint;
pub mod locks;
pub mod metrics;
pub mod objects;
pub mod store;
pub mod v2;
pub mod v3;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use account_token::Audience;
use anyhow::Context;
use e2eb_proto::storage::v2::blob_gateway_server::BlobGatewayServer;
use rpc::{MetricsRegistry, RpcServer, ServerOptions};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::locks::CommitLocks;
use crate::metrics::GatewayMetrics;
use crate::objects::ObjectStore;
use crate::store::{Store, StoreError};
use e2eb_proto::storage::v3::blob_gateway_server::BlobGatewayServer as V3Server;

/// The gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str =
    <BlobGatewayServer<v2::service::Gateway> as tonic::server::NamedService>::NAME;

/// The v3 service's name, as health checks know it.
pub const SERVICE_NAME_V3: &str = <e2eb_proto::storage::v3::blob_gateway_server::BlobGatewayServer<
    v3::service::Gateway,
> as tonic::server::NamedService>::NAME;

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
/// storage answers and the bucket exists; then the store is probed for
/// conditional writes, the v2 orphan sweep runs once and the v3 sweep
/// periodically, and health follows a periodic probe of the store. After
/// `shutdown`, running calls get the shutdown grace period to finish.
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
    let client = store::client_with_timeouts(&config.s3, Some(&config.s3_timeouts));
    let store = Store::with_client(client, &config.s3, config.limits.part_bytes);
    let locks = Arc::new(CommitLocks::default());
    let registry = MetricsRegistry::default();
    let metrics = GatewayMetrics::registered(&registry);
    let gateway = v2::service::Gateway::new(store.clone(), config.limits.clone(), locks.clone())
        .with_metrics(metrics.clone());
    let core = Arc::new(v3::Core {
        store: Arc::new(store.clone()),
        limits: config.limits.clone(),
        order: v3::order::CommitOrder::unprobed(),
        metrics,
    });
    let gateway_v3 = v3::service::Gateway::new(core.clone(), config.fleet.request_timeout);

    // A commit and a manifest download are single messages.
    let max_message = config.limits.message_limit();
    let gateway = BlobGatewayServer::new(gateway)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let gateway_v3 = V3Server::new(gateway_v3)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let options = ServerOptions {
        file_descriptor_sets: vec![e2eb_proto::FILE_DESCRIPTOR_SET],
        // Large windows: blobs stream in megabytes, not in 64 KiB round trips.
        stream_window_bytes: Some(8 * 1024 * 1024),
        connection_window_bytes: Some(16 * 1024 * 1024),
        metrics: Some(registry.clone()),
    };
    config
        .metrics
        .spawn(&registry)
        .await
        .context("cannot listen for metrics (--metrics-listen)")?;
    let server = RpcServer::new(transport, verifier, options)?
        .add_service(gateway)
        .add_service(gateway_v3);
    let health = server.health();

    let (ready, is_ready) = tokio::sync::oneshot::channel::<()>();
    let background = tokio::spawn(background(
        config.clone(),
        store,
        locks,
        core,
        health,
        ready,
    ));
    // Health says NOT_SERVING until the object storage answers.
    let ready = async {
        let _ = is_ready.await;
    };
    let stopping = Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            info!("stopping: no new calls; running calls get the shutdown grace period");
            stopping.notify_one();
        }
    };
    let grace = config.fleet.shutdown_grace;
    let overdue = async {
        stopping.notified().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server.serve(listener, ready, shutdown) => served?,
        () = overdue => warn!(?grace, "calls still running after the shutdown grace period; stopping anyway"),
    }
    background.abort();
    info!("blob-gateway stopped");
    Ok(())
}

/// Waits for the bucket, probes conditional writes, sweeps, and then keeps
/// health in step with the store and sweeps v3 periodically.
async fn background(
    config: Config,
    store: Store,
    locks: Arc<CommitLocks>,
    core: Arc<v3::Core>,
    health: rpc::HealthHandle,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let endpoint = config.s3.endpoint.clone();
    let mut logged = false;
    loop {
        let probed = async {
            store.ensure_bucket(config.s3.create_bucket).await?;
            v3::order::choose(&store).await
        };
        match probed.await {
            Ok(conditional) => {
                core.order.set_conditional(conditional);
                break;
            }
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
    // Both run until the gateway stops (which aborts this task).
    tokio::join!(
        sweeps(core, config.fleet.sweep_interval, config.fleet.sweep_grace),
        watch_health(&store, &health, config.fleet.health_interval),
    );
}

/// The v3 orphan sweep, now and every `interval`.
async fn sweeps(core: Arc<v3::Core>, interval: Duration, grace: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        if let Err(error) = v3::sweep::sweep(&core, grace).await {
            warn!(%error, "the orphan sweep failed; it runs again in {interval:?}");
        }
    }
}

/// Probes the store every `interval`; health is NOT_SERVING while it fails.
async fn watch_health(store: &Store, health: &rpc::HealthHandle, interval: Duration) {
    let mut serving = true;
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let checked = tokio::time::timeout(interval.max(Duration::from_secs(1)), store.check())
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the health probe timed out".into())));
        match (checked, serving) {
            (Ok(()), false) => {
                info!("object storage answers again: SERVING");
                health.set_serving(true).await;
                serving = true;
            }
            (Err(error), true) => {
                warn!(%error, "object storage does not answer: health NOT_SERVING until it does");
                health.set_serving(false).await;
                serving = false;
            }
            _ => {}
        }
    }
}
