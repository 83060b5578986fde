//! The vault core: decides every operation from the request, the stored
//! state and the clock, with no network in sight. One module per
//! operation ([`register`], [`login`], [`delete`], [`pointer`]); [`proof`]
//! checks proofs of the password or the key; [`row`] is what is stored. The
//! gRPC layer in `service.rs` only converts messages.
//!
//! Every change to an account is a compare-and-swap of its whole row (see
//! [`Vault::update`]), verified by its MAC when read and MACed again when
//! written, so concurrent calls — on one vault or on several replicas of a
//! consensus store — never lose an update and an edited row is refused.
//!
//! The guess limit (modelled on juicebox's `recover2`): login start counts a
//! guess in the store, durably, *before* the OPRF is evaluated, so no reply
//! ever leaves for an uncounted guess; a valid client MAC resets the count;
//! a wrong or missing one reports what is left, and at the limit the record
//! is erased.

pub mod delete;
pub mod login;
pub mod pointer;
pub mod proof;
pub mod register;
pub mod row;

use std::sync::Arc;

use account_token::AccountId;
use rand::RngCore;
use rand::rngs::OsRng;
use tracing::error;

use crate::clock::Clock;
use crate::config::Policy;
use crate::error::VaultError;
use crate::metrics::VaultMetrics;
use crate::secrets::VaultSecrets;
use crate::store::{Ephemeral, EphemeralKind, RecordStore, Revision, StoredRow};
use row::{AccountRow, RowState};

pub use proof::Proof;

/// How many times a change is retried when other writers keep winning the
/// compare-and-swap before the caller is told to retry.
const MAX_UPDATE_ATTEMPTS: usize = 64;

/// The Backup Key Vault.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn RecordStore>,
    secrets: Arc<VaultSecrets>,
    policy: Policy,
    clock: Arc<dyn Clock>,
    metrics: VaultMetrics,
}

/// What `GetVaultInfo` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultInfo {
    pub public_key: [u8; 32],
    pub fingerprint: String,
    pub max_guesses: u32,
}

/// What one attempt of [`Vault::update`] decided.
#[allow(clippy::large_enum_variant)] // lives for one attempt
pub(crate) enum Change<T> {
    /// Write the row with this state (scrubbing the old bytes if asked),
    /// then answer `T`.
    Write {
        state: RowState,
        scrub: bool,
        then: T,
    },
    /// Answer `T` without writing.
    Keep(T),
}

impl<T> Change<T> {
    fn write(state: RowState, then: T) -> Self {
        Self::Write {
            state,
            scrub: false,
            then,
        }
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
            metrics: VaultMetrics::default(),
        }
    }

    /// Counts guesses, logins and lockouts into `metrics`.
    pub fn with_metrics(mut self, metrics: VaultMetrics) -> Self {
        self.metrics = metrics;
        self
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

    /// The account's row, verified, with its revision.
    pub(crate) async fn read(
        &self,
        account: &AccountId,
    ) -> Result<Option<(AccountRow, Revision)>, VaultError> {
        let Some((stored, revision)) = self.store.get_row(account.as_str()).await? else {
            return Ok(None);
        };
        if !self
            .secrets
            .row_mac_matches(account.as_str(), &stored.body, &stored.mac)
        {
            error!(
                %account,
                store = self.store.describe(),
                "the stored row fails its MAC: it was edited outside the vault; refusing it \
                 (restore the row from a backup of the store, or start the account over)"
            );
            return Err(VaultError::TamperedRecord);
        }
        let row = AccountRow::decode(&stored.body).ok_or(VaultError::Internal(
            "a row with a valid MAC does not parse (written by an incompatible vault)",
        ))?;
        Ok(Some((row, revision)))
    }

    /// Writes `state` as the row following `current` (or the first row),
    /// if the store is still at `expected`. False when another write won.
    pub(crate) async fn write(
        &self,
        account: &AccountId,
        current: Option<&AccountRow>,
        state: RowState,
        expected: Option<Revision>,
        scrub: bool,
    ) -> Result<bool, VaultError> {
        let row = match current {
            Some(current) => current.next(state),
            None => AccountRow { version: 1, state },
        };
        let body = row.encode();
        let mac = self.secrets.row_mac(account.as_str(), &body);
        Ok(self
            .store
            .put_row(account.as_str(), StoredRow { body, mac }, expected, scrub)
            .await?)
    }

    /// Applies `decide` to the current row by compare-and-swap, retrying
    /// with the fresh row when another writer came first. `decide` must
    /// have no side effects: it may run several times.
    pub(crate) async fn update<T>(
        &self,
        account: &AccountId,
        mut decide: impl FnMut(Option<&AccountRow>) -> Result<Change<T>, VaultError>,
    ) -> Result<T, VaultError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self.read(account).await?;
            let (row, revision) = match &current {
                Some((row, revision)) => (Some(row), Some(*revision)),
                None => (None, None),
            };
            match decide(row)? {
                Change::Keep(then) => return Ok(then),
                Change::Write { state, scrub, then } => {
                    if self.write(account, row, state, revision, scrub).await? {
                        return Ok(then);
                    }
                }
            }
        }
        Err(VaultError::Store(crate::store::StoreError::Busy))
    }

    /// Keeps a short-lived item for `account` under (`kind`, `id`), MACed.
    pub(crate) async fn put_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &AccountId,
        payload: Vec<u8>,
        expires_at_ms: u64,
    ) -> Result<(), VaultError> {
        let mac = self
            .secrets
            .ephemeral_mac(kind, id, account.as_str(), &payload, expires_at_ms);
        let item = Ephemeral {
            account: account.as_str().to_owned(),
            payload,
            expires_at_ms,
            mac,
        };
        Ok(self
            .store
            .put_ephemeral(kind, id, item, self.now_ms())
            .await?)
    }

    /// Takes the item (`kind`, `id`) of `account` if there is one (expired
    /// or not: the caller decides), refusing one whose MAC fails.
    pub(crate) async fn take_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &AccountId,
    ) -> Result<Option<Ephemeral>, VaultError> {
        let Some(item) = self
            .store
            .take_ephemeral(kind, id, account.as_str())
            .await?
        else {
            return Ok(None);
        };
        let expected = self.secrets.ephemeral_mac(
            kind,
            id,
            account.as_str(),
            &item.payload,
            item.expires_at_ms,
        );
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &item.mac[..])) {
            error!(%account, kind = kind.as_str(), "a stored short-lived item fails its MAC: it was planted or edited outside the vault");
            return Err(VaultError::TamperedRecord);
        }
        Ok(Some(item))
    }
}

/// The OPRF key of a registration is derived from this identifier: the
/// account id followed by the 16-byte registration id (account ids never
/// contain a byte that could blur the split, and the suffix has a fixed length).
fn credential_identifier(account: &AccountId, registration_id: &[u8; 16]) -> Vec<u8> {
    [account.as_str().as_bytes(), registration_id].concat()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
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
