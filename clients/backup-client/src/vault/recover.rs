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
use rpc::retry::Idempotency;

use super::{Failed, LoginStep, LoginTicket, VaultClient, VaultError};
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
        // LoginStart spends a guess: sent again only if it never reached
        // a vault.
        let credential_request = start.message.serialize().to_vec();
        self.observe(LoginStep::Starting);
        let response = self
            .call_as("LoginStart", Idempotency::AtMostOnce, |mut inner| {
                let credential_request = credential_request.clone();
                async move {
                    let response = inner
                        .login_start(LoginStartRequest { credential_request })
                        .await?;
                    Ok(Ok(response.into_inner()))
                }
            })
            .await
            .map_err(guess_may_be_spent)?;
        self.observe(LoginStep::Started);
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
            .finish_login(response.session_id, finish.message.serialize().to_vec())
            .await?;
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
        match self.finish_login(session_id, Vec::new()).await? {
            Some(login_finish_response::Outcome::WrongPassword(wrong)) => {
                Err(wrong_password(wrong.guesses_remaining, wrong.key_erased))
            }
            _ => Err(VaultError::Protocol(
                "the vault accepted a login the device could not complete".into(),
            )),
        }
    }

    /// LoginFinish, repeated freely: the session is single-use, so a
    /// repeat after a lost answer is refused as an unknown session. Then,
    /// or when no vault answers, the guess LoginStart counted may stand.
    async fn finish_login(
        &self,
        session_id: Vec<u8>,
        credential_finalization: Vec<u8>,
    ) -> Result<Option<login_finish_response::Outcome>, VaultError> {
        let (session_id, credential_finalization) = (&session_id, &credential_finalization);
        self.call_as(
            "LoginFinish",
            Idempotency::Idempotent,
            |mut inner| async move {
                let response = inner
                    .login_finish(LoginFinishRequest {
                        session_id: session_id.clone(),
                        credential_finalization: credential_finalization.clone(),
                    })
                    .await?;
                Ok(Ok(response.into_inner().outcome))
            },
        )
        .await
        .map_err(|failed| match failed.error {
            // LoginStart counted the guess; no LoginFinish reset it.
            VaultError::Unavailable(reason) => VaultError::GuessMayBeSpent(reason),
            _ => guess_may_be_spent(failed),
        })
    }
}

/// A login step that failed after it may have reached a vault: the guess
/// LoginStart counts may be spent. Failures before that are as they were.
fn guess_may_be_spent(failed: Failed) -> VaultError {
    match failed.error {
        VaultError::Unavailable(reason) if failed.maybe_delivered => {
            VaultError::GuessMayBeSpent(reason)
        }
        VaultError::SessionLost if failed.maybe_delivered => VaultError::GuessMayBeSpent(
            "an attempt whose answer was lost had already finished the login session".into(),
        ),
        error => error,
    }
}

fn wrong_password(guesses_remaining: u32, key_erased: bool) -> VaultError {
    if key_erased {
        VaultError::KeyErased
    } else {
        VaultError::WrongPassword { guesses_remaining }
    }
}
