//! Enable backups with a password (first registration) or with the 64-digit
//! key (a key-only record), or change the password (a registration that
//! replaces the record's, with proof; the backup pointer stays).

use e2eb_proto::vault::v2::{EnableKeyBackupRequest, RegisterFinishRequest, RegisterStartRequest};
use rand::rngs::OsRng;
use tracing::info;
use vault_suite::Suite;
use vault_suite::opaque_ke::{
    ClientRegistration, ClientRegistrationFinishParameters, Identifiers, RegistrationResponse,
};

use vault_suite::proof::ProofOperation;

use super::secrets::{Password, seal_root_keys};
use rpc::retry::Idempotency;

use super::{Failed, Proof, VaultClient, VaultError, proof_used_up};
use crate::key::RootKey;

impl VaultClient {
    /// Enables backups with the 64-digit key: a record holding only the
    /// backup auth key and the backup pointer. An existing record (a
    /// password user switching to the key) is replaced given `proof`.
    ///
    /// Safe to repeat: when a first attempt's answer was lost and the
    /// repeat is refused for want of proof (the record now exists, or the
    /// ticket was used), it is made once more with proof of `key` itself,
    /// which holds exactly when the lost attempt took effect.
    pub async fn enable_key_backup(
        &self,
        key: &RootKey,
        proof: Option<Proof<'_>>,
    ) -> Result<(), VaultError> {
        self.verify_vault().await?;
        match self.enable_key_once(key, proof).await {
            Ok(()) => {}
            Err(failed) if failed.maybe_delivered && proof_used_up(&failed.error) => {
                self.enable_key_once(key, Some(Proof::BackupKey(key)))
                    .await
                    .map_err(|_| failed.error)?;
            }
            Err(failed) => return Err(failed.error),
        }
        info!(account = self.account, "key backup enabled in the vault");
        Ok(())
    }

    /// Registers `password` to protect `key` (and signs the pointer with
    /// it). The first registration needs no proof; replacing an existing
    /// one (changing the password) needs a login ticket or the backup key.
    pub async fn register(
        &self,
        password: &Password,
        key: &RootKey,
        proof: Option<Proof<'_>>,
    ) -> Result<(), VaultError> {
        self.register_keys(password, &[key], key, proof).await
    }

    /// Registers `password` to protect `keys`, current first, with
    /// `auth_key`'s public half as the registered backup auth key. Two keys
    /// are stored only in the middle of a key rotation, so that whichever
    /// key the committed backup is under can be recovered.
    ///
    /// RegisterStart keeps nothing at the vault, so it is repeated freely;
    /// RegisterFinish is repeated like [`VaultClient::enable_key_backup`],
    /// settled by proof of `auth_key` when a lost attempt used up `proof`.
    pub async fn register_keys(
        &self,
        password: &Password,
        keys: &[&RootKey],
        auth_key: &RootKey,
        proof: Option<Proof<'_>>,
    ) -> Result<(), VaultError> {
        let protocol = |e: vault_suite::opaque_ke::errors::ProtocolError| {
            VaultError::Protocol(format!("OPAQUE registration: {e}"))
        };
        self.verify_vault().await?;
        let start = ClientRegistration::<Suite>::start(&mut OsRng, password.expose_secret())
            .map_err(protocol)?;
        let request = start.message.serialize().to_vec();
        let response = self
            .call("RegisterStart", |mut inner| {
                let registration_request = request.clone();
                async move {
                    let response = inner
                        .register_start(RegisterStartRequest {
                            registration_request,
                        })
                        .await?;
                    Ok(Ok(response.into_inner()))
                }
            })
            .await?;
        let registration_response =
            RegistrationResponse::<Suite>::deserialize(&response.registration_response)
                .map_err(protocol)?;
        let ksf = self.ksf.argon2();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                password.expose_secret(),
                registration_response,
                ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
            )
            .map_err(protocol)?;
        // Refuse before anything of ours reaches an impostor vault.
        self.check_pin(&finish.server_s_pk.serialize())?;

        let sealed_key = seal_root_keys(&finish.export_key, &self.account, keys);
        let auth_public_key = auth_key.auth_public_key();
        let registration_id: [u8; 16] = response
            .registration_id
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Protocol("registration id of the wrong size".into()))?;
        let upload = finish.message.serialize().to_vec();
        let finish = Finish {
            registration_id,
            upload: &upload,
            sealed_key: &sealed_key,
            auth_public_key,
        };
        match self.register_finish_once(&finish, proof).await {
            Ok(()) => {}
            Err(failed) if failed.maybe_delivered && proof_used_up(&failed.error) => {
                self.register_finish_once(&finish, Some(Proof::BackupKey(auth_key)))
                    .await
                    .map_err(|_| failed.error)?;
            }
            Err(failed) => return Err(failed.error),
        }
        info!(account = self.account, "vault registration stored");
        Ok(())
    }
}

/// RegisterFinish's content, the same on every attempt.
struct Finish<'a> {
    registration_id: [u8; 16],
    upload: &'a [u8],
    sealed_key: &'a [u8],
    auth_public_key: [u8; 32],
}

impl VaultClient {
    /// EnableKeyBackup with `proof`, repeated per the policy.
    async fn enable_key_once(&self, key: &RootKey, proof: Option<Proof<'_>>) -> Result<(), Failed> {
        let auth_public_key = key.auth_public_key();
        let operation = ProofOperation::EnableKey {
            auth_public_key: &auth_public_key,
        };
        self.call_as(
            "EnableKeyBackup",
            Idempotency::Idempotent,
            |mut inner| async move {
                let authorization =
                    match self.authorization_on(&mut inner, proof, operation).await? {
                        Ok(authorization) => authorization,
                        Err(error) => return Ok(Err(error)),
                    };
                inner
                    .enable_key_backup(EnableKeyBackupRequest {
                        auth_public_key: auth_public_key.to_vec(),
                        authorization,
                    })
                    .await?;
                Ok(Ok(()))
            },
        )
        .await
    }

    /// RegisterFinish with `proof`, repeated per the policy.
    async fn register_finish_once(
        &self,
        finish: &Finish<'_>,
        proof: Option<Proof<'_>>,
    ) -> Result<(), Failed> {
        let operation = ProofOperation::Register {
            registration_id: &finish.registration_id,
            auth_public_key: &finish.auth_public_key,
        };
        self.call_as(
            "RegisterFinish",
            Idempotency::Idempotent,
            |mut inner| async move {
                let authorization =
                    match self.authorization_on(&mut inner, proof, operation).await? {
                        Ok(authorization) => authorization,
                        Err(error) => return Ok(Err(error)),
                    };
                inner
                    .register_finish(RegisterFinishRequest {
                        registration_id: finish.registration_id.to_vec(),
                        registration_upload: finish.upload.to_vec(),
                        sealed_key: finish.sealed_key.to_vec(),
                        auth_public_key: finish.auth_public_key.to_vec(),
                        authorization,
                    })
                    .await?;
                Ok(Ok(()))
            },
        )
        .await
    }
}
