//! Disable backups (erase the vault record, with proof), or start over when
//! the user can prove nothing (the old backup is lost for good).

use e2eb_proto::vault::v2::DeleteRecordRequest;
use tracing::{debug, warn};
use vault_suite::proof::ProofOperation;

use super::{Proof, VaultClient, VaultError};

impl VaultClient {
    /// Erases the record after proof of the password or the key.
    pub async fn delete(&self, proof: Proof<'_>) -> Result<(), VaultError> {
        let authorization = self
            .authorization(Some(proof), ProofOperation::Delete)
            .await?;
        self.inner
            .clone()
            .delete_record(DeleteRecordRequest {
                authorization,
                start_over: false,
            })
            .await?;
        debug!(account = self.account, "vault record deleted");
        Ok(())
    }

    /// Erases the record without proof, so backups can be enabled anew.
    /// Whatever the old record protected can never be recovered.
    pub async fn start_over(&self) -> Result<(), VaultError> {
        self.inner
            .clone()
            .delete_record(DeleteRecordRequest {
                authorization: None,
                start_over: true,
            })
            .await?;
        warn!(
            account = self.account,
            "vault record erased to start over; the old backup is gone for good"
        );
        Ok(())
    }
}
