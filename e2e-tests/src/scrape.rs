//! Reading a service's Prometheus endpoint as a scraper would: an HTTP GET
//! of `/metrics` (hyper's client) and the value of one sample in the text.

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The text `GET http://<address>/metrics` answers.
pub async fn scrape(address: &str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("no metrics endpoint at {address}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, address)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

/// The value of the sample `name{labels}` (`labels` as written in the
/// text, e.g. `code="OK",method="/pkg.Svc/Call"`, or empty for none); 0
/// when the sample is absent (a counter never touched).
pub fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(&series)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}
