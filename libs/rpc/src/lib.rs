//! What every gRPC hop of the workspace shares, so no service or client
//! sets up its own: the server setup ([`server`]: TLS, health, reflection,
//! the account-token authenticator, TCP_NODELAY, graceful shutdown), the
//! client channel setup ([`client`]: trusted CA, plaintext only when asked,
//! timeouts, keep-alive), the one retry policy every client call goes
//! through ([`retry`]: several endpoints, deadlines, backoff with jitter),
//! Prometheus metrics ([`metrics`]: per-RPC counts and latency, an HTTP
//! endpoint), and development certificates ([`dev_certs`]).

pub mod client;
pub mod dev_certs;
pub mod metrics;
pub mod retry;
pub mod server;

pub use client::{ChannelOptions, ClientSetupError, ClientTls, Trust, endpoint};
pub use metrics::{MetricsArgs, MetricsRegistry};
pub use server::{
    HealthHandle, RpcServer, ServerOptions, ServerSetupError, ServerTls, ServerTransport,
};

/// An error and its sources on one line: tonic's transport errors keep the
/// useful part (which certificate, which file) in their sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}
