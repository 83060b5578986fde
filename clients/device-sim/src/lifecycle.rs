//! One simulated phone's life with a 64-digit key: enable backups, back up,
//! lose the phone, restore on a new one, check that every byte came back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use account_token::{AccountId, SigningKey};
use backup_client::{BearerToken, GatewayClient, RootKey};
use serde::Serialize;
use tracing::info;

use crate::phone::{self, PhoneProfile, PhoneStats};

/// Everything one run needs.
pub struct KeyFlow<'a> {
    pub gateway_endpoint: &'a str,
    pub token_key: &'a SigningKey,
    pub account: AccountId,
    pub seed: u64,
    pub profile: PhoneProfile,
    /// Scratch directory for the old and the new phone; emptied first.
    pub work_dir: &'a Path,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyFlowReport {
    pub account: String,
    pub seed: u64,
    pub files: u32,
    pub device_bytes: u64,
    pub db_bytes: u64,
    pub media_bytes: u64,
    pub uploaded_bytes: u64,
    pub backup_secs: f64,
    pub restore_secs: f64,
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
        mib_per_sec(self.device_bytes, self.restore_secs)
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
        let token = BearerToken::new(
            self.token_key
                .mint(&self.account, Duration::from_secs(3600)),
        );
        let gateway = GatewayClient::connect(self.gateway_endpoint, token)?;
        let account = self.account.as_str();

        // Enable backups: the phone makes a key and shows it to the user once.
        let key = RootKey::generate();
        let shown = key.to_display_digits();
        info!(account, "backups enabled with a 64-digit key");

        let started = Instant::now();
        let backup = backup_client::back_up(&gateway, account, &key, &old_phone).await?;
        let backup_secs = started.elapsed().as_secs_f64();
        drop(key);

        // The phone is lost; on the new phone the user types the 64 digits.
        let typed = RootKey::parse(&shown)?;
        let started = Instant::now();
        backup_client::restore(&gateway, account, &typed, &new_phone).await?;
        let restore_secs = started.elapsed().as_secs_f64();

        let mismatches = phone::diff_trees(&old_phone, &new_phone)?;
        Ok(KeyFlowReport {
            account: account.to_string(),
            seed: self.seed,
            files: stats.files,
            device_bytes: stats.bytes,
            db_bytes: stats.db_bytes,
            media_bytes: stats.media_bytes,
            uploaded_bytes: backup.uploaded_bytes,
            backup_secs,
            restore_secs,
            mismatches,
            old_phone,
            new_phone,
        })
    }
}
