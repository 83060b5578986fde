//! The device's connection to the blob gateway (`e2ebackup.storage.v2`):
//! one authenticated gRPC channel (TLS and tokens from the shared `rpc` and
//! `account-token` pieces), chunk uploads and downloads, commits, and gRPC
//! statuses turned into [`GatewayError`]s that say what to do.

use std::collections::HashSet;

pub use account_token::BearerToken;
use e2eb_proto::storage::v2::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v2::{
    ChunkHeader, CommitRequest, CommitResponse, DeleteBackupRequest, GetBackupRequest,
    GetBackupResponse, GetChunkRequest, GetManifestRequest, HasChunksRequest, PutChunkRequest,
    put_chunk_request,
};
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Bytes of chunk data per gRPC message; well under the gateway's limit.
pub const MESSAGE_DATA_LEN: usize = 1024 * 1024;
/// Largest message the client accepts (a manifest of a large device).
const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
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

type Inner = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

/// Most chunk ids per `HasChunks` call.
pub const HAS_CHUNKS_BATCH: usize = 1000;

/// A connection to the blob gateway on behalf of one account.
#[derive(Clone)]
pub struct GatewayClient {
    inner: Inner,
}

impl GatewayClient {
    /// Connects lazily over TLS to a server whose certificate `trust`
    /// accepts: the first call opens the connection, so a gateway that is
    /// down shows up as [`GatewayError::Unavailable`] on that call.
    pub fn connect(
        endpoint: &str,
        trust: &rpc::Trust,
        token: BearerToken,
    ) -> Result<Self, GatewayError> {
        let options = rpc::ChannelOptions {
            // HTTP/2's default 64 KiB windows cap a stream at one window per
            // round trip; backups move megabytes.
            stream_window_bytes: Some(WINDOW_BYTES),
            connection_window_bytes: Some(2 * WINDOW_BYTES),
            ..rpc::ChannelOptions::default()
        };
        let channel = rpc::endpoint(endpoint, trust, &options)?.connect_lazy();
        Ok(Self::with_channel(channel, token))
    }

    pub fn with_channel(channel: Channel, token: BearerToken) -> Self {
        Self {
            inner: BlobGatewayClient::with_interceptor(channel, token)
                .max_decoding_message_size(MAX_MESSAGE_LEN),
        }
    }

    /// The committed generation, or `None` when the account has no backup.
    pub async fn get_backup(&self) -> Result<Option<GetBackupResponse>, GatewayError> {
        match self.inner.clone().get_backup(GetBackupRequest {}).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// The sealed manifest of the committed `generation`.
    pub async fn get_manifest(&self, generation: u64) -> Result<Vec<u8>, GatewayError> {
        let response = self
            .inner
            .clone()
            .get_manifest(GetManifestRequest { generation })
            .await?;
        Ok(response.into_inner().manifest)
    }

    /// Which of `ids` the gateway already holds.
    pub async fn has_chunks(&self, ids: &[String]) -> Result<HashSet<String>, GatewayError> {
        let mut present = HashSet::new();
        for batch in ids.chunks(HAS_CHUNKS_BATCH) {
            let response = self
                .inner
                .clone()
                .has_chunks(HasChunksRequest {
                    chunk_ids: batch.to_vec(),
                })
                .await?;
            present.extend(response.into_inner().present);
        }
        Ok(present)
    }

    /// Uploads one sealed chunk; `false` when the gateway already held it.
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
        let response = self
            .inner
            .clone()
            .put_chunk(futures::stream::iter(messages))
            .await?;
        Ok(response.into_inner().stored)
    }

    /// Downloads one sealed chunk whole (chunks are at most a few hundred KiB).
    /// Downloads a sealed chunk of at most `max_len` bytes (its size is
    /// known from the manifest): a longer answer is stopped as soon as it
    /// passes the bound, so a replaced object cannot fill the device's memory.
    pub async fn get_chunk(&self, id: &str, max_len: usize) -> Result<Vec<u8>, GatewayError> {
        let mut stream = self
            .inner
            .clone()
            .get_chunk(GetChunkRequest {
                chunk_id: id.to_string(),
            })
            .await?
            .into_inner();
        let mut sealed = Vec::new();
        while let Some(message) = stream.next().await {
            let data = message?.data;
            if sealed.len() + data.len() > max_len {
                return Err(GatewayError::Oversized { limit: max_len });
            }
            sealed.extend_from_slice(&data);
        }
        Ok(sealed)
    }

    /// Commits generation `expected + 1`, conditional on `expected` being
    /// the committed one (0: none).
    pub async fn commit(
        &self,
        expected: u64,
        manifest: Vec<u8>,
        chunk_ids: Vec<String>,
    ) -> Result<CommitResponse, GatewayError> {
        let response = self
            .inner
            .clone()
            .commit(CommitRequest {
                expected_generation: expected,
                manifest,
                chunk_ids,
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Deletes everything of the account; returns how many objects went.
    pub async fn delete_backup(&self) -> Result<u64, GatewayError> {
        let response = self
            .inner
            .clone()
            .delete_backup(DeleteBackupRequest {})
            .await?;
        Ok(response.into_inner().deleted_objects)
    }
}
