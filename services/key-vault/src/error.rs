//! The vault's errors and their one mapping to gRPC statuses. Every
//! FAILED_PRECONDITION carries `e2eb-reason` metadata (values in
//! `vault_suite::REASON_*`) so clients branch on a constant, not a message.

use tonic::Status;
use tonic::metadata::MetadataValue;
use tracing::{error, warn};
use vault_suite::{
    REASON_CHALLENGE_UNKNOWN, REASON_KEY_ERASED, REASON_METADATA_KEY, REASON_NO_PASSWORD,
    REASON_POINTER_STALE, REASON_PROOF_REQUIRED, REASON_RECORD_CHANGED, REASON_SESSION_EXPIRED,
    REASON_SESSION_UNKNOWN,
};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("this account has no vault record; enable backups first")]
    NotFound,
    #[error("this account has no backup password: it uses a 64-digit key")]
    NoPassword,
    #[error(
        "the backup key was erased after too many wrong password guesses; the backup can no \
         longer be recovered with a password (or at all, without the 64-digit key). Start over: \
         delete the record with start_over and enable backups anew"
    )]
    KeyErased,
    #[error(
        "this account already has a vault record; changing or deleting it needs authorization: \
         a login ticket from a successful login, or a signature with the backup key"
    )]
    ProofRequired,
    #[error(
        "no login session with this id for this account (never started, already finished, or \
         expired and purged); start the login again"
    )]
    UnknownSession,
    #[error(
        "the login session expired before it was finished; start the login again (the guess stays counted)"
    )]
    SessionExpired,
    #[error("the vault record was replaced or deleted while this call was in flight; start again")]
    RecordChanged,
    #[error(
        "the signature does not verify under the backup key registered for this account \
         (another key, or another operation, account or challenge)"
    )]
    BadKeySignature,
    #[error(
        "the challenge is unknown, already used or expired; ask for a new challenge and sign again"
    )]
    ChallengeUnknown,
    #[error("the backup pointer update does not follow the stored pointer: {0}; re-read it")]
    PointerStale(String),
    #[error(
        "the vault's stored record for this account failed its integrity check: it was edited \
         outside the vault. The vault refuses to use it; the operator must restore it (or the \
         account start over)"
    )]
    TamperedRecord,
    #[error(
        "the login ticket is unknown, already used, expired, or from before the record last changed; log in again"
    )]
    InvalidTicket,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A vault bug or corrupted state: never the caller's fault.
    #[error("internal vault error: {0}")]
    Internal(&'static str),
}

fn with_reason(code: tonic::Code, message: String, reason: &'static str) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(REASON_METADATA_KEY, MetadataValue::from_static(reason));
    status
}

impl From<VaultError> for Status {
    fn from(error: VaultError) -> Self {
        use tonic::Code::FailedPrecondition;
        let message = error.to_string();
        match error {
            VaultError::InvalidArgument(_) => Status::invalid_argument(message),
            VaultError::NotFound => Status::not_found(message),
            VaultError::NoPassword => {
                with_reason(tonic::Code::NotFound, message, REASON_NO_PASSWORD)
            }
            VaultError::KeyErased => with_reason(FailedPrecondition, message, REASON_KEY_ERASED),
            VaultError::ProofRequired => {
                with_reason(FailedPrecondition, message, REASON_PROOF_REQUIRED)
            }
            VaultError::UnknownSession => {
                with_reason(FailedPrecondition, message, REASON_SESSION_UNKNOWN)
            }
            VaultError::SessionExpired => {
                with_reason(FailedPrecondition, message, REASON_SESSION_EXPIRED)
            }
            VaultError::RecordChanged => {
                with_reason(FailedPrecondition, message, REASON_RECORD_CHANGED)
            }
            VaultError::ChallengeUnknown => {
                with_reason(FailedPrecondition, message, REASON_CHALLENGE_UNKNOWN)
            }
            VaultError::PointerStale(_) => {
                with_reason(FailedPrecondition, message, REASON_POINTER_STALE)
            }
            VaultError::BadKeySignature | VaultError::InvalidTicket => {
                Status::permission_denied(message)
            }
            VaultError::TamperedRecord => Status::data_loss(message),
            VaultError::Store(store) if store.is_transient() => {
                warn!(error = %store, "vault record store unavailable");
                Status::unavailable(message)
            }
            VaultError::Store(store) => {
                error!(error = %store, "vault database failure");
                Status::internal("the vault database failed; see the vault log")
            }
            VaultError::Internal(what) => {
                error!(error = what, "vault bug or corrupted state");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_erased_is_failed_precondition_with_reason() {
        let status = Status::from(VaultError::KeyErased);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.metadata().get("e2eb-reason").unwrap(), "key-erased");
        assert!(status.message().contains("too many wrong password guesses"));
    }

    #[test]
    fn codes_follow_the_proto() {
        let cases = [
            (
                VaultError::InvalidArgument("x".into()),
                tonic::Code::InvalidArgument,
            ),
            (VaultError::NotFound, tonic::Code::NotFound),
            (VaultError::NoPassword, tonic::Code::NotFound),
            (
                VaultError::ChallengeUnknown,
                tonic::Code::FailedPrecondition,
            ),
            (
                VaultError::PointerStale("x".into()),
                tonic::Code::FailedPrecondition,
            ),
            (VaultError::TamperedRecord, tonic::Code::DataLoss),
            (VaultError::BadKeySignature, tonic::Code::PermissionDenied),
            (VaultError::ProofRequired, tonic::Code::FailedPrecondition),
            (VaultError::UnknownSession, tonic::Code::FailedPrecondition),
            (VaultError::SessionExpired, tonic::Code::FailedPrecondition),
            (VaultError::RecordChanged, tonic::Code::FailedPrecondition),
            (VaultError::InvalidTicket, tonic::Code::PermissionDenied),
            (
                VaultError::Store(StoreError::Busy),
                tonic::Code::Unavailable,
            ),
            (
                VaultError::Store(StoreError::NoQuorum),
                tonic::Code::Unavailable,
            ),
            (VaultError::Internal("x"), tonic::Code::Internal),
        ];
        for (error, code) in cases {
            let name = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{name}");
            let has_reason = status.metadata().get("e2eb-reason").is_some();
            let reason_expected =
                code == tonic::Code::FailedPrecondition || name.starts_with("NoPassword");
            assert_eq!(has_reason, reason_expected, "{name}");
        }
    }
}
