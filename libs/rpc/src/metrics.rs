//! Prometheus metrics for every service: a [`MetricsRegistry`] each service
//! adds its own counters to, a tower layer that counts every RPC by method
//! and status code and times it, and a plain HTTP endpoint that serves the
//! registry in the OpenMetrics text format (`prometheus-client` encodes it).
//!
//! Labels never carry an account, a token or anything a client chose beyond
//! the method path, and an unknown method is counted under one label, so a
//! caller cannot make the registry grow.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, Request, Response};
use tracing::{debug, info};

/// The metrics of one process; cheap to clone, shared by everything that
/// counts.
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<Mutex<Registry>>);

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistry")
    }
}

impl MetricsRegistry {
    /// Adds `metric` under `name` (without the `_total` suffix a counter
    /// gets when encoded). Keep the clone you pass to update it.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.0
            .lock()
            .expect("metrics registry lock")
            .register(name, help, metric);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &self.0.lock().expect("metrics registry lock"),
        )
        .expect("writing to a String cannot fail");
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// Per-RPC calls (by method and gRPC status code) and latency (by method).
#[derive(Clone)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
}

impl RpcMetrics {
    /// Registers the RPC metrics in `registry`.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "rpc_calls",
            "gRPC calls by method and status code (OK, NOT_FOUND, ...)",
            metrics.calls.clone(),
        );
        registry.register(
            "rpc_latency_seconds",
            "gRPC call latency by method, until the status was sent",
            metrics.latency.clone(),
        );
        metrics
    }

    /// Counts into families nobody reads (a server built without a registry).
    pub fn unregistered() -> Self {
        fn histogram() -> Histogram {
            // 0.5 ms to ~16 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        }
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(histogram as fn() -> Histogram),
        }
    }

    fn record(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        // The router answers UNIMPLEMENTED for any path: one label for all.
        let method = if code == tonic::Code::Unimplemented {
            "unknown"
        } else {
            method
        };
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code: code_name(code).to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// gRPC's canonical upper-case name of `code`.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status in a `grpc-status` header or trailer.
fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.parse().ok()?))
}

/// The tower layer [`crate::RpcServer`] puts around all its services.
#[derive(Clone)]
pub struct RpcMetricsLayer(pub RpcMetrics);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose calls are counted and timed.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: RpcMetrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Counted<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let call = CallInFlight {
            method: request.uri().path().to_owned(),
            started: Instant::now(),
            metrics: self.metrics.clone(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // An error answered at once carries its status in the headers;
            // anything else carries it in the trailers after the body.
            if let Some(code) = status_of(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = Body::new(Observed {
                inner: body,
                call: Some(call),
            });
            Ok(Response::from_parts(parts, body))
        })
    }
}

struct CallInFlight {
    method: String,
    started: Instant,
    metrics: RpcMetrics,
}

impl CallInFlight {
    fn finish(self, code: tonic::Code) {
        self.metrics
            .record(&self.method, code, self.started.elapsed());
    }
}

/// A response body that records its call's status when the trailers pass
/// (or CANCELLED when the client went away first).
struct Observed {
    inner: Body,
    call: Option<CallInFlight>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(call) = self.call.take()
                {
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.finish(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(tonic::Code::Cancelled);
        }
    }
}

/// Serves `registry` at `GET /metrics` over plain HTTP on `listener` for as
/// long as the task runs (it ends with the process). Metrics carry counts
/// only; bind it where your Prometheus can reach it and nobody else needs to.
pub async fn serve_metrics(listener: TcpListener, registry: MetricsRegistry) {
    if let Ok(address) = listener.local_addr() {
        info!("metrics at http://{address}/metrics");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let answer = answer_scrape(&request, &registry);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                debug!(%error, "metrics connection ended");
            }
        });
    }
}

fn answer_scrape(
    request: &Request<Incoming>,
    registry: &MetricsRegistry,
) -> Response<http_body_util::Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == http::Method::GET && request.uri().path() == "/metrics" {
            (
                http::StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                registry.encode(),
            )
        } else {
            (
                http::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "metrics are at GET /metrics\n".to_owned(),
            )
        };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(http_body_util::Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Where a service serves its metrics (a clap block each service flattens).
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over plain HTTP at this address
    /// (`GET /metrics`); no metrics endpoint when unset.
    #[arg(long = "metrics-listen", env = "METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    /// Binds the metrics listener, if one was asked for, and serves
    /// `registry` on it in the background.
    pub async fn spawn(
        &self,
        registry: &MetricsRegistry,
    ) -> std::io::Result<Option<std::net::SocketAddr>> {
        let Some(address) = self.metrics_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(serve_metrics(listener, registry.clone()));
        Ok(Some(bound))
    }
}
