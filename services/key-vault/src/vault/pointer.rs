//! The backup pointer: which generation of the account's backup the device
//! last committed (`committed`) and which it is about to commit
//! (`pending`), by manifest digest. It is the only server state a restoring
//! device trusts: a manifest that matches neither is refused, so a storage
//! operator can neither roll a backup back nor substitute another.
//!
//! Updates are signed with the backup auth key over a fresh challenge. A
//! pending entry names the auth key its generation is sealed under; during
//! a key rotation that is the new key, which may then confirm the entry and
//! sign the next one — so a rotation whose commit answer was lost is settled
//! by the next run of the device holding only the new key.

use account_token::AccountId;
use tracing::{info, instrument};
use vault_suite::proof::{AUTH_PUBLIC_KEY_LEN, MANIFEST_DIGEST_LEN, ProofOperation};

use super::proof::Signers;
use super::row::{Account, BackupRef, PendingBackup, RowState};
use super::{Proof, Vault, exact};
use crate::error::VaultError;

/// What GetPointer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub committed: Option<BackupRef>,
    pub pending: Option<PendingBackup>,
    pub auth_public_key: [u8; AUTH_PUBLIC_KEY_LEN],
    pub has_password: bool,
}

impl Vault {
    #[instrument(skip_all, fields(account = %account))]
    pub async fn pointer(&self, account: &AccountId) -> Result<Pointer, VaultError> {
        let current = self.active(account).await?.0;
        Ok(Pointer {
            committed: current.committed,
            pending: current.pending,
            auth_public_key: current.auth_public_key,
            has_password: current.registration.is_some(),
        })
    }

    /// Announces the generation about to be committed, signed by the
    /// registered key or the current pending entry's key.
    #[instrument(skip_all, fields(account = %account, generation))]
    pub async fn set_pending(
        &self,
        account: &AccountId,
        generation: u64,
        digest: &[u8],
        auth_public_key: &[u8],
        proof: Proof,
    ) -> Result<(), VaultError> {
        tracing::Span::current().record("generation", generation);
        let pending = PendingBackup {
            generation,
            manifest_digest: exact::<MANIFEST_DIGEST_LEN>(digest, "manifest_digest")?,
            auth_public_key: exact::<AUTH_PUBLIC_KEY_LEN>(auth_public_key, "auth_public_key")?,
        };
        if generation == 0 {
            return Err(VaultError::InvalidArgument(
                "a pending generation starts at 1".into(),
            ));
        }
        let (current, row, revision) = self.active(account).await?;
        let operation = ProofOperation::SetPending {
            generation,
            digest: &pending.manifest_digest,
            auth_public_key: &pending.auth_public_key,
        };
        self.authorize(
            account,
            &current,
            Some(proof),
            operation,
            Signers::RegisteredOrPending,
        )
        .await?;
        let next = Account {
            pending: Some(pending),
            ..current
        };
        if !self
            .write(
                account,
                Some(&row),
                RowState::Active(next),
                Some(revision),
                false,
            )
            .await?
        {
            return Err(VaultError::RecordChanged);
        }
        info!("pending generation recorded");
        Ok(())
    }

    /// The pending generation becomes the committed one, and its auth key
    /// the registered one. Confirming the committed generation again is a
    /// no-op that succeeds (a retry whose answer was lost).
    #[instrument(skip_all, fields(account = %account, generation))]
    pub async fn confirm(
        &self,
        account: &AccountId,
        generation: u64,
        digest: &[u8],
        proof: Proof,
    ) -> Result<(), VaultError> {
        tracing::Span::current().record("generation", generation);
        let backup = BackupRef {
            generation,
            manifest_digest: exact::<MANIFEST_DIGEST_LEN>(digest, "manifest_digest")?,
        };
        let (current, row, revision) = self.active(account).await?;
        let operation = ProofOperation::Confirm {
            generation,
            digest: &backup.manifest_digest,
        };
        self.authorize(
            account,
            &current,
            Some(proof),
            operation,
            Signers::RegisteredOrPending,
        )
        .await?;
        let pending = match current.pending {
            Some(pending) if pending.backup() == backup => pending,
            _ if current.committed == Some(backup) => return Ok(()),
            Some(pending) => {
                return Err(VaultError::PointerStale(format!(
                    "generation {generation} is not the pending one (pending: generation {})",
                    pending.generation
                )));
            }
            None => {
                return Err(VaultError::PointerStale(format!(
                    "nothing is pending to confirm as generation {generation}"
                )));
            }
        };
        let next = Account {
            auth_public_key: pending.auth_public_key,
            committed: Some(backup),
            pending: None,
            ..current
        };
        if !self
            .write(
                account,
                Some(&row),
                RowState::Active(next),
                Some(revision),
                false,
            )
            .await?
        {
            return Err(VaultError::RecordChanged);
        }
        info!("generation confirmed as committed");
        Ok(())
    }

    /// The account's active record, its row and revision.
    async fn active(
        &self,
        account: &AccountId,
    ) -> Result<(Account, super::row::AccountRow, crate::store::Revision), VaultError> {
        let Some((row, revision)) = self.read(account).await? else {
            return Err(VaultError::NotFound);
        };
        match &row.state {
            RowState::Active(current) => Ok((current.clone(), row, revision)),
            RowState::Erased => Err(VaultError::KeyErased),
        }
    }
}
