//! Disable backups (erase the vault record, with proof), or start over when
//! the user can prove nothing (the old backup is lost for good).

use e2eb_proto::vault::v2::DeleteRecordRequest;
use tracing::{debug, warn};
use vault_suite::proof::ProofOperation;

use rpc::retry::Idempotency;

use super::{Proof, VaultClient, VaultError};

impl VaultClient {
    /// Erases the record after proof of the password or the key. Safe to
    /// repeat: a repeat that finds no record after a lost answer is done.
    pub async fn delete(&self, proof: Proof<'_>) -> Result<(), VaultError> {
        if matches!(proof, Proof::BackupKey(_)) {
            self.verify_vault().await?;
        }
        self.erase("DeleteRecord", Some(proof), false).await?;
        debug!(account = self.account, "vault record deleted");
        Ok(())
    }

    /// Erases the record without proof, so backups can be enabled anew.
    /// Whatever the old record protected can never be recovered.
    pub async fn start_over(&self) -> Result<(), VaultError> {
        self.erase("DeleteRecord(start over)", None, true).await?;
        warn!(
            account = self.account,
            "vault record erased to start over; the old backup is gone for good"
        );
        Ok(())
    }

    async fn erase(
        &self,
        what: &'static str,
        proof: Option<Proof<'_>>,
        start_over: bool,
    ) -> Result<(), VaultError> {
        let outcome = self
            .call_as(what, Idempotency::Idempotent, |mut inner| async move {
                let authorization = match self
                    .authorization_on(&mut inner, proof, ProofOperation::Delete)
                    .await?
                {
                    Ok(authorization) => authorization,
                    Err(error) => return Ok(Err(error)),
                };
                inner
                    .delete_record(DeleteRecordRequest {
                        authorization,
                        start_over,
                    })
                    .await?;
                Ok(Ok(()))
            })
            .await;
        match outcome {
            Ok(()) => Ok(()),
            // The lost attempt erased it.
            Err(failed)
                if failed.maybe_delivered && matches!(failed.error, VaultError::NotRegistered) =>
            {
                Ok(())
            }
            Err(failed) => Err(failed.error),
        }
    }
}
