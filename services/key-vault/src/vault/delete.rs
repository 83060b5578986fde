//! DeleteRecord: disable backups with proof, or start over without it.

use account_token::AccountId;
use tracing::{info, instrument};

use super::{Proof, Vault};
use crate::error::VaultError;
use crate::store::RecordState;

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
            let existed = self.store.delete(account.as_str(), None).await?;
            info!(existed, "vault record deleted to start over");
            return Ok(());
        }
        match self.store.get_record(account.as_str()).await? {
            None => Err(VaultError::NotFound),
            Some(RecordState::Erased) => Err(VaultError::KeyErased),
            Some(RecordState::Active(current)) => {
                self.authorize(account, &current, authorization).await?;
                if !self
                    .store
                    .delete(account.as_str(), Some(current.version))
                    .await?
                {
                    return Err(VaultError::RecordChanged);
                }
                info!("vault record deleted with proof");
                Ok(())
            }
        }
    }
}
