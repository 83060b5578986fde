//! The server side every gRPC service of the workspace shares: TLS from PEM
//! files (plaintext only behind an explicit flag), the standard health
//! service (names from `NamedService::NAME`), reflection v1 and v1alpha,
//! the account-token authenticator around every application service,
//! TCP_NODELAY, HTTP/2 windows and keep-alive, graceful shutdown, and
//! per-RPC metrics when given a registry.
//!
//! Message size limits stay with each service: tonic sets them on the
//! generated server type (`max_decoding_message_size`), which has no common
//! trait, and each service knows its own largest message.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use account_token::Verifier;
use account_token::grpc::Authenticator;
use clap::Args;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity as NoLayer, Stack};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::dev_certs;
use crate::metrics::{MetricsRegistry, RpcMetrics, RpcMetricsLayer};

/// Where the local stack keeps its dev certificates (`make up` makes them).
pub const DEFAULT_TLS_DIR: &str = ".state/tls";

/// How a server secures its socket (a clap block each service flattens).
#[derive(Debug, Clone, Args)]
pub struct ServerTls {
    /// PEM certificate (chain) this server presents
    /// [default: .state/tls/<service>.pem].
    #[arg(long = "tls-cert", env = "TLS_CERT_FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: .state/tls/<service>.key].
    #[arg(long = "tls-key", env = "TLS_KEY_FILE")]
    pub key: Option<PathBuf>,
    /// Serve gRPC without TLS. Anyone on the network path can then read and
    /// replay account tokens; for debugging on loopback only.
    #[arg(
        long = "insecure-plaintext",
        env = "INSECURE_PLAINTEXT",
        conflicts_with_all = ["cert", "key"]
    )]
    pub insecure_plaintext: bool,
}

/// TLS material loaded and checked, or the explicit choice of plaintext.
#[derive(Clone)]
pub struct ServerTransport(Option<ServerTlsConfig>);

impl std::fmt::Debug for ServerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("ServerTransport::Tls(<identity>)"),
            None => f.write_str("ServerTransport::InsecurePlaintext"),
        }
    }
}

impl ServerTransport {
    /// No TLS: only behind an explicit flag or in tests that must see the bytes.
    pub fn insecure_plaintext() -> Self {
        Self(None)
    }

    /// TLS with a PEM certificate (chain) and private key, checked now.
    pub fn tls_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, tonic::transport::Error> {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert_pem, key_pem))
            .timeout(Duration::from_secs(10));
        // tonic parses the PEM when the acceptor is built: do it now, so a
        // bad file is a start error, not a failure at the first connection.
        tonic::transport::Server::builder().tls_config(config.clone())?;
        Ok(Self(Some(config)))
    }

    pub fn is_tls(&self) -> bool {
        self.0.is_some()
    }
}

/// Why a server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerSetupError {
    #[error(
        "no TLS {what} for {service} at {path}: create development certificates with `dev-certs` (`make up` does), point --tls-cert/--tls-key (TLS_CERT_FILE/TLS_KEY_FILE) at real ones, or pass --insecure-plaintext to serve without TLS"
    )]
    Missing {
        service: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error("cannot read the TLS {what} {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the TLS certificate {cert} and key {key} are not a usable PEM identity: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("reflection cannot read a file descriptor set: {0}")]
    Reflection(String),
}

impl ServerTls {
    /// Explicitly plaintext (tests that need to see the bytes).
    pub fn insecure_plaintext() -> Self {
        Self {
            cert: None,
            key: None,
            insecure_plaintext: true,
        }
    }

    /// TLS with the certificate and key of `service` in a dev-certs `dir`.
    pub fn from_dev_certs(dir: &Path, service: &str) -> Self {
        Self {
            cert: Some(dev_certs::cert_path(dir, service)),
            key: Some(dev_certs::key_path(dir, service)),
            insecure_plaintext: false,
        }
    }

    /// Reads and checks the certificate and key (`service` names the
    /// default files under [`DEFAULT_TLS_DIR`]).
    pub fn load(&self, service: &str) -> Result<ServerTransport, ServerSetupError> {
        if self.insecure_plaintext {
            return Ok(ServerTransport::insecure_plaintext());
        }
        let dir = Path::new(DEFAULT_TLS_DIR);
        let cert = (self.cert.clone()).unwrap_or_else(|| dev_certs::cert_path(dir, service));
        let key = (self.key.clone()).unwrap_or_else(|| dev_certs::key_path(dir, service));
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path)
                .map(Zeroizing::new)
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::NotFound => ServerSetupError::Missing {
                        service: service.to_string(),
                        what,
                        path: path.to_path_buf(),
                    },
                    _ => ServerSetupError::Read {
                        what,
                        path: path.to_path_buf(),
                        error,
                    },
                })
        };
        let cert_pem = read("certificate", &cert)?;
        let key_pem = read("private key", &key)?;
        ServerTransport::tls_from_pem(&cert_pem, &key_pem).map_err(|error| {
            ServerSetupError::Identity {
                cert,
                key,
                reason: crate::error_chain(&error),
            }
        })
    }
}

