//! One simulated phone's life with a 64-digit key: enable backups, back up,
//! live through days of chat activity with an incremental backup each day,
//! rotate the key, lose the phone, restore on a new one, check that every
//! byte came back. It runs on either storage format ([`Storage`]), so a
//! benchmark can put the two side by side in one run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use account_token::AccountId;
use backup_client::packs::{PackGatewayClient, back_up_v3, restore_v3, rotate_key_v3};
use backup_client::vault::{KsfStrength, VaultClient, VaultError};
use backup_client::{GatewayClient, RestoreReport, RootKey};
use serde::Serialize;
use tracing::info;

use crate::day::{self, DayActivity, DayStats};
use crate::phone::{self, PhoneProfile, PhoneStats};
use crate::services::Services;

/// Which storage format the flow backs up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// One object per chunk (`e2ebackup.storage.v2`).
    V2,
    /// Packs (`e2ebackup.storage.v3`).
    V3,
}

/// Everything one run needs.
pub struct KeyFlow<'a> {
    pub services: &'a Services,
    /// The vault fingerprint to pin: a key user's record there holds the
    /// backup pointer.
    pub vault_fingerprint: &'a str,
    pub account: AccountId,
    pub seed: u64,
    pub profile: PhoneProfile,
    /// Scratch directory for the old and the new phone; emptied first.
    pub work_dir: &'a Path,
    /// Days of activity after the first backup, each ending in a backup.
    pub days: u32,
    pub activity: DayActivity,
    /// Rotate the key after the last day.
    pub rotate: bool,
    pub storage: Storage,
}

/// The gateway in the flow's storage format.
enum Gateway {
    V2(GatewayClient),
    V3(PackGatewayClient),
}

/// What one backup did, in terms both formats share.
struct Backed {
    uploaded_plain_bytes: u64,
    uploaded_bytes: u64,
    manifest_bytes: u64,
    uploaded_chunks: usize,
    chunks: usize,
    uploaded_objects: usize,
}

impl Gateway {
    async fn back_up(
        &self,
        vault: &VaultClient,
        account: &str,
        key: &RootKey,
        phone: &Path,
    ) -> anyhow::Result<Backed> {
        Ok(match self {
            Self::V2(gateway) => {
                let r = backup_client::back_up(gateway, vault, account, key, phone).await?;
                Backed {
                    uploaded_plain_bytes: r.uploaded_plain_bytes,
                    uploaded_bytes: r.uploaded_bytes,
                    manifest_bytes: r.manifest_bytes,
                    uploaded_chunks: r.uploaded_chunks,
                    chunks: r.chunks,
                    // Each chunk, the manifest, the commit record.
                    uploaded_objects: r.uploaded_chunks + 2,
                }
            }
            Self::V3(gateway) => {
                let r = back_up_v3(gateway, vault, account, key, phone).await?;
                Backed {
                    uploaded_plain_bytes: r.new_plain_bytes,
                    uploaded_bytes: r.uploaded_bytes,
                    manifest_bytes: r.manifest_bytes,
                    uploaded_chunks: r.new_chunks,
                    chunks: r.distinct_chunks,
                    // Each pack, the manifest, the commit record.
                    uploaded_objects: r.uploaded_packs + 2,
                }
            }
        })
    }

    async fn restore(
        &self,
        vault: &VaultClient,
        account: &str,
        key: &RootKey,
        target: &Path,
    ) -> Result<RestoreReport, backup_client::RestoreError> {
        match self {
            Self::V2(gateway) => backup_client::restore(gateway, vault, account, key, target).await,
            Self::V3(gateway) => restore_v3(gateway, vault, account, key, target).await,
        }
    }

    async fn rotate(
        &self,
        vault: &VaultClient,
        account: &str,
        old: &RootKey,
        new: &RootKey,
        phone: &Path,
    ) -> Result<(), backup_client::rotate::RotateError> {
        match self {
            Self::V2(gateway) => {
                backup_client::rotate::rotate_key(gateway, vault, account, old, new, phone)
                    .await
                    .map(drop)
            }
            Self::V3(gateway) => rotate_key_v3(gateway, vault, account, old, new, phone)
                .await
                .map(drop),
        }
    }

    async fn delete_backup(&self) -> anyhow::Result<()> {
        match self {
            Self::V2(gateway) => gateway.delete_backup().await.map(drop)?,
            Self::V3(gateway) => gateway.delete_backup().await.map(drop)?,
        }
        Ok(())
    }
}

/// One day's incremental backup.
#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    #[serde(flatten)]
    pub changed: DayStats,
    /// Plaintext bytes of the chunks the backup sent.
    pub uploaded_plain_bytes: u64,
    /// Sealed bytes sent, manifest included.
    pub uploaded_bytes: u64,
    pub manifest_bytes: u64,
    pub uploaded_chunks: usize,
    pub chunks: usize,
    /// S3 objects the backup wrote (chunks or packs, manifest, record).
    pub uploaded_objects: usize,
    pub secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyFlowReport {
    pub storage: Storage,
    pub account: String,
    pub seed: u64,
    pub files: u32,
    pub device_bytes: u64,
    pub db_bytes: u64,
    pub media_bytes: u64,
    pub uploaded_bytes: u64,
    /// S3 objects the first backup wrote.
    pub uploaded_objects: usize,
    pub backup_secs: f64,
    pub days: Vec<DayReport>,
    /// Seconds to rotate the key (re-encrypt and re-upload everything).
    pub rotation_secs: Option<f64>,
    pub restore_secs: f64,
    /// Plaintext bytes the restore wrote (the phone after its days).
    pub restored_bytes: u64,
    /// Paths that differ between the phone and its restore; empty on success.
    pub mismatches: Vec<String>,
    pub old_phone: PathBuf,
    pub new_phone: PathBuf,
}

