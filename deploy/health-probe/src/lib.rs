//! Waits until a gRPC service answers SERVING on the standard health check
//! (`grpc.health.v1.Health/Check`), over TLS with the trusted CA (or
//! plaintext when the trust allows it). `make up` and the tests use it as
//! their readiness probe.

use std::time::{Duration, Instant};

use rpc::{ChannelOptions, Trust};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks once; `Ok(true)` when the service reports SERVING.
pub async fn is_serving(endpoint: &str, trust: &Trust, service: &str) -> anyhow::Result<bool> {
    let options = ChannelOptions {
        connect_timeout: Duration::from_secs(1),
        ..ChannelOptions::default()
    };
    let channel = rpc::endpoint(endpoint, trust, &options)?
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(response.into_inner().status() == ServingStatus::Serving)
}

/// Polls every 100 ms until SERVING or until `timeout` has passed. A server
/// whose certificate is not trusted fails at once: waiting cannot fix it.
pub async fn wait_serving(
    endpoint: &str,
    trust: &Trust,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match is_serving(endpoint, trust, service).await {
            Ok(true) => return Ok(()),
            Ok(false) => "NOT_SERVING".to_string(),
            Err(error) => {
                let chain: &(dyn std::error::Error + 'static) = error.as_ref();
                if let Some(reason) = rpc::client::untrusted_server(chain) {
                    anyhow::bail!(
                        "{endpoint} presented a certificate this client does not trust ({reason}); check --tls-ca"
                    );
                }
                format!("{error:#}")
            }
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{endpoint} ({service}) not serving after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
