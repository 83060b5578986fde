//! Key rotation: a new backup key `K'`, every chunk re-encrypted and
//! re-uploaded under keys from it, the old generation deleted by the commit.
//!
//! The caller makes `K'` and keeps it (shows it to the user, or stores it on
//! the device) *before* calling here: nothing is committed under a key the
//! user was not given. The backup pointer in the vault settles a rotation
//! whose commit answer was lost: the new generation is announced as pending
//! (signed by the registered old key) before the commit, and the next backup
//! with `K'` finds the served generation equal to the pending one and
//! confirms it, which makes `K'` the registered key.
//!
//! For a password user the vault must hold a key that opens the committed
//! backup at every instant, so rotation takes three steps, each safe to be
//! interrupted after:
//!
//! 1. [`begin_with_vault`]: the vault record is re-registered (proof: the
//!    old key) with a sealed blob holding `K'` and `K`. The backup is still
//!    under `K`; a recovery yields both keys.
//! 2. a backup under `K'`: the commit switches the backup to `K'` at once
//!    and deletes the chunks under `K`.
//! 3. [`finish_with_vault`]: the record keeps `K'` only (proof: a fresh login).
//!
//! Restoring with [`restore_any`](crate::restore::restore_any) picks whichever
//! key the committed manifest names and reports which it used.
//!
//! Storage format v3 rotates with the same contract, the same errors and the
//! same vault steps in [`crate::packs::rotate`].

use std::path::Path;

use crate::backup::{BackupError, BackupReport, back_up_with_signer};
use crate::gateway::GatewayClient;
use crate::key::RootKey;
use crate::vault::{Password, Proof, VaultClient, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("key rotation stopped before anything changed: {0}")]
    NotStarted(VaultError),
    #[error(
        "key rotation did not finish ({source}). The backup is under the old key (id {old_key_id}) \
         unless its commit landed, in which case it is under the new key (id {new_key_id}): keep \
         both keys; the next backup with the new key settles which"
    )]
    Unsettled {
        old_key_id: String,
        new_key_id: String,
        source: BackupError,
    },
    #[error(
        "key rotation committed under the new key but the vault still holds both keys ({0}); run the rotation's last step again"
    )]
    NotFinished(VaultError),
}

/// The error of a rotation whose backup step failed (shared with v3's
/// [`crate::packs::rotate`]).
pub(crate) fn unsettled(old_key: &RootKey, new_key: &RootKey, source: BackupError) -> RotateError {
    RotateError::Unsettled {
        old_key_id: hex::encode(old_key.key_id()),
        new_key_id: hex::encode(new_key.key_id()),
        source,
    }
}

/// Rotates a 64-digit-key user's backup from `old_key` to `new_key`, which
/// the caller has already handed to the user.
pub async fn rotate_key(
    gateway: &GatewayClient,
    vault: &VaultClient,
    account: &str,
    old_key: &RootKey,
    new_key: &RootKey,
    device_root: &Path,
) -> Result<BackupReport, RotateError> {
    back_up_with_signer(gateway, vault, account, new_key, old_key, device_root)
        .await
        .map_err(|source| unsettled(old_key, new_key, source))
}

/// Rotates a password user's key in the three safe steps above; the new
/// key stays inside the vault's sealed blob, so the user keeps only the
/// password.
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
    let report = back_up_with_signer(gateway, vault, account, &new_key, old_key, device_root)
        .await
        .map_err(|source| unsettled(old_key, &new_key, source))?;
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
    // The commit's confirmation made the new key the registered one, and a
    // signature with it proves the right to replace the record. If the
    // confirmation has not happened yet, a fresh login proves the password.
    if vault.pointer().await?.auth_public_key == new_key.auth_public_key() {
        return vault
            .register_keys(
                password,
                &[new_key],
                new_key,
                Some(Proof::BackupKey(new_key)),
            )
            .await;
    }
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
