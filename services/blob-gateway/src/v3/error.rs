//! The v3 service's errors and their one mapping to gRPC statuses, with
//! the `e2eb-reason` metadata the proto names.

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::error::storage_status;
use crate::objects::StoreError;

/// The metadata key that tells one FAILED_PRECONDITION from another.
pub const REASON: &str = "e2eb-reason";

#[derive(Debug, thiserror::Error)]
pub enum V3Error {
    #[error("{0}")]
    Malformed(String),
    #[error("{what} of {size} bytes is not a padded (Padme) size; pad it with padme::padded_len")]
    NotPadded { what: &'static str, size: u64 },
    #[error("upload declared {declared} bytes but sent {received}; nothing was stored")]
    SizeMismatch { declared: u64, received: u64 },
    #[error(
        "a data message of {size} bytes exceeds the limit of {limit} bytes; send at most 1 MiB per message"
    )]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("pack of {size} bytes exceeds the gateway's limit of {limit} bytes")]
    PackTooLarge { size: u64, limit: u64 },
    #[error("manifest of {size} bytes exceeds the gateway's limit of {limit} bytes")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("{count} packs in one commit; at most {limit} are allowed")]
    TooManyPacks { count: usize, limit: usize },
    #[error(
        "the account would hold {needed} bytes (committed and uncommitted packs + manifest) but its quota is {quota} bytes; nothing was stored"
    )]
    QuotaExceeded { needed: u64, quota: u64 },
    #[error("this account has no committed backup")]
    NoBackup,
    #[error("pack {0} does not exist")]
    PackNotFound(String),
    #[error("range {offset}+{length} lies outside pack of {size} bytes")]
    RangeOutside { offset: u64, length: u64, size: u64 },
    #[error(
        "generation {requested} is not the committed generation (committed: {committed}); re-read the backup"
    )]
    GenerationNotCommitted { requested: u64, committed: u64 },
    #[error("commit conflict: this commit expected generation {expected} but {}; re-read the backup and retry", now(*.committed))]
    GenerationConflict { expected: u64, committed: u64 },
    #[error(
        "commit references {count} packs the gateway does not hold (upload them and retry): {}{}",
        .sample.join(", "),
        if *.count > .sample.len() { ", ..." } else { "" }
    )]
    MissingPacks { count: usize, sample: Vec<String> },
    #[error(
        "pack {0} belongs to the committed generation and cannot be replaced; upload it under a new name"
    )]
    PackCommitted(String),
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The request stream itself failed; its status is passed on.
    #[error("request stream failed: {}", .0.message())]
    Stream(Status),
}

fn now(committed: u64) -> String {
    if committed == 0 {
        "the account has no committed backup".to_string()
    } else {
        format!("generation {committed} is committed (another device or gateway won)")
    }
}

fn with_reason(mut status: Status, reason: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(REASON, MetadataValue::from_static(reason));
    status
}

impl From<V3Error> for Status {
    fn from(error: V3Error) -> Self {
        let message = error.to_string();
        match error {
            V3Error::Stream(status) => status,
            V3Error::Malformed(_)
            | V3Error::NotPadded { .. }
            | V3Error::SizeMismatch { .. }
            | V3Error::RangeOutside { .. } => Status::invalid_argument(message),
            V3Error::MessageTooLarge { .. }
            | V3Error::PackTooLarge { .. }
            | V3Error::ManifestTooLarge { .. }
            | V3Error::TooManyPacks { .. }
            | V3Error::QuotaExceeded { .. } => Status::resource_exhausted(message),
            V3Error::NoBackup
            | V3Error::PackNotFound(_)
            | V3Error::GenerationNotCommitted { .. } => Status::not_found(message),
            V3Error::GenerationConflict { .. } => {
                with_reason(Status::failed_precondition(message), "generation-conflict")
            }
            V3Error::MissingPacks { .. } => {
                with_reason(Status::failed_precondition(message), "missing-packs")
            }
            V3Error::PackCommitted(_) => {
                with_reason(Status::failed_precondition(message), "pack-committed")
            }
            V3Error::Storage(error) => storage_status(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn reason(status: &Status) -> Option<&str> {
        status.metadata().get(REASON).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn every_error_has_its_status_and_reason() {
        let cases: Vec<(V3Error, Code, Option<&str>)> = vec![
            (V3Error::Malformed("x".into()), Code::InvalidArgument, None),
            (
                V3Error::NotPadded {
                    what: "pack",
                    size: 1001,
                },
                Code::InvalidArgument,
                None,
            ),
            (
                V3Error::SizeMismatch {
                    declared: 2,
                    received: 1,
                },
                Code::InvalidArgument,
                None,
            ),
            (
                V3Error::MessageTooLarge { size: 2, limit: 1 },
                Code::ResourceExhausted,
                None,
            ),
            (
                V3Error::PackTooLarge { size: 2, limit: 1 },
                Code::ResourceExhausted,
                None,
            ),
            (
                V3Error::QuotaExceeded {
                    needed: 2,
                    quota: 1,
                },
                Code::ResourceExhausted,
                None,
            ),
            (V3Error::NoBackup, Code::NotFound, None),
            (V3Error::PackNotFound("p".into()), Code::NotFound, None),
            (
                V3Error::GenerationConflict {
                    expected: 1,
                    committed: 2,
                },
                Code::FailedPrecondition,
                Some("generation-conflict"),
            ),
            (
                V3Error::MissingPacks {
                    count: 1,
                    sample: vec!["p".into()],
                },
                Code::FailedPrecondition,
                Some("missing-packs"),
            ),
            (
                V3Error::Storage(StoreError::Unavailable("t".into())),
                Code::Unavailable,
                None,
            ),
            (
                V3Error::Storage(StoreError::Full("507".into())),
                Code::ResourceExhausted,
                None,
            ),
            (
                V3Error::Storage(StoreError::Denied("403".into())),
                Code::Internal,
                None,
            ),
        ];
        for (error, code, expected_reason) in cases {
            let text = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(reason(&status), expected_reason, "{text}");
        }
        let full = Status::from(V3Error::Storage(StoreError::Full("x".into())));
        assert!(
            full.message().contains("object storage is full"),
            "{full:?}"
        );
        let down = Status::from(V3Error::Storage(StoreError::Unavailable("x".into())));
        assert!(down.message().contains("retry"), "{down:?}");
    }
}