impl KeyFlowReport {
    pub fn backup_mib_per_sec(&self) -> f64 {
        mib_per_sec(self.device_bytes, self.backup_secs)
    }

    pub fn restore_mib_per_sec(&self) -> f64 {
        mib_per_sec(self.restored_bytes, self.restore_secs)
    }
}

pub fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
}

impl KeyFlow<'_> {
    pub async fn run(&self) -> anyhow::Result<KeyFlowReport> {
        let old_phone = self.work_dir.join(format!("phone-{}", self.account));
        let new_phone = self.work_dir.join(format!("new-phone-{}", self.account));
        for dir in [&old_phone, &new_phone] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
        }
        let stats: PhoneStats = phone::create_phone(&old_phone, self.seed, &self.profile)?;
        let gateway = match self.storage {
            Storage::V2 => Gateway::V2(self.services.gateway(&self.account)?),
            Storage::V3 => Gateway::V3(self.services.pack_gateway(&self.account)?),
        };
        // A key user's vault record holds no password, so the KSF is unused.
        let vault = self.services.vault(
            &self.account,
            self.vault_fingerprint,
            KsfStrength::Production,
        )?;
        let account = self.account.as_str();

        // Enable backups: the phone makes a key and shows it to the user
        // once; the vault records its auth key and, from now on, the pointer.
        let key = RootKey::generate();
        let shown = key.to_display_digits();
        match vault.enable_key_backup(&key, None).await {
            Ok(()) => {}
            // Left over from an earlier run with the same seed: start over
            // (nothing of the old backup survives), then enable.
            Err(VaultError::ProofRequired | VaultError::KeyErased) => {
                vault.start_over().await?;
                gateway.delete_backup().await?;
                if let Gateway::V3(_) = gateway {
                    // The v2 objects of an earlier run go too.
                    self.services
                        .gateway(&self.account)?
                        .delete_backup()
                        .await?;
                }
                vault.enable_key_backup(&key, None).await?;
            }
            Err(other) => return Err(other.into()),
        }
        info!(account, "backups enabled with a 64-digit key");

        let started = Instant::now();
        let backup = gateway.back_up(&vault, account, &key, &old_phone).await?;
        let backup_secs = started.elapsed().as_secs_f64();

        let mut days = Vec::new();
        for day in 1..=self.days {
            let changed = day::live_one_day(&old_phone, self.seed, day, self.activity)?;
            let started = Instant::now();
            let daily = gateway.back_up(&vault, account, &key, &old_phone).await?;
            days.push(DayReport {
                changed,
                uploaded_plain_bytes: daily.uploaded_plain_bytes,
                uploaded_bytes: daily.uploaded_bytes,
                manifest_bytes: daily.manifest_bytes,
                uploaded_chunks: daily.uploaded_chunks,
                chunks: daily.chunks,
                uploaded_objects: daily.uploaded_objects,
                secs: started.elapsed().as_secs_f64(),
            });
        }

        // Key rotation: a new key is shown before anything is committed
        // under it; everything is re-encrypted under it; the old generation
        // (and with it the old key's use) is gone.
        let mut rotation_secs = None;
        let mut shown = shown;
        if self.rotate {
            let started = Instant::now();
            let new_key = RootKey::generate();
            shown = new_key.to_display_digits();
            gateway
                .rotate(&vault, account, &key, &new_key, &old_phone)
                .await?;
            rotation_secs = Some(started.elapsed().as_secs_f64());
            let old_key_target = self.work_dir.join(format!("old-key-{account}"));
            let refused = gateway
                .restore(&vault, account, &key, &old_key_target)
                .await;
            anyhow::ensure!(
                matches!(refused, Err(backup_client::RestoreError::OtherKey { .. })),
                "the old key must be refused after rotation: {refused:?}"
            );
            info!(account, "key rotated");
        }
        drop(key);

        // The phone is lost; on the new phone the user types the 64 digits.
        let typed = RootKey::parse(&shown)?;
        let started = Instant::now();
        let restored = gateway.restore(&vault, account, &typed, &new_phone).await?;
        let restore_secs = started.elapsed().as_secs_f64();

        let mismatches = phone::diff_trees(&old_phone, &new_phone)?;
        Ok(KeyFlowReport {
            storage: self.storage,
            account: account.to_string(),
            seed: self.seed,
            files: stats.files,
            device_bytes: stats.bytes,
            db_bytes: stats.db_bytes,
            media_bytes: stats.media_bytes,
            uploaded_bytes: backup.uploaded_bytes,
            uploaded_objects: backup.uploaded_objects,
            backup_secs,
            days,
            rotation_secs,
            restore_secs,
            restored_bytes: restored.bytes,
            mismatches,
            old_phone,
            new_phone,
        })
    }
}
