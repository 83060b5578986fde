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

use super::proof::LoginTicket;
use super::row::{Registration, RowState};
use super::{Change, Vault, credential_identifier, exact, random};
use crate::error::VaultError;
use crate::store::EphemeralKind;

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
        // The guess is committed before anything below runs.
        let counted = self
            .update(account, |row| {
                let Some(row) = row else {
                    return Err(VaultError::NotFound);
                };
                let RowState::Active(current) = &row.state else {
                    return Err(VaultError::KeyErased);
                };
                let Some(registration) = &current.registration else {
                    return Err(VaultError::NoPassword);
                };
                if registration.guesses >= max {
                    // The limit was reached by logins that never finished.
                    return Ok(Change::Write {
                        state: RowState::Erased,
                        scrub: true,
                        then: None,
                    });
                }
                let mut next = current.clone();
                let registration = next.registration.as_mut().expect("checked above");
                registration.guesses += 1;
                let counted = registration.clone();
                Ok(Change::write(RowState::Active(next), Some(counted)))
            })
            .await?;
        let Some(record) = counted else {
            self.metrics.lockouts.inc();
            warn!("guess limit reached by abandoned logins; record erased");
            return Err(VaultError::KeyErased);
        };
        self.metrics.guesses_spent.inc();
        let guesses = record.guesses;
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

        let session_id = random::<16>();
        let state = Zeroizing::new(started.state.serialize().to_vec());
        let sealed_state =
            self.secrets
                .seal_login_state(&session_id, account.as_str(), &record.version, &state);
        // The session remembers which registration it runs against.
        let payload = [record.version.as_slice(), &sealed_state].concat();
        let expires = crate::clock::deadline(self.now_ms(), self.policy.login_session_ttl);
        self.put_ephemeral(
            EphemeralKind::LoginSession,
            &session_id,
            account,
            payload,
            expires,
        )
        .await?;
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
            .take_ephemeral(EphemeralKind::LoginSession, &session_id, account)
            .await?
        else {
            return Err(VaultError::UnknownSession);
        };
        if session.expires_at_ms <= self.now_ms() {
            return Err(VaultError::SessionExpired);
        }
        if session.payload.len() < 16 {
            return Err(VaultError::Internal("stored login session is too short"));
        }
        let (version, sealed_state) = session.payload.split_at(16);
        let version: [u8; 16] = version.try_into().expect("split at 16");
        let state = self
            .secrets
            .open_login_state(&session_id, account.as_str(), &version, sealed_state)
            .ok_or(VaultError::Internal("stored login state does not open"))?;
        let state = ServerLogin::<Suite>::deserialize(&state)
            .map_err(|_| VaultError::Internal("stored login state does not parse"))?;

        let session_key = match finalization
            .map(|message| state.finish(message, ServerLoginParameters::default()))
        {
            Some(Ok(finished)) => Zeroizing::new(finished.session_key.to_vec()),
            None | Some(Err(ProtocolError::InvalidLoginError)) => {
                return self.wrong_password(account, version).await;
            }
            Some(Err(_)) => return Err(VaultError::Internal("OPAQUE login finish failed")),
        };

        // The ticket exists before the count goes to zero; if the reset
        // then finds the registration replaced, the ticket is useless (it
        // is bound to this registration).
        let login_ticket = LoginTicket::generate();
        let expires = crate::clock::deadline(self.now_ms(), self.policy.login_ticket_ttl);
        self.put_ephemeral(
            EphemeralKind::LoginTicket,
            &login_ticket.hash(),
            account,
            version.to_vec(),
            expires,
        )
        .await?;
        let sealed_key = self
            .update(account, |row| {
                let state = row.map(|r| &r.state);
                let Some(RowState::Active(current)) = state else {
                    return Err(match state {
                        Some(RowState::Erased) => VaultError::KeyErased,
                        _ => VaultError::RecordChanged,
                    });
                };
                match &current.registration {
                    Some(registration) if registration.version == version => {
                        let sealed_key = registration.sealed_key.clone();
                        if registration.guesses == 0 {
                            return Ok(Change::Keep(sealed_key));
                        }
                        let mut next = current.clone();
                        next.registration.as_mut().expect("matched above").guesses = 0;
                        Ok(Change::write(RowState::Active(next), sealed_key))
                    }
                    _ => Err(VaultError::RecordChanged),
                }
            })
            .await?;
        self.metrics.logins_succeeded.inc();
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

    async fn wrong_password(
        &self,
        account: &AccountId,
        version: [u8; 16],
    ) -> Result<LoginOutcome, VaultError> {
        let max = self.policy.max_guesses;
        let outcome = self
            .update(account, |row| {
                let state = row.map(|r| &r.state);
                let Some(RowState::Active(current)) = state else {
                    return Err(match state {
                        Some(RowState::Erased) => VaultError::KeyErased,
                        _ => VaultError::RecordChanged,
                    });
                };
                let Some(Registration { guesses, .. }) = current
                    .registration
                    .as_ref()
                    .filter(|r| r.version == version)
                else {
                    return Err(VaultError::RecordChanged);
                };
                let guesses_remaining = max.saturating_sub(*guesses);
                if guesses_remaining > 0 {
                    return Ok(Change::Keep(LoginOutcome::WrongPassword {
                        guesses_remaining,
                        key_erased: false,
                    }));
                }
                Ok(Change::Write {
                    state: RowState::Erased,
                    scrub: true,
                    then: LoginOutcome::WrongPassword {
                        guesses_remaining: 0,
                        key_erased: true,
                    },
                })
            })
            .await?;
        if matches!(
            outcome,
            LoginOutcome::WrongPassword {
                key_erased: true,
                ..
            }
        ) {
            self.metrics.lockouts.inc();
            warn!("last guess was wrong; record erased");
        }
        self.metrics.wrong_passwords.inc();
        Span::current().record("outcome", "wrong-password");
        info!(?outcome, "login failed");
        Ok(outcome)
    }
}
