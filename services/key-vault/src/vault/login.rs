//! Login (recovery): LoginStart counts the guess durably and only then
//! evaluates the OPRF; LoginFinish checks the client MAC, and either resets
//! the count and hands out the sealed key and a login ticket, or reports
//! the guesses left (erasing the record at the last one).

use std::fmt;

use account_token::AccountId;
use rand::rngs::OsRng;
use tracing::{Span, info, instrument, warn};
use vault_suite::Suite;
use vault_suite::opaque_ke::errors::ProtocolError;
use vault_suite::opaque_ke::{
    CredentialFinalization, CredentialRequest, ServerLogin, ServerLoginParameters,
    ServerRegistration,
};
use zeroize::Zeroizing;

use super::{LoginTicket, Vault, credential_identifier, exact, random16};
use crate::error::VaultError;
use crate::store::{Failure, GuessCount, Reset, Session, Ticket};

/// LoginStart's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStarted {
    pub credential_response: Vec<u8>,
    pub session_id: [u8; 16],
    /// Guesses left after this one if it turns out wrong.
    pub guesses_remaining: u32,
}

/// LoginFinish's answer.
pub enum LoginOutcome {
    Success {
        /// The sealed key blob under a key from the session key
        /// (`vault_suite::seal_login_response`).
        encrypted_sealed_key: Vec<u8>,
        login_ticket: LoginTicket,
    },
    WrongPassword {
        guesses_remaining: u32,
        key_erased: bool,
    },
}

impl fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success { .. } => f.write_str("Success { <redacted> }"),
            Self::WrongPassword {
                guesses_remaining,
                key_erased,
            } => f
                .debug_struct("WrongPassword")
                .field("guesses_remaining", guesses_remaining)
                .field("key_erased", key_erased)
                .finish(),
        }
    }
}

impl Vault {
    /// Counts a guess, durably, then evaluates the OPRF and keeps the
    /// server login state (sealed) until LoginFinish or expiry.
    #[instrument(skip_all, fields(account = %account, guesses))]
    pub async fn login_start(
        &self,
        account: &AccountId,
        request: &[u8],
    ) -> Result<LoginStarted, VaultError> {
        // A malformed request costs no guess: it is refused before counting.
        exact::<{ vault_suite::CREDENTIAL_REQUEST_LEN }>(request, "credential_request")?;
        let request = CredentialRequest::<Suite>::deserialize(request).map_err(|_| {
            VaultError::InvalidArgument("credential_request is not a valid OPAQUE message".into())
        })?;

        let max = self.policy.max_guesses;
        let now = self.now_ms();
        // The guess is committed before anything below runs.
        let (guesses, record) = match self.store.count_guess(account.as_str(), max, now).await? {
            GuessCount::Counted { guesses, record } => (guesses, record),
            GuessCount::NotFound => return Err(VaultError::NotFound),
            GuessCount::Erased => return Err(VaultError::KeyErased),
            GuessCount::ErasedNow => {
                warn!("guess limit reached by abandoned logins; record erased");
                return Err(VaultError::KeyErased);
            }
        };
        Span::current().record("guesses", guesses);

        let password_file = ServerRegistration::<Suite>::deserialize(&record.opaque_record)
            .map_err(|_| VaultError::Internal("stored OPAQUE record does not parse"))?;
        let started = ServerLogin::start(
            &mut OsRng,
            self.secrets.setup(),
            Some(password_file),
            request,
            &credential_identifier(account, &record.registration_id),
            ServerLoginParameters::default(),
        )
        .map_err(|_| {
            VaultError::InvalidArgument("credential_request was rejected by OPAQUE".into())
        })?;

        let session_id = random16();
        let state = Zeroizing::new(started.state.serialize().to_vec());
        let sealed_state =
            self.secrets
                .seal_login_state(&session_id, account.as_str(), &record.version, &state);
        let session = Session {
            account: account.as_str().to_owned(),
            version: record.version,
            sealed_state,
            expires_at_ms: crate::clock::deadline(now, self.policy.login_session_ttl),
        };
        self.store.put_session(session_id, session, now).await?;
        Ok(LoginStarted {
            credential_response: started.message.serialize().to_vec(),
            session_id,
            guesses_remaining: max.saturating_sub(guesses),
        })
    }

