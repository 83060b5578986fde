//! One simulated phone's life with a backup password and the key vault:
//! enable, back up, restore on a new phone with the password, change the
//! password (with the old one, then with the 64-digit key), forget it until
//! the vault erases the key, start over, and finally disable backups.

use std::path::Path;
use std::time::Instant;

use account_token::AccountId;
use backup_client::RootKey;
use backup_client::vault::{KsfStrength, Password, Proof, VaultError};
use serde::Serialize;
use tracing::info;

use crate::phone::{self, PhoneProfile};
use crate::services::Services;

pub struct PasswordFlow<'a> {
    pub services: &'a Services,
    /// The vault public key fingerprint this phone trusts.
    pub vault_fingerprint: &'a str,
    pub account: AccountId,
    pub seed: u64,
    pub profile: PhoneProfile,
    pub work_dir: &'a Path,
    pub ksf: KsfStrength,
}

/// One step of the flow, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub secs: f64,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PasswordFlowReport {
    pub account: String,
    pub steps: Vec<Step>,
    /// Wrong guesses the vault served before it erased the key.
    pub guesses_until_erased: u32,
    pub max_guesses: u32,
    /// Paths that differ between a phone and its restore; empty on success.
    pub mismatches: Vec<String>,
}

struct Recorder {
    steps: Vec<Step>,
}

impl Recorder {
    fn record(&mut self, name: &'static str, started: Instant, outcome: impl Into<String>) {
        let step = Step {
            name,
            secs: started.elapsed().as_secs_f64(),
            outcome: outcome.into(),
        };
        info!(step = name, secs = step.secs, "password flow step");
        self.steps.push(step);
    }
}

impl PasswordFlow<'_> {
    pub async fn run(&self) -> anyhow::Result<PasswordFlowReport> {
        let account = self.account.as_str();
        let dir = |name: &str| self.work_dir.join(format!("{name}-{account}"));
        let old_phone = dir("phone");
        for name in ["phone", "new-phone", "newer-phone"] {
            let path = dir(name);
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        phone::create_phone(&old_phone, self.seed, &self.profile)?;
        let gateway = self.services.gateway(&self.account)?;
        let vault = self
            .services
            .vault(&self.account, self.vault_fingerprint, self.ksf)?;
        let (_, max_guesses) = vault.info().await?;
        let mut report = Recorder { steps: Vec::new() };
        let mut mismatches = Vec::new();
        let first = Password::new(format!("first password of {account}"));
        let second = Password::new(format!("second password of {account}"));
        let third = Password::new(format!("third password of {account}"));

        // 1. Enable backups with a password; back up.
        let started = Instant::now();
        let key = RootKey::generate();
        vault.register(&first, &key, None).await?;
        backup_client::back_up(&gateway, &vault, account, &key, &old_phone).await?;
        report.record("enable with password + back up", started, "ok");

        // 2. The phone is lost: restore on a new phone with the password.
        let started = Instant::now();
        let recovered = vault.recover(&first).await?;
        let new_phone = dir("new-phone");
        backup_client::restore(&gateway, &vault, account, &recovered.key, &new_phone).await?;
        mismatches.extend(phone::diff_trees(&old_phone, &new_phone)?);
        report.record("restore with password", started, "ok");

        // 3. Change the password with the old password (a fresh login).
        let started = Instant::now();
        let login = vault.recover(&first).await?;
        vault
            .register(&second, &login.key, Some(Proof::LoginTicket(&login.ticket)))
            .await?;
        report.record("change password with old password", started, "ok");

        // 4. Change it again with the 64-digit key.
        let started = Instant::now();
        vault
            .register(&third, &key, Some(Proof::BackupKey(&key)))
            .await?;
        report.record("change password with 64-digit key", started, "ok");

        // 4b. Rotate the key: the vault holds both keys until the new
        //     generation is committed, then the new one only.
        let started = Instant::now();
        let (key, _) = backup_client::rotate::rotate_key_with_vault(
            &gateway, &vault, &third, account, &key, &old_phone,
        )
        .await?;
        report.record("rotate key (vault updated in 3 safe steps)", started, "ok");

        // 5. The first password no longer works; the current one does.
        let started = Instant::now();
        let refused = match vault.recover(&first).await {
            Err(VaultError::WrongPassword { guesses_remaining }) => guesses_remaining,
            other => anyhow::bail!("the replaced password was not refused: {other:?}"),
        };
        let recovered = vault.recover(&third).await?;
        anyhow::ensure!(
            recovered.key.key_id() == key.key_id() && recovered.previous.is_none(),
            "after the rotation the vault must hold exactly the new key"
        );
        let newer_phone = dir("newer-phone");
        backup_client::restore(&gateway, &vault, account, &recovered.key, &newer_phone).await?;
        mismatches.extend(phone::diff_trees(&old_phone, &newer_phone)?);
        report.record(
            "old password refused, new one restores",
            started,
            format!("refused with {refused} guesses left"),
        );

        // 6. The user forgets the password and guesses until the vault
        //    erases the key; from then on even the right password fails.
        let started = Instant::now();
        let mut guesses = 0;
        loop {
            guesses += 1;
            match vault
                .recover(&Password::new(format!("guess {guesses}")))
                .await
            {
                Err(VaultError::WrongPassword { .. }) if guesses < max_guesses => {}
                Err(VaultError::KeyErased) => break,
                other => anyhow::bail!("guess {guesses} of {max_guesses}: unexpected {other:?}"),
            }
        }
        let after = vault.recover(&third).await;
        anyhow::ensure!(
            matches!(after, Err(VaultError::KeyErased)),
            "after the lockout the right password must fail too: {after:?}"
        );
        report.record(
            "forgotten password: lockout",
            started,
            format!(
                "key erased after {guesses} wrong guesses; the client says: {}",
                VaultError::KeyErased
            ),
        );

        // 7. Start over: erase what is left, enable backups anew.
        let started = Instant::now();
        vault.start_over().await?;
        gateway.delete_backup().await?;
        let new_key = RootKey::generate();
        vault.register(&first, &new_key, None).await?;
        backup_client::back_up(&gateway, &vault, account, &new_key, &old_phone).await?;
        report.record("start over + back up", started, "ok");

        // 8. Disable backups: vault record and blobs deleted.
        let started = Instant::now();
        vault.delete(Proof::BackupKey(&new_key)).await?;
        gateway.delete_backup().await?;
        anyhow::ensure!(
            matches!(vault.recover(&first).await, Err(VaultError::NotRegistered)),
            "the vault record survived disabling backups"
        );
        anyhow::ensure!(
            gateway.get_backup().await?.is_none(),
            "blobs survived disabling backups"
        );
        report.record("disable backups", started, "ok");

        Ok(PasswordFlowReport {
            account: account.to_string(),
            steps: report.steps,
            guesses_until_erased: guesses,
            max_guesses,
            mismatches,
        })
    }
}
