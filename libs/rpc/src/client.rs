//! The client side: which CA a client trusts ([`ClientTls`] → [`Trust`]),
//! and one function, [`endpoint`], that turns a service URL into a tonic
//! `Endpoint` with TLS, timeouts, TCP_NODELAY, HTTP/2 keep-alive and window
//! sizes. `https://` gets TLS against the trusted CA only (no system
//! roots); `http://` is refused unless plaintext was explicitly allowed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Which servers a client trusts (a clap block each client flattens).
#[derive(Debug, Clone, Args)]
pub struct ClientTls {
    /// PEM CA certificate(s) that servers' certificates must chain to.
    #[arg(
        long = "tls-ca",
        env = "E2EB_TLS_CA_FILE",
        default_value = ".state/tls/ca.pem",
        global = true
    )]
    pub ca_file: PathBuf,
    /// Allow http:// service URLs: tokens and data then cross the network
    /// unencrypted. For debugging on loopback only.
    #[arg(long = "insecure-plaintext", env = "INSECURE_PLAINTEXT", global = true)]
    pub insecure_plaintext: bool,
}

impl ClientTls {
    /// Reads the CA file. With --insecure-plaintext a missing CA file is
    /// fine (then only http:// URLs work).
    pub fn load(&self) -> Result<Trust, ClientSetupError> {
        match Trust::from_ca_file(&self.ca_file) {
            Ok(trust) if self.insecure_plaintext => Ok(trust.allow_insecure_plaintext()),
            Ok(trust) => Ok(trust),
            Err(ClientSetupError::ReadCa { error, .. })
                if self.insecure_plaintext && error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Trust::insecure_plaintext_only())
            }
            Err(error) => Err(error),
        }
    }
}

/// The CA a client trusts, and whether it may speak plaintext.
#[derive(Clone)]
pub struct Trust {
    ca: Option<Certificate>,
    plaintext: bool,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("ca", &self.ca.is_some())
            .field("insecure_plaintext", &self.plaintext)
            .finish()
    }
}

impl Trust {
    /// Trusts the CA certificate(s) in `pem`.
    pub fn from_ca_pem(pem: impl AsRef<[u8]>) -> Result<Self, ClientSetupError> {
        let pem = pem.as_ref();
        if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ClientSetupError::NotPem);
        }
        Ok(Self {
            ca: Some(Certificate::from_pem(pem)),
            plaintext: false,
        })
    }

    pub fn from_ca_file(path: &Path) -> Result<Self, ClientSetupError> {
        let pem = std::fs::read(path).map_err(|error| ClientSetupError::ReadCa {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_ca_pem(pem).map_err(|_| ClientSetupError::CaNotPem {
            path: path.to_path_buf(),
        })
    }

    /// Also allows `http://` URLs.
    pub fn allow_insecure_plaintext(self) -> Self {
        Self {
            plaintext: true,
            ..self
        }
    }

    /// No CA: only `http://` URLs, explicitly insecure.
    pub fn insecure_plaintext_only() -> Self {
        Self {
            ca: None,
            plaintext: true,
        }
    }
}

/// Channel tuning; the defaults suit every client of the workspace.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval and how long to wait for the answer: a dead
    /// server is noticed instead of hanging a call forever.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// HTTP/2 flow-control windows; `None` keeps hyper's 64 KiB defaults,
    /// which cap a stream at one window per round trip.
    pub stream_window_bytes: Option<u32>,
    pub connection_window_bytes: Option<u32>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            stream_window_bytes: None,
            connection_window_bytes: None,
        }
    }
}

/// Why a client cannot set up a channel (before any byte is sent).
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("{url:?} is not a service URL ({reason}); use https://HOST:PORT")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "refusing plaintext gRPC to {url}: use https://, or pass --insecure-plaintext (INSECURE_PLAINTEXT=true) to send tokens and data unencrypted"
    )]
    PlaintextRefused { url: String },
    #[error("{url} needs TLS but no CA is trusted; pass --tls-ca (E2EB_TLS_CA_FILE)")]
    NoTrustedCa { url: String },
    #[error(
        "cannot read the trusted CA {path}: {error}; run `make up` (it creates development certificates) or point --tls-ca (E2EB_TLS_CA_FILE) at your CA"
    )]
    ReadCa {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the trusted CA file {path} holds no PEM certificate")]
    CaNotPem { path: PathBuf },
    #[error("the trusted CA holds no PEM certificate")]
    NotPem,
    #[error("cannot configure TLS for {url}: {reason}")]
    Tls { url: String, reason: String },
}

