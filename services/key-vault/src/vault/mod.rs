//! The vault core: decides every operation from the request, the stored
//! state and the clock, with no network in sight. One module per
//! operation ([`register`], [`login`], [`delete`]); the gRPC layer in
//! `service.rs` only converts messages.
//!
//! The guess limit (modelled on juicebox's `recover2`): login start counts a
//! guess in the store, durably, *before* the OPRF is evaluated, so no reply
//! ever leaves for an uncounted guess; a valid client MAC resets the count;
//! a wrong or missing one reports what is left, and at the limit the record
//! is erased.

pub mod delete;
pub mod login;
pub mod register;

use std::fmt;
use std::sync::Arc;

use account_token::AccountId;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::Policy;
use crate::error::VaultError;
use crate::secrets::VaultSecrets;
use crate::store::{Record, RecordStore};

/// The Backup Key Vault.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn RecordStore>,
    secrets: Arc<VaultSecrets>,
    policy: Policy,
    clock: Arc<dyn Clock>,
}

/// What `GetVaultInfo` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultInfo {
    pub public_key: [u8; 32],
    pub fingerprint: String,
    pub max_guesses: u32,
}

/// Proof that the caller may replace or delete an existing record.
pub enum Proof {
    /// A ticket from a successful login (proof of the password).
    LoginTicket(Vec<u8>),
    /// The key proof derived from the backup key (proof of the key).
    KeyProof(Vec<u8>),
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LoginTicket(_) => f.write_str("LoginTicket(<redacted>)"),
            Self::KeyProof(_) => f.write_str("KeyProof(<redacted>)"),
        }
    }
}

/// A login ticket as issued: 32 random bytes, kept by the vault only as
/// their SHA-256.
pub struct LoginTicket(Zeroizing<[u8; vault_suite::LOGIN_TICKET_LEN]>);

impl LoginTicket {
    fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; vault_suite::LOGIN_TICKET_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// What the vault stores instead of the ticket.
    fn hash(&self) -> [u8; 32] {
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

impl Vault {
    pub fn new(
        store: Arc<dyn RecordStore>,
        secrets: Arc<VaultSecrets>,
        policy: Policy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            secrets,
            policy,
            clock,
        }
    }

    pub fn info(&self) -> VaultInfo {
        VaultInfo {
            public_key: *self.secrets.public_key(),
            fingerprint: self.secrets.fingerprint(),
            max_guesses: self.policy.max_guesses,
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Checks `proof` against the active `record` of `account`. A ticket is
    /// consumed whether or not it fits.
    async fn authorize(
        &self,
        account: &AccountId,
        record: &Record,
        proof: Option<Proof>,
    ) -> Result<(), VaultError> {
        match proof {
            None => Err(VaultError::ProofRequired),
            Some(Proof::LoginTicket(ticket)) => {
                let ticket = exact::<{ vault_suite::LOGIN_TICKET_LEN }>(&ticket, "login_ticket")?;
                let hash: [u8; 32] = Sha256::digest(ticket).into();
                let Some(stored) = self.store.take_ticket(hash, account.as_str()).await? else {
                    return Err(VaultError::InvalidTicket);
                };
                let fresh = stored.expires_at_ms > self.now_ms();
                if fresh && bool::from(stored.version.ct_eq(&record.version)) {
                    Ok(())
                } else {
                    Err(VaultError::InvalidTicket)
                }
            }
            Some(Proof::KeyProof(proof)) => {
                if proof.is_empty() || proof.len() > vault_suite::MAX_KEY_PROOF_LEN {
                    return Err(VaultError::InvalidArgument(format!(
                        "key_proof must be 1 to {} bytes",
                        vault_suite::MAX_KEY_PROOF_LEN
                    )));
                }
                let presented = vault_suite::key_proof_verifier(&proof);
                if bool::from(presented.ct_eq(&record.key_proof_verifier)) {
                    Ok(())
                } else {
                    Err(VaultError::WrongKeyProof)
                }
            }
        }
    }
}

/// The OPRF key of a registration is derived from this identifier: the
/// account id followed by the 16-byte registration id (account ids never
/// contain a byte that could blur the split, and the suffix has a fixed length).
fn credential_identifier(account: &AccountId, registration_id: &[u8; 16]) -> Vec<u8> {
    [account.as_str().as_bytes(), registration_id].concat()
}

fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// `bytes` as an array of exactly `N`, or INVALID_ARGUMENT naming `field`.
fn exact<const N: usize>(bytes: &[u8], field: &str) -> Result<[u8; N], VaultError> {
    bytes.try_into().map_err(|_| {
        VaultError::InvalidArgument(format!("{field} must be {N} bytes, not {}", bytes.len()))
    })
}

#[cfg(test)]
mod tests;
