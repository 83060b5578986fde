//! Enabling backups: RegisterStart evaluates the OPRF under a fresh
//! registration's key and keeps nothing; RegisterFinish stores the password
//! registration with the backup auth key, or replaces the registration
//! (password change) given proof; EnableKeyBackup makes a key-only record.
//! Replacing a registration keeps the account's backup pointer.

use account_token::AccountId;
use tracing::{Span, info, instrument};
use vault_suite::Suite;
use vault_suite::opaque_ke::{RegistrationRequest, RegistrationUpload, ServerRegistration};
use vault_suite::proof::{AUTH_PUBLIC_KEY_LEN, ProofOperation};

use super::proof::Signers;
use super::row::{Account, Registration, RowState};
use super::{Proof, Vault, credential_identifier, exact, random};
use crate::error::VaultError;

/// RegisterStart's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterStarted {
    pub registration_response: Vec<u8>,
    /// Echoed by the client in RegisterFinish.
    pub registration_id: [u8; 16],
}

/// RegisterFinish's input.
#[derive(Debug)]
pub struct RegisterFinish {
    pub registration_upload: Vec<u8>,
    pub sealed_key: Vec<u8>,
    pub auth_public_key: Vec<u8>,
    pub registration_id: Vec<u8>,
    pub authorization: Option<Proof>,
}

impl Vault {
    /// OPAQUE registration, first message. Each call draws a new
    /// registration id, so the OPRF it evaluates is never that of a stored
    /// record: this uncounted call cannot help anyone test a password.
    #[instrument(skip_all, fields(account = %account))]
    pub async fn register_start(
        &self,
        account: &AccountId,
        request: &[u8],
    ) -> Result<RegisterStarted, VaultError> {
        exact::<{ vault_suite::REGISTRATION_REQUEST_LEN }>(request, "registration_request")?;
        let request = RegistrationRequest::<Suite>::deserialize(request).map_err(|_| {
            VaultError::InvalidArgument("registration_request is not a valid OPAQUE message".into())
        })?;
        if let Some((row, _)) = self.read(account).await?
            && row.state == RowState::Erased
        {
            return Err(VaultError::KeyErased);
        }
        let registration_id = random::<16>();
        let started = ServerRegistration::<Suite>::start(
            self.secrets.setup(),
            request,
            &credential_identifier(account, &registration_id),
        )
        .map_err(|_| {
            VaultError::InvalidArgument("registration_request was rejected by OPAQUE".into())
        })?;
        Ok(RegisterStarted {
            registration_response: started.message.serialize().to_vec(),
            registration_id,
        })
    }

    /// OPAQUE registration upload, the sealed key and the backup auth key:
    /// creates the record, or replaces the registration given proof.
    #[instrument(skip_all, fields(account = %account, replaced))]
    pub async fn register_finish(
        &self,
        account: &AccountId,
        finish: RegisterFinish,
    ) -> Result<(), VaultError> {
        exact::<{ vault_suite::REGISTRATION_UPLOAD_LEN }>(
            &finish.registration_upload,
            "registration_upload",
        )?;
        let upload = RegistrationUpload::<Suite>::deserialize(&finish.registration_upload)
            .map_err(|_| {
                VaultError::InvalidArgument(
                    "registration_upload is not a valid OPAQUE message".into(),
                )
            })?;
        if finish.sealed_key.is_empty() || finish.sealed_key.len() > vault_suite::MAX_SEALED_KEY_LEN
        {
            return Err(VaultError::InvalidArgument(format!(
                "sealed_key must be 1 to {} bytes, not {}",
                vault_suite::MAX_SEALED_KEY_LEN,
                finish.sealed_key.len()
            )));
        }
        let auth_public_key =
            exact::<AUTH_PUBLIC_KEY_LEN>(&finish.auth_public_key, "auth_public_key")?;
        let registration_id = exact::<{ vault_suite::REGISTRATION_ID_LEN }>(
            &finish.registration_id,
            "registration_id",
        )?;
        let registration = Registration {
            version: random(),
            registration_id,
            opaque_record: ServerRegistration::finish(upload).serialize().to_vec(),
            sealed_key: finish.sealed_key,
            guesses: 0,
        };
        let operation = ProofOperation::Register {
            registration_id: &registration_id,
            auth_public_key: &auth_public_key,
        };
        let replaced = self
            .create_or_replace(account, finish.authorization, operation, |current| {
                Account {
                    auth_public_key,
                    registration: Some(registration.clone()),
                    committed: current.and_then(|c| c.committed),
                    pending: current.and_then(|c| c.pending),
                }
            })
            .await?;
        Span::current().record("replaced", replaced);
        self.metrics.registrations.inc();
        info!(replaced, "password registration stored");
        Ok(())
    }

    /// A key-only record: the backup auth key and the pointer, no password.
    #[instrument(skip_all, fields(account = %account, replaced))]
    pub async fn enable_key_backup(
        &self,
        account: &AccountId,
        auth_public_key: &[u8],
        authorization: Option<Proof>,
    ) -> Result<(), VaultError> {
        let auth_public_key = exact::<AUTH_PUBLIC_KEY_LEN>(auth_public_key, "auth_public_key")?;
        let operation = ProofOperation::EnableKey {
            auth_public_key: &auth_public_key,
        };
        let replaced = self
            .create_or_replace(account, authorization, operation, |current| Account {
                auth_public_key,
                registration: None,
                committed: current.and_then(|c| c.committed),
                pending: current.and_then(|c| c.pending),
            })
            .await?;
        Span::current().record("replaced", replaced);
        self.metrics.registrations.inc();
        info!(replaced, "key-only record stored");
        Ok(())
    }

    /// Creates the account's record from `make(None)`, or — with proof for
    /// `operation` — replaces it with `make(Some(current))`. True when it
    /// replaced one. Replacing a password registration scrubs the old one.
    async fn create_or_replace(
        &self,
        account: &AccountId,
        authorization: Option<Proof>,
        operation: ProofOperation<'_>,
        make: impl Fn(Option<&Account>) -> Account,
    ) -> Result<bool, VaultError> {
        match self.read(account).await? {
            None => {
                let state = RowState::Active(make(None));
                if self.write(account, None, state, None, false).await? {
                    Ok(false)
                } else {
                    // Another registration won the race; this one had no proof.
                    Err(VaultError::RecordChanged)
                }
            }
            Some((row, revision)) => {
                let RowState::Active(current) = &row.state else {
                    return Err(VaultError::KeyErased);
                };
                self.authorize(
                    account,
                    current,
                    authorization,
                    operation,
                    Signers::Registered,
                )
                .await?;
                let state = RowState::Active(make(Some(current)));
                if self
                    .write(account, Some(&row), state, Some(revision), true)
                    .await?
                {
                    Ok(true)
                } else {
                    Err(VaultError::RecordChanged)
                }
            }
        }
    }
}
