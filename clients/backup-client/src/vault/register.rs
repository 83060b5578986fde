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
use super::{Proof, VaultClient, VaultError};
use crate::key::RootKey;

impl VaultClient {
    /// Enables backups with the 64-digit key: a record holding only the
    /// backup auth key and the backup pointer. An existing record (a
    /// password user switching to the key) is replaced given `proof`.
    pub async fn enable_key_backup(
        &self,
        key: &RootKey,
        proof: Option<Proof<'_>>,
    ) -> Result<(), VaultError> {
        let auth_public_key = key.auth_public_key();
        let operation = ProofOperation::EnableKey {
            auth_public_key: &auth_public_key,
        };
        let authorization = self.authorization(proof, operation).await?;
        self.inner
            .clone()
            .enable_key_backup(EnableKeyBackupRequest {
                auth_public_key: auth_public_key.to_vec(),
                authorization,
            })
            .await?;
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
        let response = self
            .inner
            .clone()
            .register_start(RegisterStartRequest {
                registration_request: start.message.serialize().to_vec(),
            })
            .await?
            .into_inner();
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
        let operation = ProofOperation::Register {
            registration_id: &registration_id,
            auth_public_key: &auth_public_key,
        };
        let authorization = self.authorization(proof, operation).await?;
        self.inner
            .clone()
            .register_finish(RegisterFinishRequest {
                registration_id: response.registration_id,
                registration_upload: finish.message.serialize().to_vec(),
                sealed_key,
                auth_public_key: auth_public_key.to_vec(),
                authorization,
            })
            .await?;
        info!(account = self.account, "vault registration stored");
        Ok(())
    }
}
