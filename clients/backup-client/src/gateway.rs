//! The device's connection to the blob gateway (`e2ebackup.storage.v2`):
//! authenticated gRPC channels to one or more gateway endpoints (TLS, tokens
//! and the retry policy from the shared `rpc` and `account-token` pieces),
//! chunk uploads and downloads, commits, and gRPC statuses turned into
//! [`GatewayError`]s that say what to do.

use std::collections::HashSet;
use std::future::Future;

pub use account_token::BearerToken;
use e2eb_proto::storage::v2::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v2::{
    ChunkHeader, CommitRequest, CommitResponse, DeleteBackupRequest, GetBackupRequest,
    GetBackupResponse, GetChunkRequest, GetManifestRequest, HasChunksRequest, PutChunkRequest,
    put_chunk_request,
};
use futures::StreamExt;
use rpc::retry::{Endpoints, Idempotency};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Bytes of chunk data per gRPC message; well under the gateway's limit.
pub const MESSAGE_DATA_LEN: usize = 1024 * 1024;
/// Largest message the client accepts (a manifest of a large device).
pub(crate) const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
/// HTTP/2 flow-control window per stream.
const WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// A gateway failure, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the blob gateway is unreachable or its storage is down ({0}); retry later")]
    Unavailable(String),
    #[error("the blob gateway refused the account token ({0}); get a new token")]
    Unauthenticated(String),
    #[error("the blob gateway denied access ({0})")]
    PermissionDenied(String),
    #[error("not found at the blob gateway: {0}")]
    NotFound(String),
    #[error("the backup changed at the gateway while this device worked ({0}); start again")]
    Conflict(String),
    #[error("the blob gateway refused: over a size limit or the account's quota ({0})")]
    TooLarge(String),
    #[error(
        "the blob gateway sent more than the {limit} bytes the backup's manifest allows for this \
         object: the stored object was replaced or damaged"
    )]
    Oversized { limit: usize },
    #[error("the blob gateway refused the request ({0})")]
    Invalid(String),
    #[error("the blob gateway failed unexpectedly ({0})")]
    Internal(String),
    #[error("cannot set up the connection to the blob gateway: {0}")]
    Connect(#[from] rpc::ClientSetupError),
    #[error(
        "the blob gateway's TLS certificate is not trusted ({0}); check the CA this device trusts (--tls-ca)"
    )]
    UntrustedServer(String),
}

impl GatewayError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, GatewayError::Unavailable(_))
    }
}

/// Whether a status was made on this side from a broken connection (a
/// server that died mid-call) rather than sent by the server: tonic reports
/// those as `Unknown` with the transport error as its source.
pub(crate) fn is_connection_failure(status: &Status) -> bool {
    status.code() == Code::Unknown && std::error::Error::source(status).is_some()
}

impl From<Status> for GatewayError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        if let Some(reason) = rpc::client::untrusted_server(&status) {
            return GatewayError::UntrustedServer(reason);
        }
        if is_connection_failure(&status) {
            return GatewayError::Unavailable(message);
        }
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                GatewayError::Unavailable(message)
            }
            Code::Unauthenticated => GatewayError::Unauthenticated(message),
            Code::PermissionDenied => GatewayError::PermissionDenied(message),
            Code::NotFound => GatewayError::NotFound(message),
            Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => {
                GatewayError::Conflict(message)
            }
            Code::ResourceExhausted | Code::OutOfRange => GatewayError::TooLarge(message),
            Code::InvalidArgument => GatewayError::Invalid(message),
            _ => GatewayError::Internal(format!("{:?}: {message}", status.code())),
        }
    }
}

impl From<tonic::transport::Error> for GatewayError {
    fn from(error: tonic::transport::Error) -> Self {
        match rpc::client::untrusted_server(&error) {
            Some(reason) => GatewayError::UntrustedServer(reason),
            None => GatewayError::Unavailable(error.to_string()),
        }
    }
}

