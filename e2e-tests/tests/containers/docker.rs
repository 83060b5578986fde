//! Where the tests reach Docker, and whether they can.
//!
//! `testcontainers` 0.28 talks to the Engine through `bollard` 0.21, which
//! sends API version 1.53 in every path (`/v1.53/containers/...`) and never
//! negotiates; Debian's Docker Engine 20.10 (this machine's, and CI's)
//! answers only up to 1.41 and refuses anything newer. So when the Engine is
//! older, the tests put a small relay in front of its socket that rewrites
//! the version in each request path to the Engine's own (same length, so no
//! other byte moves), and point `DOCKER_HOST` at the relay. Everything else
//! passes through untouched, both ways. With a new enough Engine no relay
//! runs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The API version bollard 0.21 asks for.
const CLIENT_API: &[u8] = b"/v1.53/";

/// Whether Docker can be used; `Err` says why not (one line).
pub fn available() -> Result<(), String> {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    STATE.get_or_init(set_up).clone()
}

fn engine_socket() -> Result<PathBuf, String> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => Ok(PathBuf::from(&host["unix://".len()..])),
        Ok(host) if !host.is_empty() => Err(format!(
            "DOCKER_HOST={host} is not a unix socket; these tests need a local Docker Engine"
        )),
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// The Engine's highest API version, asked over its socket with plain HTTP.
fn engine_api_version(socket: &Path) -> Result<String, String> {
    let mut stream = StdUnixStream::connect(socket)
        .map_err(|e| format!("no Docker Engine at {} ({e})", socket.display()))?;
    stream
        .write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
        .and_then(|()| {
            let mut answer = String::new();
            stream.read_to_string(&mut answer).map(|_| answer)
        })
        .map_err(|e| {
            format!(
                "the Docker Engine at {} did not answer ({e})",
                socket.display()
            )
        })
        .and_then(|answer| {
            let start = answer
                .find("\"ApiVersion\":\"")
                .ok_or("the Docker Engine did not say its API version")?
                + "\"ApiVersion\":\"".len();
            let end = answer[start..]
                .find('"')
                .ok_or("a cut-off version answer")?;
            Ok(answer[start..start + end].to_string())
        })
}

fn set_up() -> Result<(), String> {
    let socket = engine_socket()?;
    let version = engine_api_version(&socket)?;
    let engine_api = format!("/v{version}/").into_bytes();
    let newer = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)))
        .is_some_and(|v| v >= (1, 53));
    if newer {
        return Ok(());
    }
    if engine_api.len() != CLIENT_API.len() {
        return Err(format!(
            "Docker Engine API {version} is too old for testcontainers (needs 1.10 or later)"
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("e2eb-docker-relay")
        .tempdir()
        .map_err(|e| format!("no directory for the Docker relay: {e}"))?
        .keep();
    let relay = dir.join("docker.sock");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let relay_path = relay.clone();
    // Its own thread and runtime: the relay must outlive every test
    // runtime, including the one dropping containers at a test's end.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the Docker relay");
        runtime.block_on(async move {
            let listener = match UnixListener::bind(&relay_path) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot bind the Docker relay: {e}")));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while let Ok((client, _)) = listener.accept().await {
                let socket = socket.clone();
                let engine_api = engine_api.clone();
                tokio::spawn(async move {
                    if let Ok(engine) = UnixStream::connect(&socket).await {
                        relay_connection(client, engine, engine_api).await;
                    }
                });
            }
        });
    });
    ready_rx
        .recv()
        .map_err(|_| "the Docker relay thread died".to_string())??;
    // SAFETY: called once, through `available()`, before any container is
    // started; no other thread of the test reads the environment meanwhile.
    unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", relay.display())) };
    Ok(())
}

async fn relay_connection(client: UnixStream, engine: UnixStream, engine_api: Vec<u8>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut engine_read, mut engine_write) = engine.into_split();
    let upstream = async move {
        // A version split across two reads is caught by holding back a
        // tail that could begin it (only such a tail: a request's last
        // bytes must go out, or the Engine would wait for them forever).
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            replace_all(&mut pending, CLIENT_API, &engine_api);
            let flush = pending.len() - partial_prefix(&pending, CLIENT_API);
            if engine_write.write_all(&pending[..flush]).await.is_err() {
                return;
            }
            pending.drain(..flush);
        }
        let _ = engine_write.write_all(&pending).await;
        let _ = engine_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut engine_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// The length of the longest tail of `bytes` that is a proper prefix of `pattern`.
fn partial_prefix(bytes: &[u8], pattern: &[u8]) -> usize {
    (1..pattern.len())
        .rev()
        .find(|&k| bytes.ends_with(&pattern[..k]))
        .unwrap_or(0)
}

fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

#[test]
fn the_relay_rewrites_the_version_wherever_reads_split_it() {
    let mut bytes = b"GET /v1.53/containers/json HTTP/1.1\r\n\r\nPOST /v1.53/x".to_vec();
    replace_all(&mut bytes, CLIENT_API, b"/v1.41/");
    assert_eq!(
        bytes,
        b"GET /v1.41/containers/json HTTP/1.1\r\n\r\nPOST /v1.41/x".to_vec()
    );
    assert_eq!(partial_prefix(b"GET /v1.", CLIENT_API), 4);
    assert_eq!(partial_prefix(b"...}\r\n\r\n", CLIENT_API), 0);
}