/// Tuning that differs per service.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Encoded `FileDescriptorSet`s to serve by reflection (the health
    /// service's own is always added).
    pub file_descriptor_sets: Vec<&'static [u8]>,
    /// HTTP/2 flow-control windows; `None` keeps hyper's defaults. Services
    /// that stream megabytes want megabytes here.
    pub stream_window_bytes: Option<u32>,
    pub connection_window_bytes: Option<u32>,
    /// Where every call is counted by method and status code and timed;
    /// `None`: not counted.
    pub metrics: Option<MetricsRegistry>,
}

/// A gRPC server being assembled: health and reflection are in; add the
/// application services, then [`RpcServer::serve`].
pub struct RpcServer {
    router: Router<Stack<RpcMetricsLayer, NoLayer>>,
    health: HealthReporter,
    authenticator: Authenticator,
    names: Vec<&'static str>,
    tls: bool,
}

impl RpcServer {
    pub fn new(
        transport: ServerTransport,
        verifier: Verifier,
        options: ServerOptions,
    ) -> Result<Self, ServerSetupError> {
        let builder = tonic::transport::Server::builder()
            .initial_stream_window_size(options.stream_window_bytes)
            .initial_connection_window_size(options.connection_window_bytes)
            // Find dead peers (a phone that went away) instead of holding
            // their streams forever.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        let rpc_metrics = match &options.metrics {
            Some(registry) => RpcMetrics::new(registry),
            None => RpcMetrics::unregistered(),
        };
        let mut builder = builder.layer(RpcMetricsLayer(rpc_metrics));
        let tls = transport.is_tls();
        if let Some(config) = transport.0 {
            builder = builder
                .tls_config(config)
                .expect("ServerTransport::tls_from_pem built this acceptor once already");
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        let sets = options.file_descriptor_sets;
        let reflection = || {
            sets.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, set| builder.register_encoded_file_descriptor_set(set),
            )
        };
        let reflection_error =
            |e: tonic_reflection::server::Error| ServerSetupError::Reflection(e.to_string());
        // v1alpha too: older clients (Python grpcio, older grpcurl) speak only it.
        let v1 = reflection().build_v1().map_err(reflection_error)?;
        let v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        let router = builder
            .add_service(health_service)
            .add_service(v1)
            .add_service(v1alpha);
        Ok(Self {
            router,
            health,
            authenticator: Authenticator::new(verifier),
            names: Vec::new(),
            tls,
        })
    }

    /// Adds an application service behind the account authenticator; its
    /// health status is reported under its own name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        let service = InterceptedService::new(service, self.authenticator.clone());
        self.router = self.router.add_service(service);
        self
    }

    /// A handle that sets the health status of the server and of every
    /// service added so far, for a service whose health follows something
    /// outside it (the gateway's object storage).
    pub fn health(&self) -> HealthHandle {
        HealthHandle {
            reporter: self.health.clone(),
            names: std::iter::once("").chain(self.names.clone()).collect(),
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then lets running
    /// calls finish. Health answers NOT_SERVING (for the server as a whole
    /// and for each service) until `ready` resolves, SERVING after.
    pub async fn serve(
        self,
        listener: TcpListener,
        ready: impl Future<Output = ()> + Send + 'static,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let names: Vec<&'static str> = std::iter::once("").chain(self.names.clone()).collect();
        for name in &names {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        let health = self.health.clone();
        let ready_names = names.clone();
        tokio::spawn(async move {
            ready.await;
            for name in ready_names {
                health
                    .set_service_status(name, ServingStatus::Serving)
                    .await;
            }
        });
        let listen = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if self.tls {
            info!(%listen, services = ?self.names, "serving gRPC over TLS");
        } else {
            warn!(
                %listen, services = ?self.names,
                "serving gRPC WITHOUT TLS (--insecure-plaintext): tokens and data cross the network in the clear"
            );
        }
        // Without TCP_NODELAY, Nagle plus delayed ACKs stall every small
        // reply by ~40 ms.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        self.router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        for name in names {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        Ok(())
    }
}

/// Sets the health status of a server's services together; see
/// [`RpcServer::health`].
#[derive(Clone)]
pub struct HealthHandle {
    reporter: HealthReporter,
    names: Vec<&'static str>,
}

impl HealthHandle {
    /// SERVING when `serving`, NOT_SERVING otherwise.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in &self.names {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}
