//! Enable backups with a password (first registration), or change the
//! password (a registration that replaces the record, with proof).

use e2eb_proto::vault::v1::{RegisterFinishRequest, RegisterStartRequest};
use rand::rngs::OsRng;
use tracing::info;
use vault_suite::Suite;
use vault_suite::opaque_ke::{
    ClientRegistration, ClientRegistrationFinishParameters, Identifiers, RegistrationResponse,
};

use super::secrets::{Password, seal_root_keys};
use super::{Proof, VaultClient, VaultError, key_proof};
use crate::key::RootKey;

impl VaultClient {
    /// Registers `password` to protect `key`. The first registration needs
    /// no proof; replacing an existing one (changing the password) needs a
    /// login ticket or the backup key.
    pub async fn register(
        &self,
        password: &Password,
        key: &RootKey,
        proof: Option<Proof<'_>>,
    ) -> Result<(), VaultError> {
        self.register_keys(password, &[key], proof).await
    }

    /// Registers `password` to protect `keys`, current first. Two keys are
    /// stored only in the middle of a key rotation, so that whichever key
    /// the committed backup is under can be recovered.
    pub async fn register_keys(
        &self,
        password: &Password,
        keys: &[&RootKey],
        proof: Option<Proof<'_>>,
    ) -> Result<(), VaultError> {
        let key = keys[0];
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
        let verifier = vault_suite::key_proof_verifier(key_proof(key).as_ref());
        self.inner
            .clone()
            .register_finish(RegisterFinishRequest {
                registration_id: response.registration_id,
                registration_upload: finish.message.serialize().to_vec(),
                sealed_key,
                key_proof_verifier: verifier.to_vec(),
                authorization: proof.map(|p| p.to_wire()),
            })
            .await?;
        info!(account = self.account, "vault registration stored");
        Ok(())
    }
}
