//! DeleteRecord: disable backups with proof, or start over without it.

use account_token::AccountId;
use tracing::{info, instrument};
use vault_suite::proof::ProofOperation;

use super::proof::Signers;
use super::row::RowState;
use super::{Proof, Vault};
use crate::error::VaultError;

impl Vault {
    /// Erases the account's record. With `start_over` no proof is needed
    /// and a key-erased tombstone is cleared too (idempotent: nothing to
    /// delete is fine); otherwise `authorization` must prove the password
    /// or the key.
    #[instrument(skip_all, fields(account = %account, start_over))]
    pub async fn delete(
        &self,
        account: &AccountId,
        authorization: Option<Proof>,
        start_over: bool,
    ) -> Result<(), VaultError> {
        if start_over {
            loop {
                let Some((_, revision)) = self.read_any(account).await? else {
                    info!(existed = false, "nothing to delete to start over");
                    return Ok(());
                };
                if self.store.delete_row(account.as_str(), revision).await? {
                    info!(existed = true, "vault record deleted to start over");
                    return Ok(());
                }
            }
        }
        let Some((row, revision)) = self.read(account).await? else {
            return Err(VaultError::NotFound);
        };
        let RowState::Active(current) = &row.state else {
            return Err(VaultError::KeyErased);
        };
        self.authorize(
            account,
            current,
            authorization,
            ProofOperation::Delete,
            Signers::Registered,
        )
        .await?;
        if !self.store.delete_row(account.as_str(), revision).await? {
            return Err(VaultError::RecordChanged);
        }
        info!("vault record deleted with proof");
        Ok(())
    }

    /// The row's revision, even when the row fails its MAC: starting over
    /// is how an account with a damaged row is cleared.
    async fn read_any(
        &self,
        account: &AccountId,
    ) -> Result<Option<((), crate::store::Revision)>, VaultError> {
        Ok(self
            .store
            .get_row(account.as_str())
            .await?
            .map(|(_, revision)| ((), revision)))
    }
}
