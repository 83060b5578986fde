//! The vault's errors and their one mapping to gRPC statuses. Every
//! FAILED_PRECONDITION carries `e2eb-reason` metadata (values in
//! `vault_suite::REASON_*`) so clients branch on a constant, not a message.

use tonic::Status;
use tonic::metadata::MetadataValue;
use tracing::{error, warn};
use vault_suite::{
    REASON_KEY_ERASED, REASON_METADATA_KEY, REASON_PROOF_REQUIRED, REASON_RECORD_CHANGED,
    REASON_SESSION_EXPIRED, REASON_SESSION_UNKNOWN,
};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("this account has no vault record; register first")]
    NotFound,
    #[error(
        "the backup key was erased after too many wrong password guesses; the backup can no \
         longer be recovered with a password (or at all, without the 64-digit key). Start over: \
         delete the record with start_over and enable backups anew"
    )]
    KeyErased,
    #[error(
        "this account already has a vault record; replacing or deleting it needs authorization: \
         a login ticket from a successful login, or the key proof"
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
    #[error("the key proof does not match the one registered with this record")]
    WrongKeyProof,
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
            VaultError::WrongKeyProof | VaultError::InvalidTicket => {
                Status::permission_denied(message)
            }
            VaultError::Store(store) if store.is_transient() => {
                warn!(error = %store, "vault database busy");
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
            (VaultError::ProofRequired, tonic::Code::FailedPrecondition),
            (VaultError::UnknownSession, tonic::Code::FailedPrecondition),
            (VaultError::SessionExpired, tonic::Code::FailedPrecondition),
            (VaultError::RecordChanged, tonic::Code::FailedPrecondition),
            (VaultError::WrongKeyProof, tonic::Code::PermissionDenied),
            (VaultError::InvalidTicket, tonic::Code::PermissionDenied),
            (
                VaultError::Store(StoreError::Busy),
                tonic::Code::Unavailable,
            ),
            (VaultError::Internal("x"), tonic::Code::Internal),
        ];
        for (error, code) in cases {
            let name = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{name}");
            let has_reason = status.metadata().get("e2eb-reason").is_some();
            assert_eq!(
                has_reason,
                code == tonic::Code::FailedPrecondition,
                "{name}"
            );
        }
    }
}
