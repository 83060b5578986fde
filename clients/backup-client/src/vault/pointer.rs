//! The backup pointer kept by the vault: what a device reads before a
//! restore or a backup, announces before a commit and confirms after it.
//! Each update is signed with the backup auth key over a fresh challenge.

use e2eb_proto::vault::v2 as pb;
use vault_suite::proof::{MANIFEST_DIGEST_LEN, ProofOperation};

use super::{VaultClient, VaultError};
use crate::key::RootKey;

/// A generation as the device committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupRef {
    pub generation: u64,
    pub manifest_digest: [u8; MANIFEST_DIGEST_LEN],
}

/// A generation announced and not yet confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBackup {
    pub backup: BackupRef,
    /// The auth key of the key the generation is sealed under.
    pub auth_public_key: [u8; 32],
}

/// The vault's backup pointer for the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub committed: Option<BackupRef>,
    pub pending: Option<PendingBackup>,
    /// The registered backup auth key.
    pub auth_public_key: [u8; 32],
    pub has_password: bool,
}

fn backup_ref(wire: pb::BackupRef) -> Result<BackupRef, VaultError> {
    Ok(BackupRef {
        generation: wire.generation,
        manifest_digest: wire
            .manifest_digest
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Protocol("a manifest digest of the wrong size".into()))?,
    })
}

fn key32(bytes: &[u8]) -> Result<[u8; 32], VaultError> {
    bytes
        .try_into()
        .map_err(|_| VaultError::Protocol("an auth public key of the wrong size".into()))
}

impl VaultClient {
    /// The account's backup pointer.
    pub async fn pointer(&self) -> Result<Pointer, VaultError> {
        let response = self
            .call("GetPointer", |mut inner| async move {
                Ok(Ok(inner
                    .get_pointer(pb::GetPointerRequest {})
                    .await?
                    .into_inner()))
            })
            .await?;
        let pending = response
            .pending
            .map(|p| {
                Ok::<_, VaultError>(PendingBackup {
                    auth_public_key: key32(&p.auth_public_key)?,
                    backup: backup_ref(pb::BackupRef {
                        generation: p.generation,
                        manifest_digest: p.manifest_digest,
                    })?,
                })
            })
            .transpose()?;
        Ok(Pointer {
            committed: response.committed.map(backup_ref).transpose()?,
            pending,
            auth_public_key: key32(&response.auth_public_key)?,
            has_password: response.has_password,
        })
    }

    /// Announces `backup`, sealed under `sealed_under`, before its commit;
    /// signed with `signer` (the registered key, or the pending entry's).
    /// Safe to repeat: each attempt signs a fresh challenge, and setting
    /// the same pending entry again changes nothing.
    pub async fn set_pending(
        &self,
        signer: &RootKey,
        backup: BackupRef,
        sealed_under: &RootKey,
    ) -> Result<(), VaultError> {
        self.verify_vault().await?;
        let auth_public_key = sealed_under.auth_public_key();
        let operation = ProofOperation::SetPending {
            generation: backup.generation,
            digest: &backup.manifest_digest,
            auth_public_key: &auth_public_key,
        };
        self.call("SetPending", |mut inner| async move {
            let signature = match self.sign_on(&mut inner, signer, operation).await? {
                Ok(signature) => signature,
                Err(error) => return Ok(Err(error)),
            };
            inner
                .set_pending(pb::SetPendingRequest {
                    pending: Some(pb::PendingBackup {
                        generation: backup.generation,
                        manifest_digest: backup.manifest_digest.to_vec(),
                        auth_public_key: auth_public_key.to_vec(),
                    }),
                    signature: Some(signature),
                })
                .await?;
            Ok(Ok(()))
        })
        .await
    }

    /// Confirms the pending `backup` as committed. Safe to repeat: the
    /// vault answers a confirmation of the committed generation with
    /// success.
    pub async fn confirm(&self, signer: &RootKey, backup: BackupRef) -> Result<(), VaultError> {
        self.verify_vault().await?;
        let operation = ProofOperation::Confirm {
            generation: backup.generation,
            digest: &backup.manifest_digest,
        };
        self.call("ConfirmPending", |mut inner| async move {
            let signature = match self.sign_on(&mut inner, signer, operation).await? {
                Ok(signature) => signature,
                Err(error) => return Ok(Err(error)),
            };
            inner
                .confirm_pending(pb::ConfirmPendingRequest {
                    backup: Some(pb::BackupRef {
                        generation: backup.generation,
                        manifest_digest: backup.manifest_digest.to_vec(),
                    }),
                    signature: Some(signature),
                })
                .await?;
            Ok(Ok(()))
        })
        .await
    }
}