/// Lazy TLS channels to each gateway endpoint of a comma-separated list,
/// with flow-control windows sized for backups; shared by the v2 and the
/// v3 ([`crate::packs::gateway`]) clients.
pub(crate) fn lazy_channels(
    endpoints: &str,
    trust: &rpc::Trust,
) -> Result<Vec<(String, Channel)>, GatewayError> {
    let options = rpc::ChannelOptions {
        // HTTP/2's default 64 KiB windows cap a stream at one window per
        // round trip; backups move megabytes.
        stream_window_bytes: Some(WINDOW_BYTES),
        connection_window_bytes: Some(2 * WINDOW_BYTES),
        ..rpc::ChannelOptions::default()
    };
    let urls = rpc::retry::split_urls(endpoints);
    if urls.is_empty() {
        return Err(GatewayError::Connect(rpc::ClientSetupError::InvalidUrl {
            url: endpoints.to_string(),
            reason: "no URL in the list".into(),
        }));
    }
    let mut channels = Vec::with_capacity(urls.len());
    for url in urls {
        let channel = rpc::endpoint(&url, trust, &options)?.connect_lazy();
        channels.push((url, channel));
    }
    Ok(channels)
}

type Inner = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

/// Most chunk ids per `HasChunks` call.
pub const HAS_CHUNKS_BATCH: usize = 1000;

/// A connection to the blob gateway on behalf of one account: one or more
/// gateway endpoints, every call through the shared retry policy
/// ([`rpc::retry`]). Every call is safe to repeat: reads, content-addressed
/// chunk writes, deletes, and a commit that is conditional on the
/// generation it follows (a repeated commit that already took effect is
/// recognised by its manifest, see [`GatewayClient::commit`]).
#[derive(Clone)]
pub struct GatewayClient {
    endpoints: Endpoints<Inner>,
}

impl GatewayClient {
    /// Connects lazily over TLS to a server whose certificate `trust`
    /// accepts: the first call opens the connection, so a gateway that is
    /// down shows up as [`GatewayError::Unavailable`] on that call (after
    /// the default retries). `endpoints` is one URL or several,
    /// comma-separated.
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

