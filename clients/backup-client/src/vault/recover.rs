//! Recover the backup key with the password: OPAQUE login, then unseal.
//! Every attempt costs one of the account's limited guesses.

use e2eb_proto::vault::v2::{LoginFinishRequest, LoginStartRequest, login_finish_response};
use rand::rngs::OsRng;
use tracing::info;
use vault_suite::Suite;
use vault_suite::opaque_ke::errors::ProtocolError;
use vault_suite::opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, CredentialResponse, Identifiers,
};
use zeroize::Zeroizing;

use super::secrets::{Password, unseal_root_keys};
use super::{LoginTicket, VaultClient, VaultError};
use crate::key::RootKey;

/// What a successful login gives the device.
#[derive(Debug)]
pub struct Recovered {
    /// The current backup key.
    pub key: RootKey,
    /// The key before it, while a key rotation is under way: the committed
    /// backup may still be under it.
    pub previous: Option<RootKey>,
    /// Proof of this login, for a password change or delete right after.
    pub ticket: LoginTicket,
}

impl VaultClient {
    /// Logs in with `password` and returns the backup key. A wrong password
    /// is [`VaultError::WrongPassword`] with the guesses left; the last wrong
    /// guess erases the key ([`VaultError::KeyErased`]).
    pub async fn recover(&self, password: &Password) -> Result<Recovered, VaultError> {
        let protocol = |e: ProtocolError| VaultError::Protocol(format!("OPAQUE login: {e}"));
        self.verify_vault().await?;
        let start =
            ClientLogin::<Suite>::start(&mut OsRng, password.expose_secret()).map_err(protocol)?;
        let response = self
            .inner
            .clone()
            .login_start(LoginStartRequest {
                credential_request: start.message.serialize().to_vec(),
            })
            .await?
            .into_inner();
        let credential_response =
            CredentialResponse::<Suite>::deserialize(&response.credential_response)
                .map_err(protocol)?;
        let ksf = self.ksf.argon2();
        let finished = start.state.finish(
            &mut OsRng,
            password.expose_secret(),
            credential_response,
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        );
        let finish = match finished {
            Ok(finish) => finish,
            Err(ProtocolError::InvalidLoginError) => {
                // The password is wrong: tell the vault, which answers how
                // many guesses are left (the guess was counted at start).
                return self.report_wrong_password(response.session_id).await;
            }
            Err(other) => return Err(protocol(other)),
        };
        self.check_pin(&finish.server_s_pk.serialize())?;

        let outcome = self
            .inner
            .clone()
            .login_finish(LoginFinishRequest {
                session_id: response.session_id,
                credential_finalization: finish.message.serialize().to_vec(),
            })
            .await?
            .into_inner()
            .outcome;
        let success = match outcome {
            Some(login_finish_response::Outcome::Success(success)) => success,
            Some(login_finish_response::Outcome::WrongPassword(wrong)) => {
                return Err(wrong_password(wrong.guesses_remaining, wrong.key_erased));
            }
            None => return Err(VaultError::Protocol("empty login outcome".into())),
        };
        let sealed_key = Zeroizing::new(
            vault_suite::open_login_response(
                &finish.session_key,
                &self.account,
                &success.encrypted_sealed_key,
            )
            .map_err(|e| VaultError::Protocol(e.to_string()))?,
        );
        let mut keys = unseal_root_keys(&finish.export_key, &self.account, &sealed_key)
            .map_err(|e| VaultError::Protocol(e.to_string()))?
            .into_iter();
        let key = keys
            .next()
            .expect("an unsealed blob holds at least one key");
        let previous = keys.next();
        info!(
            account = self.account,
            "backup key recovered from the vault"
        );
        Ok(Recovered {
            key,
            previous,
            ticket: LoginTicket(Zeroizing::new(success.login_ticket)),
        })
    }

    async fn report_wrong_password(&self, session_id: Vec<u8>) -> Result<Recovered, VaultError> {
        let outcome = self
            .inner
            .clone()
            .login_finish(LoginFinishRequest {
                session_id,
                credential_finalization: Vec::new(),
            })
            .await?
            .into_inner()
            .outcome;
        match outcome {
            Some(login_finish_response::Outcome::WrongPassword(wrong)) => {
                Err(wrong_password(wrong.guesses_remaining, wrong.key_erased))
            }
            _ => Err(VaultError::Protocol(
                "the vault accepted a login the device could not complete".into(),
            )),
        }
    }
}

fn wrong_password(guesses_remaining: u32, key_erased: bool) -> VaultError {
    if key_erased {
        VaultError::KeyErased
    } else {
        VaultError::WrongPassword { guesses_remaining }
    }
}
