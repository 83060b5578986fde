//! The HTTP server: `s3s`'s service on hyper, with SigV4 auth and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{Config, PatchedFs, TestOptions};

/// How long [`Server::shutdown`] lets requests in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid bucket name {0:?}")]
    InvalidBucketName(String),
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// A running server. Dropping it stops accepting connections, like
/// [`shutdown`](Self::shutdown) without waiting.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    data_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint URL for an S3 client, e.g. `http://127.0.0.1:9000`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The canonical data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops accepting connections and waits for requests in flight to finish, at most
    /// ten seconds; connections still open after that are dropped.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            warn!(error = %e, "server task failed");
        }
    }
}

/// Creates the data directory and the configured bucket if missing, binds
/// `config.listen`, and serves S3 on the current Tokio runtime until shut down.
pub async fn serve(config: &Config) -> Result<Server, ServeError> {
    serve_with(config, &TestOptions::default()).await
}

/// [`serve`] with the hidden test options.
pub async fn serve_with(config: &Config, test: &TestOptions) -> Result<Server, ServeError> {
    if !s3s::path::check_bucket_name(&config.bucket) {
        return Err(ServeError::InvalidBucketName(config.bucket.clone()));
    }
    let dir_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ServeError::DataDir { path, source }
    };
    let bucket_dir = config.data_dir.join(&config.bucket);
    tokio::fs::create_dir_all(&bucket_dir)
        .await
        .map_err(dir_error(&bucket_dir))?;
    let data_dir = tokio::fs::canonicalize(&config.data_dir)
        .await
        .map_err(dir_error(&config.data_dir))?;
    let fs = PatchedFs::with_test_options(&data_dir, test).map_err(dir_error(&data_dir))?;

    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(
        config.access_key.clone(),
        config.secret_key.clone(),
    ));
    let service = builder.build();

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;

    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, service, stopped));
    info!(%local_addr, data_dir = %data_dir.display(), bucket = %config.bucket, "serving S3");
    Ok(Server {
        local_addr,
        data_dir,
        stop,
        task,
    })
}

async fn accept_loop(listener: TcpListener, service: S3Service, mut stop: oneshot::Receiver<()>) {
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => socket,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // A stop request, or the `Server` handle was dropped.
            _ = &mut stop => break,
        };
        // Small S3 requests and responses must not wait for Nagle's algorithm.
        if let Err(e) = socket.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection closed with error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {SHUTDOWN_GRACE:?}; dropping them");
    }
    info!("stopped");
}
