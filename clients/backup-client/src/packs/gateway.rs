//! The device's connection to the blob gateway's pack API
//! (`e2ebackup.storage.v3`): the same TLS channels, bearer token and retry
//! policy as the v2 [`GatewayClient`](crate::gateway::GatewayClient), and
//! the same [`GatewayError`]s. Packs go up and come down in messages of at
//! most 1 MiB; a download is bounded by the length the caller expects, so a
//! replaced object cannot fill the device's memory.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use account_token::BearerToken;
use e2eb_proto::storage::v3::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v3::{
    CommitRequest, CommitResponse, DeleteBackupRequest, GetBackupRequest, GetBackupResponse,
    GetManifestRequest, GetPackRequest, ListUploadsRequest, PackInfo, PutPackRequest,
    put_pack_request,
};
use futures::StreamExt;
use rpc::retry::{Endpoints, Idempotency};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::pack::PackName;
use crate::gateway::{GatewayError, MAX_MESSAGE_LEN, lazy_channels};

/// Bytes of pack data per upload message (the gateway's limit).
pub const MESSAGE_DATA_LEN: usize = 1024 * 1024;
/// The slowest transfer rate a pack upload or download is given time for:
/// a 16 MiB pack may take 64 s on a poor mobile uplink, more than the
/// per-call deadline of small calls (30 s by default).
const SLOWEST_BYTES_PER_SECOND: u64 = 256 * 1024;
/// The reason metadata of a commit refused for packs the gateway lacks.
const MISSING_PACKS: &str = "missing-packs";

type Inner = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

/// A connection to the gateway's pack API on behalf of one account. Every
/// call is safe to repeat: reads, uploads of an uncommitted pack under its
/// random name, deletes, and a commit conditional on the generation it
/// follows (the gateway accepts a repeat of a commit whose answer was lost).
#[derive(Clone)]
pub struct PackGatewayClient {
    endpoints: Endpoints<Inner>,
}

impl PackGatewayClient {
    /// Connects lazily over TLS, like [`crate::GatewayClient::connect`];
    /// `endpoints` is one URL or several, comma-separated.
    pub fn connect(
        endpoints: &str,
        trust: &rpc::Trust,
        token: BearerToken,
    ) -> Result<Self, GatewayError> {
        let clients = lazy_channels(endpoints, trust)?
            .into_iter()
            .map(|(url, channel)| (url, Self::inner(channel, token.clone())))
            .collect();
        Ok(Self {
            endpoints: Endpoints::new(clients, rpc::retry::Retry::default()),
        })
    }

    fn inner(channel: Channel, token: BearerToken) -> Inner {
        BlobGatewayClient::with_interceptor(channel, token)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
    }

    /// This client with another retry policy and counters.
    pub fn with_retry(self, retry: rpc::retry::Retry) -> Self {
        Self {
            endpoints: self.endpoints.with_retry(retry),
        }
    }

    pub fn retry(&self) -> &rpc::retry::Retry {
        self.endpoints.retry()
    }

    async fn call<T, F, Fut>(&self, what: &'static str, attempt: F) -> Result<T, GatewayError>
    where
        F: FnMut(Inner) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        call_on(&self.endpoints, what, attempt).await
    }

    /// The endpoints with a per-attempt deadline long enough to move
    /// `bytes` at [`SLOWEST_BYTES_PER_SECOND`] (never shorter than the
    /// policy's); same counters, clock and current endpoint.
    fn for_transfer(&self, bytes: u64) -> Endpoints<Inner> {
        let mut retry = self.endpoints.retry().clone();
        retry.policy.call_timeout = transfer_deadline(retry.policy.call_timeout, bytes);
        self.endpoints.clone().with_retry(retry)
    }

    /// The committed generation, or `None` when the account has no backup.
    pub async fn get_backup(&self) -> Result<Option<GetBackupResponse>, GatewayError> {
        self.call("GetBackup", |mut inner| async move {
            match inner.get_backup(GetBackupRequest {}).await {
                Ok(response) => Ok(Some(response.into_inner())),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(status),
            }
        })
        .await
    }

