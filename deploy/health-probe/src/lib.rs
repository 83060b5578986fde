//! Waits until a gRPC service answers SERVING on the standard health check
//! (`grpc.health.v1.Health/Check`). `make up` and the e2e tests use it as
//! their readiness probe.

use std::time::{Duration, Instant};

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks once; `Ok(true)` when the service reports SERVING.
pub async fn is_serving(endpoint: &str, service: &str) -> anyhow::Result<bool> {
    let channel = Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(1))
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

/// Polls every 100 ms until SERVING or until `timeout` has passed.
pub async fn wait_serving(endpoint: &str, service: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match is_serving(endpoint, service).await {
            Ok(true) => return Ok(()),
            Ok(false) => "NOT_SERVING".to_string(),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{endpoint} ({service}) not serving after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
