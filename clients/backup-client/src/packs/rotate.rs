//! Key rotation in storage format v3: v2's contract ([`crate::rotate`]) over
//! packs. The caller gives the new key `K'` (already shown to the user or
//! stored on the device); a v3 backup under `K'` re-seals every chunk into
//! new packs and a new manifest, with the pointer updates signed by the
//! registered old key, and its commit deletes every pack under `K`.
//!
//! A lost commit answer is settled as in v2: the new generation was
//! announced as pending (signed by `K`) before the commit, so a restore with
//! `K'` finds it vouched for as pending, and the next v3 backup with `K'`
//! confirms it, which makes `K'` the registered key.
//!
//! Password users go through the same three vault steps as in v2,
//! [`begin_with_vault`] and [`finish_with_vault`] around the backup, and the
//! errors are v2's [`RotateError`].

use std::path::Path;

use super::backup::{PackBackupOptions, PackBackupReport, back_up_v3_with};
use super::gateway::PackGatewayClient;
use crate::key::RootKey;
use crate::rotate::{RotateError, begin_with_vault, finish_with_vault, unsettled};
use crate::vault::{Password, VaultClient};

/// Rotates a 64-digit-key user's v3 backup from `old_key` to `new_key`,
/// which the caller has already handed to the user.
pub async fn rotate_key_v3(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    account: &str,
    old_key: &RootKey,
    new_key: &RootKey,
    device_root: &Path,
) -> Result<PackBackupReport, RotateError> {
    rotate_key_v3_with(
        gateway,
        vault,
        account,
        old_key,
        new_key,
        device_root,
        PackBackupOptions::default(),
    )
    .await
}

/// [`rotate_key_v3`] with the backup's `options` (pack size).
pub async fn rotate_key_v3_with(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    account: &str,
    old_key: &RootKey,
    new_key: &RootKey,
    device_root: &Path,
    options: PackBackupOptions,
) -> Result<PackBackupReport, RotateError> {
    back_up_v3_with(
        gateway,
        vault,
        account,
        new_key,
        old_key,
        device_root,
        options,
    )
    .await
    .map_err(|source| unsettled(old_key, new_key, source))
}

/// Rotates a password user's v3 backup in the three safe steps of
/// [`crate::rotate`]; the new key stays inside the vault's sealed blob.
pub async fn rotate_key_with_vault_v3(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    password: &Password,
    account: &str,
    old_key: &RootKey,
    device_root: &Path,
) -> Result<(RootKey, PackBackupReport), RotateError> {
    let new_key = RootKey::generate();
    begin_with_vault(vault, password, old_key, &new_key)
        .await
        .map_err(RotateError::NotStarted)?;
    let report = finish_rotation_v3(
        gateway,
        vault,
        password,
        account,
        old_key,
        &new_key,
        device_root,
    )
    .await?;
    Ok((new_key, report))
}

/// Steps 2 and 3 for a password user whose vault already holds `new_key`
/// and `old_key` (step 1 done, perhaps by a run that stopped): the backup
/// under `new_key`, then the vault keeps `new_key` only.
pub async fn finish_rotation_v3(
    gateway: &PackGatewayClient,
    vault: &VaultClient,
    password: &Password,
    account: &str,
    old_key: &RootKey,
    new_key: &RootKey,
    device_root: &Path,
) -> Result<PackBackupReport, RotateError> {
    let report = back_up_v3_with(
        gateway,
        vault,
        account,
        new_key,
        old_key,
        device_root,
        PackBackupOptions::default(),
    )
    .await
    .map_err(|source| unsettled(old_key, new_key, source))?;
    finish_with_vault(vault, password, new_key)
        .await
        .map_err(RotateError::NotFinished)?;
    Ok(report)
}
