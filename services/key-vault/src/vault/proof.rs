//! Proofs: a login ticket proves the password, a signature with the backup
//! auth key over a fresh challenge proves `K`. Both are single use: a
//! ticket or challenge is consumed by the first call that presents it,
//! whether or not the rest of the proof holds.

use std::fmt;

use account_token::AccountId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, instrument};
use vault_suite::proof::{
    AUTH_PUBLIC_KEY_LEN, CHALLENGE_LEN, ProofOperation, SIGNATURE_LEN, verify_proof,
};
use zeroize::Zeroizing;

use super::row::Account;
use super::{Vault, exact, random};
use crate::error::VaultError;
use crate::store::EphemeralKind;

/// Proof that the caller may change an existing record.
pub enum Proof {
    /// A ticket from a successful login (proof of the password).
    LoginTicket(Vec<u8>),
    /// A signature with the backup auth key over a vault challenge.
    KeySignature {
        challenge: Vec<u8>,
        signature: Vec<u8>,
    },
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LoginTicket(_) => f.write_str("LoginTicket(<redacted>)"),
            Self::KeySignature { .. } => f.write_str("KeySignature(..)"),
        }
    }
}

/// A login ticket as issued: 32 random bytes, kept by the vault only as
/// their SHA-256.
pub struct LoginTicket(Zeroizing<[u8; vault_suite::LOGIN_TICKET_LEN]>);

impl LoginTicket {
    pub(crate) fn generate() -> Self {
        Self(Zeroizing::new(random()))
    }

    /// What the vault stores instead of the ticket.
    pub(crate) fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_ref()).into()
    }

    pub fn expose_secret(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl fmt::Debug for LoginTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginTicket(<redacted>)")
    }
}

/// Which keys may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signers {
    /// Only the registered backup auth key.
    Registered,
    /// The registered key or the pending generation's key (its chosen
    /// successor during a key rotation).
    RegisteredOrPending,
}

impl Vault {
    /// A fresh challenge for one key signature by `account`.
    #[instrument(skip_all, fields(account = %account))]
    pub async fn challenge(&self, account: &AccountId) -> Result<[u8; CHALLENGE_LEN], VaultError> {
        let challenge = random::<CHALLENGE_LEN>();
        let expires = crate::clock::deadline(self.now_ms(), self.policy.challenge_ttl);
        self.put_ephemeral(
            EphemeralKind::Challenge,
            &challenge,
            account,
            Vec::new(),
            expires,
        )
        .await?;
        Ok(challenge)
    }

    /// Checks `proof` for `operation` against the account's current state.
    /// A ticket or challenge is consumed whether or not the proof holds.
    pub(crate) async fn authorize(
        &self,
        account: &AccountId,
        current: &Account,
        proof: Option<Proof>,
        operation: ProofOperation<'_>,
        signers: Signers,
    ) -> Result<(), VaultError> {
        match proof {
            None => Err(VaultError::ProofRequired),
            Some(Proof::LoginTicket(ticket)) => self.check_ticket(account, current, &ticket).await,
            Some(Proof::KeySignature {
                challenge,
                signature,
            }) => {
                let challenge = exact::<CHALLENGE_LEN>(&challenge, "challenge")?;
                let signature = exact::<SIGNATURE_LEN>(&signature, "signature")?;
                let item = self
                    .take_ephemeral(EphemeralKind::Challenge, &challenge, account)
                    .await?
                    .filter(|item| item.expires_at_ms > self.now_ms())
                    .ok_or(VaultError::ChallengeUnknown)?;
                drop(item);
                let mut keys: Vec<&[u8; AUTH_PUBLIC_KEY_LEN]> = vec![&current.auth_public_key];
                if signers == Signers::RegisteredOrPending
                    && let Some(pending) = &current.pending
                {
                    keys.push(&pending.auth_public_key);
                }
                let verified = keys.iter().any(|key| {
                    verify_proof(key, account.as_str(), &challenge, &operation, &signature).is_ok()
                });
                if verified {
                    info!(operation = operation.name(), "key signature accepted");
                    Ok(())
                } else {
                    Err(VaultError::BadKeySignature)
                }
            }
        }
    }

    async fn check_ticket(
        &self,
        account: &AccountId,
        current: &Account,
        ticket: &[u8],
    ) -> Result<(), VaultError> {
        let ticket = exact::<{ vault_suite::LOGIN_TICKET_LEN }>(ticket, "login_ticket")?;
        let hash: [u8; 32] = Sha256::digest(ticket).into();
        let Some(stored) = self
            .take_ephemeral(EphemeralKind::LoginTicket, &hash, account)
            .await?
        else {
            return Err(VaultError::InvalidTicket);
        };
        let fresh = stored.expires_at_ms > self.now_ms();
        let same_registration = current
            .registration
            .as_ref()
            .is_some_and(|r| bool::from(stored.payload.as_slice().ct_eq(&r.version)));
        if fresh && same_registration {
            Ok(())
        } else {
            Err(VaultError::InvalidTicket)
        }
    }
}
