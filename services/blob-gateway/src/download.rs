//! Streams an S3 object body out as gRPC messages of at most 1 MiB.

use aws_sdk_s3::primitives::ByteStream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::ServiceError;
use crate::store::StoreError;

/// Largest data payload per download message.
pub const MESSAGE_BYTES: usize = 1024 * 1024;

/// Copies `body` into messages made by `wrap`, each at most
/// [`MESSAGE_BYTES`] of data, coalescing small reads. Stops early when the
/// receiver goes away.
pub async fn pump<T>(
    mut body: ByteStream,
    tx: mpsc::Sender<Result<T, Status>>,
    wrap: fn(Vec<u8>) -> T,
) {
    let mut pending = Vec::with_capacity(MESSAGE_BYTES);
    loop {
        match body.next().await {
            Some(Ok(bytes)) => {
                let mut bytes = &bytes[..];
                while !bytes.is_empty() {
                    let take = bytes.len().min(MESSAGE_BYTES - pending.len());
                    pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if pending.len() == MESSAGE_BYTES {
                        let data =
                            std::mem::replace(&mut pending, Vec::with_capacity(MESSAGE_BYTES));
                        if tx.send(Ok(wrap(data))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Some(Err(error)) => {
                let status = ServiceError::Storage(StoreError::Unavailable(error.to_string()));
                let _ = tx.send(Err(status.into())).await;
                return;
            }
            None => break,
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(Ok(wrap(pending))).await;
    }
}