/// A tonic endpoint for `url` (`https://host:port`, or `http://…` only if
/// `trust` allows plaintext). Nothing connects yet.
pub fn endpoint(
    url: &str,
    trust: &Trust,
    options: &ChannelOptions,
) -> Result<Endpoint, ClientSetupError> {
    let invalid = |reason: String| ClientSetupError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| invalid(e.to_string()))?;
    let uri = endpoint.uri();
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    let endpoint = match uri.scheme_str() {
        Some("https") => {
            let ca = trust
                .ca
                .clone()
                .ok_or_else(|| ClientSetupError::NoTrustedCa {
                    url: url.to_string(),
                })?;
            // Only this CA: tonic adds no system roots unless asked.
            endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(ca))
                .map_err(|error| ClientSetupError::Tls {
                    url: url.to_string(),
                    reason: crate::error_chain(&error),
                })?
        }
        Some("http") if trust.plaintext => endpoint,
        Some("http") => {
            return Err(ClientSetupError::PlaintextRefused {
                url: url.to_string(),
            });
        }
        other => return Err(invalid(format!("scheme {other:?}"))),
    };
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_timeout)
        .initial_stream_window_size(options.stream_window_bytes)
        .initial_connection_window_size(options.connection_window_bytes))
}

/// If `error` (a call's `Status`, or a `connect()` error) is a failed TLS
/// handshake because the server's certificate is not trusted (another CA,
/// wrong name, expired), what rustls said. Retrying cannot help; the caller
/// should say which CA it trusts.
pub fn untrusted_server(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        let rustls_error = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(reason)) = rustls_error {
            return Some(format!("invalid peer certificate: {reason:?}"));
        }
        next = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        crate::dev_certs::generate(dir.path(), &["svc"]).unwrap();
        std::fs::read(crate::dev_certs::ca_path(dir.path())).unwrap()
    }

    #[test]
    fn http_is_refused_unless_plaintext_is_explicit() {
        let trust = Trust::from_ca_pem(ca_pem()).unwrap();
        let options = ChannelOptions::default();
        let error = endpoint("http://127.0.0.1:1", &trust, &options).unwrap_err();
        assert!(matches!(error, ClientSetupError::PlaintextRefused { .. }));
        assert!(
            error.to_string().contains("--insecure-plaintext"),
            "{error}"
        );
        let insecure = trust.clone().allow_insecure_plaintext();
        assert!(endpoint("http://127.0.0.1:1", &insecure, &options).is_ok());
        assert!(endpoint("https://127.0.0.1:1", &trust, &options).is_ok());
    }

    #[test]
    fn https_needs_a_ca_and_urls_must_be_urls() {
        let options = ChannelOptions::default();
        let plaintext = Trust::insecure_plaintext_only();
        assert!(matches!(
            endpoint("https://127.0.0.1:1", &plaintext, &options),
            Err(ClientSetupError::NoTrustedCa { .. })
        ));
        for url in ["127.0.0.1:50061", "ftp://host:1", "https://", "not a url"] {
            assert!(
                matches!(
                    endpoint(url, &plaintext, &options),
                    Err(ClientSetupError::InvalidUrl { .. })
                ),
                "{url}: {:?}",
                endpoint(url, &plaintext, &options)
            );
        }
    }

    #[test]
    fn the_ca_file_must_exist_unless_plaintext_is_explicit() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ClientTls {
            ca_file: dir.path().join("ca.pem"),
            insecure_plaintext: false,
        };
        let error = missing.load().unwrap_err();
        assert!(error.to_string().contains("make up"), "{error}");
        let insecure = ClientTls {
            insecure_plaintext: true,
            ..missing.clone()
        };
        let trust = insecure.load().unwrap();
        assert!(trust.plaintext && trust.ca.is_none());

        std::fs::write(&missing.ca_file, "not pem").unwrap();
        assert!(matches!(
            missing.load(),
            Err(ClientSetupError::CaNotPem { .. })
        ));
        std::fs::write(&missing.ca_file, ca_pem()).unwrap();
        let trust = missing.load().unwrap();
        assert!(!trust.plaintext && trust.ca.is_some());
    }
}
