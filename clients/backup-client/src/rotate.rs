//! Key rotation: a new backup key `K'`, every chunk re-encrypted and
//! re-uploaded under keys from it, the old generation deleted by the commit.
//!
//! For a password user the vault must hold a key that opens the committed
//! backup at every instant, so rotation takes three steps, each safe to be
//! interrupted after:
//!
//! 1. [`begin_with_vault`]: the vault record is re-registered (proof: the
//!    old key) with a sealed blob holding `K'` and `K`. The backup is still
//!    under `K`; a recovery yields both keys.
//! 2. [`back_up`] under `K'`: the commit switches the backup to `K'` at once
//!    and deletes the chunks under `K`.
//! 3. [`finish_with_vault`]: the record keeps `K'` only (proof: a fresh login).
//!
//! Restoring with [`restore_any`](crate::restore::restore_any) picks whichever
//! recovered key the committed manifest names and reports which it used. A
//! key user is shown `K'` before step 2; until the commit the old key still
//! restores, after it the new one does, and a restore with the other says
//! which key the backup needs.

use std::path::Path;

use crate::backup::{BackupError, BackupReport, back_up};
use crate::gateway::GatewayClient;
use crate::key::RootKey;
use crate::vault::{Password, Proof, VaultClient, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("key rotation stopped before anything changed: {0}")]
    NotStarted(VaultError),
    #[error(
        "key rotation stopped while uploading under the new key: the backup is still under the old key, and the vault holds both ({0})"
    )]
    Upload(BackupError),
    #[error(
        "key rotation committed under the new key but the vault still holds both keys ({0}); run the rotation's last step again"
    )]
    NotFinished(VaultError),
}

/// Rotates a 64-digit-key user's key: returns the new key (to show) and the
/// backup report. Until the commit inside, the old key restores.
pub async fn rotate_key(
    gateway: &GatewayClient,
    account: &str,
    device_root: &Path,
) -> Result<(RootKey, BackupReport), BackupError> {
    let new_key = RootKey::generate();
    let report = back_up(gateway, account, &new_key, device_root).await?;
    Ok((new_key, report))
}

/// Rotates a password user's key in the three safe steps above.
pub async fn rotate_key_with_vault(
    gateway: &GatewayClient,
    vault: &VaultClient,
    password: &Password,
    account: &str,
    old_key: &RootKey,
    device_root: &Path,
) -> Result<(RootKey, BackupReport), RotateError> {
    let new_key = RootKey::generate();
    begin_with_vault(vault, password, old_key, &new_key)
        .await
        .map_err(RotateError::NotStarted)?;
    let report = back_up(gateway, account, &new_key, device_root)
        .await
        .map_err(RotateError::Upload)?;
    finish_with_vault(vault, password, &new_key)
        .await
        .map_err(RotateError::NotFinished)?;
    Ok((new_key, report))
}

/// Step 1: the vault holds the new key and the old one.
pub async fn begin_with_vault(
    vault: &VaultClient,
    password: &Password,
    old_key: &RootKey,
    new_key: &RootKey,
) -> Result<(), VaultError> {
    vault
        .register_keys(
            password,
            &[new_key, old_key],
            old_key,
            Some(Proof::BackupKey(old_key)),
        )
        .await
}

/// Step 3: the vault holds the new key only.
pub async fn finish_with_vault(
    vault: &VaultClient,
    password: &Password,
    new_key: &RootKey,
) -> Result<(), VaultError> {
    // A fresh login proves the password whichever key the vault has
    // registered at this point.
    let login = vault.recover(password).await?;
    vault
        .register_keys(
            password,
            &[new_key],
            new_key,
            Some(Proof::LoginTicket(&login.ticket)),
        )
        .await
}
