//! The gateway's errors and their one mapping to gRPC statuses.

use tonic::Status;
use tracing::warn;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("upload declared {declared} bytes but sent {received}")]
    SizeMismatch { declared: u64, received: u64 },
    #[error("this account has no committed backup")]
    NoBackup,
    #[error("chunk of {size} bytes exceeds the gateway's limit of {limit} bytes")]
    ChunkTooLarge { size: u64, limit: u64 },
    #[error("manifest of {size} bytes exceeds the gateway's limit of {limit} bytes")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("{count} chunk ids in one call; at most {limit} are allowed")]
    TooManyIds { count: usize, limit: usize },
    #[error("chunk {0} does not exist")]
    ChunkNotFound(String),
    #[error(
        "generation {requested} is not the committed generation (committed: {committed}); re-read the backup"
    )]
    GenerationNotCommitted { requested: u64, committed: u64 },
    #[error("{}", conflict_message(*.expected, *.committed))]
    GenerationConflict { expected: u64, committed: u64 },
    #[error(
        "commit references {count} chunks the gateway does not hold (upload them and retry): {}{}",
        .sample.join(", "),
        if *.count > .sample.len() { ", ..." } else { "" }
    )]
    MissingChunks { count: usize, sample: Vec<String> },
    #[error(
        "commit needs {needed} bytes (chunks + manifest) but the account's quota is {quota} bytes; nothing was committed"
    )]
    QuotaExceeded { needed: u64, quota: u64 },
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The request stream itself failed (a message over the size limit, a
    /// client that went away); its status is passed on unchanged.
    #[error("request stream failed: {}", .0.message())]
    Stream(Status),
}

fn conflict_message(expected: u64, committed: u64) -> String {
    let now = if committed == 0 {
        "the account has no committed backup (it was deleted)".to_string()
    } else {
        format!("another device committed generation {committed}")
    };
    format!(
        "commit conflict: this commit expected generation {expected} but {now}; re-read the backup and retry"
    )
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        let message = error.to_string();
        match error {
            ServiceError::Stream(status) => status,
            ServiceError::InvalidArgument(_)
            | ServiceError::SizeMismatch { .. }
            | ServiceError::TooManyIds { .. } => Status::invalid_argument(message),
            ServiceError::ChunkTooLarge { .. }
            | ServiceError::ManifestTooLarge { .. }
            | ServiceError::QuotaExceeded { .. } => Status::resource_exhausted(message),
            ServiceError::NoBackup
            | ServiceError::ChunkNotFound(_)
            | ServiceError::GenerationNotCommitted { .. } => Status::not_found(message),
            ServiceError::GenerationConflict { .. } | ServiceError::MissingChunks { .. } => {
                Status::failed_precondition(message)
            }
            ServiceError::Storage(error) => storage_status(&error),
        }
    }
}

/// The status for a storage failure, each kind with its own message and
/// log line: what the user is told and what the operator must do.
pub fn storage_status(error: &StoreError) -> Status {
    match error {
        StoreError::Unavailable(detail) => {
            warn!(%detail, "object storage unreachable or slow");
            Status::unavailable("object storage is unreachable or slow; retry later")
        }
        StoreError::NotFound => Status::not_found("object not found"),
        StoreError::Full(detail) => {
            warn!(%detail, "object storage is full: free space or add capacity; uploads and commits fail until then, committed backups stay readable");
            Status::resource_exhausted(
                "object storage is full; nothing was stored and the committed backup is unchanged",
            )
        }
        StoreError::Denied(detail) => {
            tracing::error!(%detail, "object storage denied access: check the gateway's S3 credentials and the bucket policy");
            Status::internal("object storage denied the gateway access; the operator must fix it")
        }
        StoreError::PreconditionFailed => {
            Status::failed_precondition("a conditional write lost its condition; retry")
        }
        StoreError::InvalidRange => {
            Status::invalid_argument("the requested range is outside the object")
        }
        StoreError::Aborted(detail) => Status::cancelled(format!("upload abandoned: {detail}")),
        StoreError::Other(detail) => {
            warn!(%detail, "storage failure");
            Status::internal("object storage failed; see the gateway log")
        }
    }
}