    /// Finishes the login named by `session_id`. An empty `finalization`
    /// means the client found the password wrong and wants the verdict.
    #[instrument(skip_all, fields(account = %account, outcome))]
    pub async fn login_finish(
        &self,
        account: &AccountId,
        session_id: &[u8],
        finalization: &[u8],
    ) -> Result<LoginOutcome, VaultError> {
        let session_id = exact::<{ vault_suite::SESSION_ID_LEN }>(session_id, "session_id")?;
        let finalization = match finalization.len() {
            0 => None,
            vault_suite::CREDENTIAL_FINALIZATION_LEN => Some(
                CredentialFinalization::<Suite>::deserialize(finalization).map_err(|_| {
                    VaultError::InvalidArgument(
                        "credential_finalization is not a valid OPAQUE message".into(),
                    )
                })?,
            ),
            other => {
                return Err(VaultError::InvalidArgument(format!(
                    "credential_finalization must be {} bytes (or empty), not {other}",
                    vault_suite::CREDENTIAL_FINALIZATION_LEN
                )));
            }
        };

        let Some(session) = self
            .store
            .take_session(session_id, account.as_str())
            .await?
        else {
            return Err(VaultError::UnknownSession);
        };
        if session.expires_at_ms <= self.now_ms() {
            return Err(VaultError::SessionExpired);
        }
        let state = self
            .secrets
            .open_login_state(
                &session_id,
                account.as_str(),
                &session.version,
                &session.sealed_state,
            )
            .ok_or(VaultError::Internal("stored login state does not open"))?;
        let state = ServerLogin::<Suite>::deserialize(&state)
            .map_err(|_| VaultError::Internal("stored login state does not parse"))?;

        let session_key = match finalization
            .map(|message| state.finish(message, ServerLoginParameters::default()))
        {
            Some(Ok(finished)) => Zeroizing::new(finished.session_key.to_vec()),
            None | Some(Err(ProtocolError::InvalidLoginError)) => {
                return self.wrong_password(account).await;
            }
            Some(Err(_)) => return Err(VaultError::Internal("OPAQUE login finish failed")),
        };

        // One transaction: the count goes to zero and the ticket exists.
        let login_ticket = LoginTicket::generate();
        let now = self.now_ms();
        let ticket = Ticket {
            account: account.as_str().to_owned(),
            version: session.version,
            expires_at_ms: crate::clock::deadline(now, self.policy.login_ticket_ttl),
        };
        let sealed_key = match self
            .store
            .reset_guesses(
                account.as_str(),
                session.version,
                login_ticket.hash(),
                ticket,
                now,
            )
            .await?
        {
            Reset::Reset { sealed_key } => sealed_key,
            Reset::Erased => return Err(VaultError::KeyErased),
            Reset::Changed => return Err(VaultError::RecordChanged),
        };
        Span::current().record("outcome", "success");
        info!("login succeeded; guesses reset");
        Ok(LoginOutcome::Success {
            encrypted_sealed_key: vault_suite::seal_login_response(
                &session_key,
                account.as_str(),
                &sealed_key,
            ),
            login_ticket,
        })
    }

    async fn wrong_password(&self, account: &AccountId) -> Result<LoginOutcome, VaultError> {
        let max = self.policy.max_guesses;
        let outcome = match self
            .store
            .record_failure(account.as_str(), max, self.now_ms())
            .await?
        {
            Failure::Remaining(guesses_remaining) => LoginOutcome::WrongPassword {
                guesses_remaining,
                key_erased: false,
            },
            Failure::ErasedNow => {
                warn!("last guess was wrong; record erased");
                LoginOutcome::WrongPassword {
                    guesses_remaining: 0,
                    key_erased: true,
                }
            }
            Failure::Erased => return Err(VaultError::KeyErased),
            Failure::NotFound => return Err(VaultError::RecordChanged),
        };
        Span::current().record("outcome", "wrong-password");
        info!(?outcome, "login failed");
        Ok(outcome)
    }
}