    /// The sealed manifest of the committed `generation`, at most
    /// `max_len` bytes (the size [`Self::get_backup`] gave).
    pub async fn get_manifest(
        &self,
        generation: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, GatewayError> {
        self.call("GetManifest", |mut inner| async move {
            let mut stream = inner
                .get_manifest(GetManifestRequest { generation })
                .await?
                .into_inner();
            let mut sealed = Vec::new();
            while let Some(message) = stream.next().await {
                let data = message?.data;
                if (sealed.len() + data.len()) as u64 > max_len {
                    return Ok(Err(GatewayError::Oversized {
                        limit: max_len as usize,
                    }));
                }
                sealed.extend_from_slice(&data);
            }
            Ok(Ok(sealed))
        })
        .await?
    }

    /// Uploads a whole pack under `name`, in messages of at most 1 MiB.
    pub async fn put_pack(&self, name: &PackName, pack: Arc<[u8]>) -> Result<(), GatewayError> {
        let name = name.as_str();
        let endpoints = self.for_transfer(pack.len() as u64);
        call_on(&endpoints, "PutPack", |mut inner| {
            let pack = pack.clone();
            async move {
                let header = PutPackRequest {
                    part: Some(put_pack_request::Part::Header(PackInfo {
                        name: name.to_string(),
                        size: pack.len() as u64,
                    })),
                };
                let pieces = pack.len().div_ceil(MESSAGE_DATA_LEN);
                let data = futures::stream::iter(0..pieces).map(move |i| {
                    let end = pack.len().min((i + 1) * MESSAGE_DATA_LEN);
                    PutPackRequest {
                        part: Some(put_pack_request::Part::Data(
                            pack[i * MESSAGE_DATA_LEN..end].to_vec(),
                        )),
                    }
                });
                let messages = futures::stream::iter([header]).chain(data);
                inner.put_pack(messages).await?;
                Ok(())
            }
        })
        .await
    }

    /// `length` bytes of the pack `name` from `offset` (`length` > 0). An
    /// answer longer than asked is refused as [`GatewayError::Oversized`];
    /// a shorter one is returned as it is (opening it will fail).
    pub async fn get_pack_range(
        &self,
        name: &PackName,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, GatewayError> {
        let name = name.as_str();
        let endpoints = self.for_transfer(length);
        call_on(&endpoints, "GetPack", |mut inner| async move {
            let request = GetPackRequest {
                name: name.to_string(),
                offset,
                length,
            };
            let mut stream = inner.get_pack(request).await?.into_inner();
            let mut out = Vec::with_capacity(length as usize);
            while let Some(message) = stream.next().await {
                let data = message?.data;
                if (out.len() + data.len()) as u64 > length {
                    return Ok(Err(GatewayError::Oversized {
                        limit: length as usize,
                    }));
                }
                out.extend_from_slice(&data);
            }
            Ok(Ok(out))
        })
        .await?
    }

    /// Packs uploaded but referenced by no committed generation.
    pub async fn list_uploads(&self) -> Result<Vec<PackInfo>, GatewayError> {
        self.call("ListUploads", |mut inner| async move {
            Ok(inner
                .list_uploads(ListUploadsRequest {})
                .await?
                .into_inner()
                .packs)
        })
        .await
    }

    /// Commits generation `expected + 1` with its sealed manifest and every
    /// pack it references; `abandoned` uploads are deleted with the replaced
    /// generation's packs. A refusal because another device committed first
    /// is [`GatewayError::Conflict`]; because a referenced pack is gone,
    /// [`GatewayError::NotFound`].
    pub async fn commit(
        &self,
        expected: u64,
        manifest: Vec<u8>,
        packs: Vec<String>,
        abandoned: Vec<String>,
    ) -> Result<CommitResponse, GatewayError> {
        let request = CommitRequest {
            expected_generation: expected,
            manifest,
            packs,
            abandoned,
        };
        let request = &request;
        let outcome = self
            .endpoints
            .call("Commit", Idempotency::Idempotent, |mut inner| async move {
                Ok::<_, Status>(inner.commit(request.clone()).await?.into_inner())
            })
            .await;
        outcome.map_err(|failed| {
            let status = failed.error;
            let missing = status.code() == Code::FailedPrecondition
                && status
                    .metadata()
                    .get("e2eb-reason")
                    .and_then(|v| v.to_str().ok())
                    == Some(MISSING_PACKS);
            if missing {
                GatewayError::NotFound(format!(
                    "packs the commit references are gone ({}); back up again",
                    status.message()
                ))
            } else {
                status.into()
            }
        })
    }

    /// Deletes everything of the account; returns how many objects went.
    pub async fn delete_backup(&self) -> Result<u64, GatewayError> {
        self.call("DeleteBackup", |mut inner| async move {
            Ok(inner
                .delete_backup(DeleteBackupRequest {})
                .await?
                .into_inner()
                .deleted_objects)
        })
        .await
    }
}

async fn call_on<T, F, Fut>(
    endpoints: &Endpoints<Inner>,
    what: &'static str,
    attempt: F,
) -> Result<T, GatewayError>
where
    F: FnMut(Inner) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    endpoints
        .call(what, Idempotency::Idempotent, attempt)
        .await
        .map_err(|failed| failed.error.into())
}

/// The deadline of one attempt to move `bytes`: `base`, or the time
/// `bytes` take at [`SLOWEST_BYTES_PER_SECOND`] when that is longer.
fn transfer_deadline(base: Duration, bytes: u64) -> Duration {
    base.max(Duration::from_secs(
        bytes.div_ceil(SLOWEST_BYTES_PER_SECOND),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_transfers_get_a_longer_deadline_small_ones_the_policys() {
        let base = Duration::from_secs(30);
        assert_eq!(transfer_deadline(base, 1024), base);
        assert_eq!(transfer_deadline(base, 16 << 20), Duration::from_secs(64));
        assert_eq!(
            transfer_deadline(Duration::from_secs(120), 16 << 20),
            Duration::from_secs(120)
        );
    }
}