    /// One channel, the default retry policy.
    pub fn with_channel(channel: Channel, token: BearerToken) -> Self {
        let clients = vec![("channel".to_string(), Self::inner(channel, token))];
        Self {
            endpoints: Endpoints::new(clients, rpc::retry::Retry::default()),
        }
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

    /// The retry policy and counters this client uses.
    pub fn retry(&self) -> &rpc::retry::Retry {
        self.endpoints.retry()
    }

    /// A call safe to repeat, retried per the policy.
    async fn call<T, F, Fut>(&self, what: &'static str, attempt: F) -> Result<T, GatewayError>
    where
        F: FnMut(Inner) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.endpoints
            .call(what, Idempotency::Idempotent, attempt)
            .await
            .map_err(|failed| failed.error.into())
    }

    /// The committed generation, or `None` when the account has no backup.
    pub async fn get_backup(&self) -> Result<Option<GetBackupResponse>, GatewayError> {
        let answer = self
            .call("GetBackup", |mut inner| async move {
                match inner.get_backup(GetBackupRequest {}).await {
                    Ok(response) => Ok(Some(response.into_inner())),
                    Err(status) if status.code() == Code::NotFound => Ok(None),
                    Err(status) => Err(status),
                }
            })
            .await?;
        Ok(answer)
    }

    /// The sealed manifest of the committed `generation`.
    pub async fn get_manifest(&self, generation: u64) -> Result<Vec<u8>, GatewayError> {
        self.call("GetManifest", |mut inner| async move {
            let response = inner
                .get_manifest(GetManifestRequest { generation })
                .await?;
            Ok(response.into_inner().manifest)
        })
        .await
    }

    /// Which of `ids` the gateway already holds.
    pub async fn has_chunks(&self, ids: &[String]) -> Result<HashSet<String>, GatewayError> {
        let mut present = HashSet::new();
        for batch in ids.chunks(HAS_CHUNKS_BATCH) {
            let answer = self
                .call("HasChunks", |mut inner| async move {
                    let request = HasChunksRequest {
                        chunk_ids: batch.to_vec(),
                    };
                    Ok(inner.has_chunks(request).await?.into_inner().present)
                })
                .await?;
            present.extend(answer);
        }
        Ok(present)
    }

    /// Uploads one sealed chunk; `false` when the gateway already held it
    /// (also when an earlier attempt whose answer was lost stored it).
    pub async fn put_chunk(&self, id: &str, sealed: Vec<u8>) -> Result<bool, GatewayError> {
        let header = PutChunkRequest {
            part: Some(put_chunk_request::Part::Header(ChunkHeader {
                chunk_id: id.to_string(),
                size: sealed.len() as u64,
            })),
        };
        let mut messages = vec![header];
        let mut rest = sealed;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(MESSAGE_DATA_LEN));
            messages.push(PutChunkRequest {
                part: Some(put_chunk_request::Part::Data(std::mem::replace(
                    &mut rest, tail,
                ))),
            });
        }
        let messages = &messages;
        self.call("PutChunk", |mut inner| async move {
            let response = inner
                .put_chunk(futures::stream::iter(messages.clone()))
                .await?;
            Ok(response.into_inner().stored)
        })
        .await
    }

    /// Downloads a sealed chunk of at most `max_len` bytes (its size is
    /// known from the manifest): a longer answer is stopped as soon as it
    /// passes the bound, so a replaced object cannot fill the device's memory.
    pub async fn get_chunk(&self, id: &str, max_len: usize) -> Result<Vec<u8>, GatewayError> {
        self.call("GetChunk", |mut inner| async move {
            let request = GetChunkRequest {
                chunk_id: id.to_string(),
            };
            let mut stream = inner.get_chunk(request).await?.into_inner();
            let mut sealed = Vec::new();
            while let Some(message) = stream.next().await {
                let data = message?.data;
                if sealed.len() + data.len() > max_len {
                    // An answer, not a failure: never retried.
                    return Ok(Err(GatewayError::Oversized { limit: max_len }));
                }
                sealed.extend_from_slice(&data);
            }
            Ok(Ok(sealed))
        })
        .await?
    }

    /// Commits generation `expected + 1`, conditional on `expected` being
    /// the committed one (0: none). Repeating it is safe: the condition
    /// stops a second commit. When an attempt's answer was lost and a
    /// repeat then finds generation `expected + 1` committed, the commit is
    /// ours if that generation's manifest is byte for byte this one (a
    /// sealed manifest holds a fresh nonce, so no other device's can match).
    pub async fn commit(
        &self,
        expected: u64,
        manifest: Vec<u8>,
        chunk_ids: Vec<String>,
    ) -> Result<CommitResponse, GatewayError> {
        let (manifest_ref, chunk_ids) = (&manifest, &chunk_ids);
        let outcome = self
            .endpoints
            .call("Commit", Idempotency::Idempotent, |mut inner| async move {
                let request = CommitRequest {
                    expected_generation: expected,
                    manifest: manifest_ref.clone(),
                    chunk_ids: chunk_ids.clone(),
                };
                Ok::<_, Status>(inner.commit(request).await?.into_inner())
            })
            .await;
        let failed = match outcome {
            Ok(response) => return Ok(response),
            Err(failed) => failed,
        };
        let error = GatewayError::from(failed.error);
        if !(failed.maybe_delivered && matches!(error, GatewayError::Conflict(_))) {
            return Err(error);
        }
        let generation = expected + 1;
        match self.get_backup().await? {
            Some(committed)
                if committed.generation == generation
                    && self.get_manifest(generation).await? == manifest =>
            {
                tracing::info!(
                    generation,
                    "a commit whose answer was lost had taken effect"
                );
                Ok(CommitResponse {
                    generation,
                    deleted_chunks: 0,
                    stored_bytes: committed.stored_bytes,
                })
            }
            _ => Err(error),
        }
    }

    /// Deletes everything of the account; returns how many objects went.
    pub async fn delete_backup(&self) -> Result<u64, GatewayError> {
        self.call("DeleteBackup", |mut inner| async move {
            let response = inner.delete_backup(DeleteBackupRequest {}).await?;
            Ok(response.into_inner().deleted_objects)
        })
        .await
    }
}
