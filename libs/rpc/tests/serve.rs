//! The shared server and client setup over real loopback sockets: TLS with
//! dev certificates, the authenticator in front of an application service,
//! health by service name (NOT_SERVING until ready), reflection v1 and
//! v1alpha, a client that trusts another CA refusing the server, and the
//! start errors of a server without usable TLS material.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use account_token::{AccountId, Audience, Authority, BearerToken, DEFAULT_TTL, Verifier};
use rpc::{
    ChannelOptions, MetricsRegistry, RpcServer, ServerOptions, ServerSetupError, ServerTls, Trust,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A one-method application service (`rpc.test.Whoami/Call`) that answers
/// with the account the authenticator verified.
#[derive(Clone)]
struct Whoami;

impl NamedService for Whoami {
    const NAME: &'static str = "rpc.test.Whoami";
}

struct Call;

impl tonic::server::UnaryService<()> for Call {
    type Response = String;
    type Future = std::future::Ready<Result<Response<String>, Status>>;
    fn call(&mut self, request: Request<()>) -> Self::Future {
        std::future::ready(
            account_token::grpc::account(&request).map(|a| Response::new(a.to_string())),
        )
    }
}

impl tonic::codegen::Service<http::Request<Body>> for Whoami {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<String, ()>::default();
            Ok(tonic::server::Grpc::new(codec).unary(Call, request).await)
        })
    }
}

struct Running {
    url: String,
    ready: Option<oneshot::Sender<()>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().expect("a clean shutdown");
    }
}

async fn start(tls: &ServerTls, authority: &Authority) -> Running {
    start_with(tls, authority, ServerOptions::default()).await
}

