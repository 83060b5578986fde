//! The device's connection to the blob gateway: one authenticated gRPC
//! channel, streamed uploads and downloads, and gRPC statuses turned into
//! [`GatewayError`]s that say what to do.

use std::fmt;
use std::time::Duration;

use e2eb_proto::storage::v1::blob_gateway_client::BlobGatewayClient;
use e2eb_proto::storage::v1::{
    CommitBackupRequest, DeleteBackupRequest, DownloadBlobRequest, GetBackupRequest,
    GetBackupResponse, UploadBlobRequest, UploadHeader, upload_blob_request,
};
use futures::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use zeroize::Zeroizing;

/// Bytes of blob data per gRPC message; well under the gateway's limit.
pub const MESSAGE_DATA_LEN: usize = 1024 * 1024;
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
    #[error("the blob gateway refused the size ({0})")]
    TooLarge(String),
    #[error("the blob gateway refused the request ({0})")]
    Invalid(String),
    #[error("the blob gateway failed unexpectedly ({0})")]
    Internal(String),
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
        GatewayError::Unavailable(error.to_string())
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Zeroizing<String>);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = format!("Bearer {}", self.0.as_str())
            .parse()
            .map_err(|_| Status::invalid_argument("account token is not valid header text"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

type Inner = BlobGatewayClient<InterceptedService<Channel, BearerToken>>;

/// A connection to the blob gateway on behalf of one account.
#[derive(Clone)]
pub struct GatewayClient {
    inner: Inner,
}

/// The committed backup as the gateway describes it.
pub type BackupListing = GetBackupResponse;

impl GatewayClient {
    /// Connects lazily: the first call opens the connection, so a gateway
    /// that is down shows up as [`GatewayError::Unavailable`] on that call.
    pub fn connect(endpoint: &str, token: BearerToken) -> Result<Self, GatewayError> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| GatewayError::Invalid(format!("gateway endpoint {endpoint}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // HTTP/2's default 64 KiB windows cap a stream at one window per
            // round trip; backups move megabytes.
            .initial_stream_window_size(Some(WINDOW_BYTES))
            .initial_connection_window_size(Some(2 * WINDOW_BYTES))
            .connect_lazy();
        Ok(Self::with_channel(channel, token))
    }

    pub fn with_channel(channel: Channel, token: BearerToken) -> Self {
        Self {
            inner: BlobGatewayClient::with_interceptor(channel, token)
                .max_decoding_message_size(2 * MESSAGE_DATA_LEN + 1024),
        }
    }

    /// The committed backup, or `None` when the account has none.
    pub async fn get_backup(&self) -> Result<Option<BackupListing>, GatewayError> {
        match self.inner.clone().get_backup(GetBackupRequest {}).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Uploads one blob of `size` bytes, given as a stream of pieces.
    pub async fn upload_blob<S>(
        &self,
        backup_id: &str,
        name: &str,
        size: u64,
        data: S,
    ) -> Result<(), GatewayError>
    where
        S: Stream<Item = Vec<u8>> + Send + 'static,
    {
        let header = UploadBlobRequest {
            part: Some(upload_blob_request::Part::Header(UploadHeader {
                backup_id: backup_id.to_string(),
                name: name.to_string(),
                size,
            })),
        };
        let messages =
            futures::stream::once(async { header }).chain(data.map(|piece| UploadBlobRequest {
                part: Some(upload_blob_request::Part::Data(piece)),
            }));
        self.inner.clone().upload_blob(messages).await?;
        Ok(())
    }

    /// Streams one blob of the committed backup.
    pub async fn download_blob(
        &self,
        backup_id: &str,
        name: &str,
    ) -> Result<impl Stream<Item = Result<Vec<u8>, GatewayError>> + use<>, GatewayError> {
        let stream = self
            .inner
            .clone()
            .download_blob(DownloadBlobRequest {
                backup_id: backup_id.to_string(),
                name: name.to_string(),
            })
            .await?
            .into_inner();
        Ok(stream.map(|message| message.map(|m| m.data).map_err(GatewayError::from)))
    }

    /// Makes `backup_id` the committed backup, replacing `replaces` (or none).
    pub async fn commit_backup(
        &self,
        backup_id: &str,
        replaces: Option<&str>,
    ) -> Result<u64, GatewayError> {
        let response = self
            .inner
            .clone()
            .commit_backup(CommitBackupRequest {
                backup_id: backup_id.to_string(),
                replaces_backup_id: replaces.unwrap_or_default().to_string(),
            })
            .await?;
        Ok(response.into_inner().deleted_blobs)
    }

    /// Deletes the account's backup; returns how many blobs went.
    pub async fn delete_backup(&self) -> Result<u64, GatewayError> {
        let response = self
            .inner
            .clone()
            .delete_backup(DeleteBackupRequest {})
            .await?;
        Ok(response.into_inner().deleted_blobs)
    }
}
