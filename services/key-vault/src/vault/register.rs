//! Registration: RegisterStart evaluates the OPRF under a fresh
//! registration's key and keeps nothing; RegisterFinish stores the record,
//! or replaces it (password change) given proof of the password or the key.

use account_token::AccountId;
use tracing::{Span, info, instrument};
use vault_suite::Suite;
use vault_suite::opaque_ke::{RegistrationRequest, RegistrationUpload, ServerRegistration};

use super::{Proof, Vault, credential_identifier, exact, random16};
use crate::error::VaultError;
use crate::store::{Record, RecordState};

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
    pub key_proof_verifier: Vec<u8>,
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
        if let Some(RecordState::Erased) = self.store.get_record(account.as_str()).await? {
            return Err(VaultError::KeyErased);
        }
        let registration_id = random16();
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

    /// OPAQUE registration upload plus the sealed key: creates the record,
    /// or replaces the active one given `authorization`.
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
        let key_proof_verifier = exact::<{ vault_suite::KEY_PROOF_VERIFIER_LEN }>(
            &finish.key_proof_verifier,
            "key_proof_verifier",
        )?;
        let registration_id = exact::<{ vault_suite::REGISTRATION_ID_LEN }>(
            &finish.registration_id,
            "registration_id",
        )?;

        let record = Record {
            version: random16(),
            registration_id,
            opaque_record: ServerRegistration::finish(upload).serialize().to_vec(),
            sealed_key: finish.sealed_key,
            key_proof_verifier,
            guesses: 0,
        };
        let now = self.now_ms();
        match self.store.get_record(account.as_str()).await? {
            None => {
                if !self
                    .store
                    .create_record(account.as_str(), record, now)
                    .await?
                {
                    // Another registration won the race; this one had no proof.
                    return Err(VaultError::RecordChanged);
                }
                Span::current().record("replaced", false);
                info!("vault record created");
            }
            Some(RecordState::Erased) => return Err(VaultError::KeyErased),
            Some(RecordState::Active(current)) => {
                self.authorize(account, &current, finish.authorization)
                    .await?;
                if !self
                    .store
                    .replace_record(account.as_str(), current.version, record, now)
                    .await?
                {
                    return Err(VaultError::RecordChanged);
                }
                Span::current().record("replaced", true);
                info!("vault record replaced; guesses reset");
            }
        }
        Ok(())
    }
}