async fn start_with(tls: &ServerTls, authority: &Authority, options: ServerOptions) -> Running {
    let transport = tls.load("whoami").expect("the TLS material loads");
    let scheme = if transport.is_tls() { "https" } else { "http" };
    let verifier = Verifier::new(authority.public_key().clone(), Audience::BlobGateway);
    let server = RpcServer::new(transport, verifier, options)
        .unwrap()
        .add_service(Whoami);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The certificate names 127.0.0.1 and localhost; use the name.
    let url = format!(
        "{scheme}://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (ready, ready_rx) = oneshot::channel::<()>();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(
        listener,
        async {
            let _ = ready_rx.await;
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    Running {
        url,
        ready: Some(ready),
        stop: Some(stop),
        task,
    }
}

fn channel(url: &str, trust: &Trust) -> Channel {
    rpc::endpoint(url, trust, &ChannelOptions::default())
        .expect("a valid endpoint")
        .connect_lazy()
}

async fn whoami(channel: Channel, token: Option<BearerToken>) -> Result<String, Status> {
    let path = http::uri::PathAndQuery::from_static("/rpc.test.Whoami/Call");
    let codec = tonic_prost::ProstCodec::<(), String>::default();
    let response = match token {
        Some(token) => {
            let mut grpc = tonic::client::Grpc::new(InterceptedService::new(channel, token));
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            grpc.unary(Request::new(()), path, codec).await?
        }
        None => {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            grpc.unary(Request::new(()), path, codec).await?
        }
    };
    Ok(response.into_inner())
}

async fn health(channel: Channel, service: &str) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers without a token")
        .into_inner()
        .status()
}

fn certs(dir: &Path) -> (ServerTls, Trust) {
    rpc::dev_certs::generate(dir, &["whoami"]).unwrap();
    let trust = Trust::from_ca_file(&rpc::dev_certs::ca_path(dir)).unwrap();
    (ServerTls::from_dev_certs(dir, "whoami"), trust)
}

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

#[tokio::test]
async fn tls_health_and_the_authenticator_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, trust) = certs(dir.path());
    let authority = Authority::generate();
    let mut server = start(&tls, &authority).await;
    let channel = channel(&server.url, &trust);

    // Not ready yet: NOT_SERVING, for the whole server and by name.
    assert_eq!(health(channel.clone(), "").await, ServingStatus::NotServing);
    assert_eq!(
        health(channel.clone(), Whoami::NAME).await,
        ServingStatus::NotServing
    );
    server.ready.take().unwrap().send(()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while health(channel.clone(), Whoami::NAME).await != ServingStatus::Serving {
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::task::yield_now().await;
    }
    assert_eq!(health(channel.clone(), "").await, ServingStatus::Serving);

    // The application service sits behind the authenticator.
    let token = authority
        .mint(&alice(), Audience::BlobGateway, DEFAULT_TTL)
        .unwrap();
    let answer = whoami(channel.clone(), Some(BearerToken::new(token))).await;
    assert_eq!(answer.unwrap(), "alice");
    let status = whoami(channel.clone(), None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let vault_token = authority
        .mint(&alice(), Audience::KeyVault, DEFAULT_TTL)
        .unwrap();
    let status = whoami(channel.clone(), Some(BearerToken::new(vault_token)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("key-vault"), "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn every_call_is_counted_by_method_and_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, trust) = certs(dir.path());
    let authority = Authority::generate();
    let registry = MetricsRegistry::default();
    let options = ServerOptions {
        metrics: Some(registry.clone()),
        ..ServerOptions::default()
    };
    let mut server = start_with(&tls, &authority, options).await;
    server.ready.take().unwrap().send(()).unwrap();
    let channel = channel(&server.url, &trust);
    let token = || {
        let token = authority.mint(&alice(), Audience::BlobGateway, DEFAULT_TTL);
        Some(BearerToken::new(token.unwrap()))
    };
    for _ in 0..3 {
        whoami(channel.clone(), token()).await.unwrap();
    }
    whoami(channel.clone(), None).await.unwrap_err();
    health(channel.clone(), "").await;

    let text = registry.encode();
    let count = |labels: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("rpc_calls_total{{{labels}}} ")))
            .unwrap_or_else(|| panic!("no {labels} in\n{text}"))
            .to_owned()
    };
    assert_eq!(count(r#"method="/rpc.test.Whoami/Call",code="OK""#), "3");
    assert_eq!(
        count(r#"method="/rpc.test.Whoami/Call",code="UNAUTHENTICATED""#),
        "1"
    );
    assert_eq!(
        count(r#"method="/grpc.health.v1.Health/Check",code="OK""#),
        "1"
    );
    assert!(
        text.contains(r#"rpc_latency_seconds_count{method="/rpc.test.Whoami/Call"} 4"#),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn reflection_answers_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let dir = tempfile::tempdir().unwrap();
    let (tls, trust) = certs(dir.path());
    let server = start(&tls, &Authority::generate()).await;
    let channel = channel(&server.url, &trust);

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures_once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "grpc.health.v1.Health")
    );

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(futures_once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "grpc.health.v1.Health")
    );
    server.stop().await;
}

fn futures_once<T: Send + 'static>(item: T) -> impl tokio_stream::Stream<Item = T> {
    tokio_stream::once(item)
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_refuses_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, trust) = certs(&dir.path().join("real"));
    let (_, other_trust) = certs(&dir.path().join("other"));
    let authority = Authority::generate();
    let mut server = start(&tls, &authority).await;
    server.ready.take().unwrap().send(()).unwrap();
    let token = || {
        BearerToken::new(
            authority
                .mint(&alice(), Audience::BlobGateway, DEFAULT_TTL)
                .unwrap(),
        )
    };

    let status = whoami(channel(&server.url, &other_trust), Some(token()))
        .await
        .unwrap_err();
    let reason = rpc::client::untrusted_server(&status)
        .unwrap_or_else(|| panic!("not classified as an untrusted server: {status:?}"));
    assert!(reason.contains("UnknownIssuer"), "{reason}");

    // The same call with the right CA works.
    let answer = whoami(channel(&server.url, &trust), Some(token())).await;
    assert_eq!(answer.unwrap(), "alice");
    server.stop().await;
}

#[tokio::test]
async fn plaintext_is_served_only_when_asked_and_tls_clients_do_not_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, trust) = certs(dir.path());
    let authority = Authority::generate();
    let mut plain = start(&ServerTls::insecure_plaintext(), &authority).await;
    plain.ready.take().unwrap().send(()).unwrap();
    assert!(plain.url.starts_with("http://"));
    // A client that was not told to allow plaintext refuses the URL...
    assert!(matches!(
        rpc::endpoint(&plain.url, &trust, &ChannelOptions::default()),
        Err(rpc::ClientSetupError::PlaintextRefused { .. })
    ));
    // ...and speaking TLS to a plaintext server fails rather than downgrading.
    let https = plain.url.replace("http://", "https://");
    let token = || {
        Some(BearerToken::new(
            authority
                .mint(&alice(), Audience::BlobGateway, DEFAULT_TTL)
                .unwrap(),
        ))
    };
    assert!(whoami(channel(&https, &trust), token()).await.is_err());
    let insecure = trust.clone().allow_insecure_plaintext();
    assert_eq!(
        whoami(channel(&plain.url, &insecure), token())
            .await
            .unwrap(),
        "alice"
    );
    plain.stop().await;

    // A TLS server does not answer plaintext.
    let mut server = start(&tls, &authority).await;
    server.ready.take().unwrap().send(()).unwrap();
    let http = server.url.replace("https://", "http://");
    assert!(whoami(channel(&http, &insecure), token()).await.is_err());
    server.stop().await;
}

#[test]
fn a_server_without_usable_tls_material_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ServerTls::from_dev_certs(dir.path(), "whoami");
    let error = missing.load("whoami").unwrap_err();
    assert!(matches!(error, ServerSetupError::Missing { .. }), "{error}");
    assert!(
        error.to_string().contains("--insecure-plaintext"),
        "{error}"
    );

    rpc::dev_certs::generate(dir.path(), &["whoami"]).unwrap();
    std::fs::write(rpc::dev_certs::key_path(dir.path(), "whoami"), "garbage").unwrap();
    let error = missing.load("whoami").unwrap_err();
    assert!(
        matches!(error, ServerSetupError::Identity { .. }),
        "{error}"
    );
}

#[test]
fn server_flags_default_to_the_local_stack_and_plaintext_is_explicit() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: ServerTls,
    }
    let cli = Cli::try_parse_from(["x"]).unwrap();
    assert!(!cli.tls.insecure_plaintext);
    let error = cli.tls.load("no-such-service").unwrap_err();
    assert!(
        error.to_string().contains(".state/tls/no-such-service.pem"),
        "{error}"
    );
    let cli = Cli::try_parse_from(["x", "--insecure-plaintext"]).unwrap();
    assert!(!cli.tls.load("any").unwrap().is_tls());
    assert!(Cli::try_parse_from(["x", "--insecure-plaintext", "--tls-cert", "c.pem"]).is_err());
}
