//! One phone's turn: the events of one day, run against the stack with the
//! real client. Between turns a phone is its folder on disk plus a
//! [`PhoneState`] of a few dozen bytes (its key and counters); a turn opens
//! the files, connects, runs, measures each operation as a [`Sample`] and
//! lets everything go again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use account_token::AccountId;
use anyhow::{Context, bail, ensure};
use backup_client::vault::{KsfStrength, Password, Proof, VaultClient, VaultError};
use backup_client::{BackupReport, GatewayClient, RestoreError, RestoreReport, RootKey};
use serde::{Deserialize, Serialize};

use backup_client::rotate;

use super::schedule::{Action, ChangeProof, Event, Flow, Method, PhonePlan};
use crate::services::Services;
use crate::{day, phone};

/// What every turn shares: where the stack is and how to reach it.
pub struct Shared {
    pub services: Services,
    pub vault_fingerprint: String,
    pub ksf: KsfStrength,
    /// Holds `phone-<index>` folders.
    pub phones_dir: PathBuf,
    /// The vault's guess limit, asked once at the start.
    pub max_guesses: u32,
    /// When the run started; samples are timed from here.
    pub started: Instant,
}

/// What a phone keeps between turns: nothing that grows with its data.
#[derive(Default)]
pub struct PhoneState {
    /// The backup key, as the phone's keystore holds it.
    key: Option<RootKey>,
    /// Which of the phone's passwords is current.
    password_version: u32,
    /// Disabled, or stopped by an unexpected error: no more turns.
    pub finished: bool,
}

/// One operation of one phone, as measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    pub flow: Option<Flow>,
    pub phone: u32,
    pub day: u32,
    /// Seconds from the start of the run to the start of the operation.
    pub start_secs: f64,
    pub secs: f64,
    /// Sealed bytes sent or received.
    pub bytes_moved: u64,
    /// Plaintext bytes the operation had to protect anew (changed pages
    /// and new media; everything for full backups and rotations).
    pub bytes_changed: u64,
    /// Sealed bytes uploaded (manifest included).
    pub bytes_uploaded: u64,
    /// Answers the user expected: wrong password, key erased.
    pub refusals: u32,
    /// Wrong passwords the vault counted.
    pub wrong_guesses: u32,
    pub lockouts: u32,
    /// For restores: whether the restored phone equals the lost one.
    pub verified: Option<bool>,
    /// An unexpected error, or a verification that failed.
    pub error: Option<String>,
}

/// Runs `plan`'s events for `day`; stops the phone at the first failure.
pub async fn run_turn(
    shared: &Shared,
    plan: &PhonePlan,
    day: u32,
    state: &mut PhoneState,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut phone = match Phone::open(shared, plan) {
        Ok(phone) => phone,
        Err(error) => {
            state.finished = true;
            samples.push(Sample {
                flow: None,
                phone: plan.index,
                day,
                error: Some(format!("{error:#}")),
                ..Sample::default()
            });
            return samples;
        }
    };
    for event in plan.events_on(day) {
        let before = samples.len();
        if let Err(error) = phone.run(event, state, &mut samples).await {
            // The flow that failed is the first one without its sample.
            let flow = event.action.flows()[samples.len() - before];
            samples.push(Sample {
                flow: Some(flow),
                phone: plan.index,
                day,
                start_secs: phone
                    .op_started
                    .saturating_duration_since(shared.started)
                    .as_secs_f64(),
                secs: phone.op_started.elapsed().as_secs_f64(),
                error: Some(format!("{error:#}")),
                ..Sample::default()
            });
            state.finished = true;
            break;
        }
        if event.action == Action::Disable {
            state.finished = true;
        }
        if state.finished {
            break;
        }
    }
    samples
}

/// A phone during its turn.
struct Phone<'a> {
    shared: &'a Shared,
    plan: &'a PhonePlan,
    account: AccountId,
    root: PathBuf,
    gateway: GatewayClient,
    vault: VaultClient,
    /// When the operation in progress started.
    op_started: Instant,
    day: u32,
}

impl<'a> Phone<'a> {
    fn open(shared: &'a Shared, plan: &'a PhonePlan) -> anyhow::Result<Self> {
        let account = AccountId::new(plan.account.clone())?;
        let gateway = shared.services.gateway(&account)?;
        let vault = shared
            .services
            .vault(&account, &shared.vault_fingerprint, shared.ksf)?;
        Ok(Self {
            shared,
            plan,
            root: phone_dir(&shared.phones_dir, plan.index),
            account,
            gateway,
            vault,
            op_started: Instant::now(),
            day: 0,
        })
    }

    fn name(&self) -> &str {
        self.account.as_str()
    }

    fn password(&self, version: u32) -> Password {
        Password::new(format!("{} password #{version}", self.plan.account))
    }

    fn start(&mut self) {
        self.op_started = Instant::now();
    }

    /// A sample for the operation started last, timed until now.
    fn sample(&self, flow: Flow) -> Sample {
        Sample {
            flow: Some(flow),
            phone: self.plan.index,
            day: self.day,
            start_secs: self
                .op_started
                .saturating_duration_since(self.shared.started)
                .as_secs_f64(),
            secs: self.op_started.elapsed().as_secs_f64(),
            ..Sample::default()
        }
    }

    async fn run(
        &mut self,
        event: &Event,
        state: &mut PhoneState,
        samples: &mut Vec<Sample>,
    ) -> anyhow::Result<()> {
        self.day = event.day;
        match event.action {
            Action::Enable { method } => samples.push(self.enable(method, state).await?),
            Action::BackupFull => {
                let plain = self.back_up(state).await?;
                let mut sample = self.sample(Flow::BackupFull);
                sample.bytes_changed = plain.plain_bytes;
                add_upload(&mut sample, &plain);
                samples.push(sample);
            }
            Action::Live => {
                let (root, seed, activity) = (
                    self.root.clone(),
                    self.plan.data_seed,
                    self.plan.profile.activity(),
                );
                let day = event.day;
                let changed =
                    blocking(move || day::live_one_day(&root, seed, day, activity)).await?;
                let report = self.back_up(state).await?;
                let mut sample = self.sample(Flow::BackupIncremental);
                sample.bytes_changed = changed.changed_bytes;
                add_upload(&mut sample, &report);
                samples.push(sample);
            }
            Action::ChangePassword { proof, typo } => {
                samples.push(self.change_password(proof, typo, state).await?)
            }
            Action::RotateKey => samples.push(self.rotate_key(state).await?),
            Action::LosePhone { typo } => samples.push(self.lose_phone(typo, state).await?),
            Action::ForgetPassword => {
                samples.push(self.lockout(state).await?);
                samples.push(self.start_over(state).await?);
            }
            Action::Disable => samples.push(self.disable(state).await?),
        }
        Ok(())
    }

    async fn enable(&mut self, method: Method, state: &mut PhoneState) -> anyhow::Result<Sample> {
        if !self.root.exists() {
            let (root, seed, profile) = (
                self.root.clone(),
                self.plan.data_seed,
                self.plan.profile.phone(),
            );
            blocking(move || phone::create_phone(&root, seed, &profile).map(drop)).await?;
        }
        self.start();
        let key = RootKey::generate();
        let password = self.password(0);
        let enable = || async {
            match method {
                Method::Password => self.vault.register(&password, &key, None).await,
                // A key user's record holds the auth key and the pointer.
                Method::Key => self.vault.enable_key_backup(&key, None).await,
            }
        };
        match enable().await {
            Ok(()) => {}
            // Left over from an earlier run with the same seed: the user
            // starts over (nothing of the old backup survives).
            Err(VaultError::ProofRequired | VaultError::KeyErased) => {
                self.vault.start_over().await?;
                self.gateway.delete_backup().await?;
                enable().await?;
            }
            Err(other) => return Err(other.into()),
        }
        state.key = Some(key);
        state.password_version = 0;
        Ok(self.sample(Flow::Enable))
    }

    async fn back_up(&mut self, state: &mut PhoneState) -> anyhow::Result<BackupReport> {
        let key = state.key.as_ref().context("backups are not enabled")?;
        self.start();
        let report =
            backup_client::back_up(&self.gateway, &self.vault, self.name(), key, &self.root)
                .await?;
        Ok(report)
    }

    /// One wrong password, as a user who mistypes; must be refused.
    async fn mistype(&self, sample: &mut Sample) -> anyhow::Result<()> {
        let typed = Password::new(format!("{} mistyped", self.plan.account));
        match self.vault.recover(&typed).await {
            Err(VaultError::WrongPassword { .. }) => {
                sample.refusals += 1;
                sample.wrong_guesses += 1;
                Ok(())
            }
            other => bail!("a mistyped password was not refused: {:?}", other.map(drop)),
        }
    }

    async fn change_password(
        &mut self,
        proof: ChangeProof,
        typo: bool,
        state: &mut PhoneState,
    ) -> anyhow::Result<Sample> {
        let key = state.key.as_ref().context("backups are not enabled")?;
        let new = self.password(state.password_version + 1);
        self.start();
        let mut counts = Sample::default();
        match proof {
            ChangeProof::OldPassword => {
                if typo {
                    self.mistype(&mut counts).await?;
                }
                let login = self
                    .vault
                    .recover(&self.password(state.password_version))
                    .await?;
                ensure!(
                    login.key.key_id() == key.key_id(),
                    "the vault returned another key than the phone's"
                );
                self.vault
                    .register(&new, &login.key, Some(Proof::LoginTicket(&login.ticket)))
                    .await?;
            }
            ChangeProof::Key => {
                self.vault
                    .register(&new, key, Some(Proof::BackupKey(key)))
                    .await?;
            }
        }
        // The new password must unlock the same key.
        let check = self.vault.recover(&new).await?;
        ensure!(
            check.key.key_id() == key.key_id(),
            "the new password unlocks another key"
        );
        state.password_version += 1;
        Ok(Sample {
            refusals: counts.refusals,
            wrong_guesses: counts.wrong_guesses,
            ..self.sample(Flow::PasswordChange)
        })
    }

    /// A new key, everything re-encrypted; a password phone's vault record
    /// follows in the library's three safe steps.
    async fn rotate_key(&mut self, state: &mut PhoneState) -> anyhow::Result<Sample> {
        let old = state.key.take().context("backups are not enabled")?;
        self.start();
        let (new, report) = match self.plan.method {
            Method::Key => {
                // The new key is the user's before anything is committed.
                let new = RootKey::generate();
                let report = rotate::rotate_key(
                    &self.gateway,
                    &self.vault,
                    self.name(),
                    &old,
                    &new,
                    &self.root,
                )
                .await?;
                (new, report)
            }
            Method::Password => {
                let password = self.password(state.password_version);
                rotate::rotate_key_with_vault(
                    &self.gateway,
                    &self.vault,
                    &password,
                    self.name(),
                    &old,
                    &self.root,
                )
                .await?
            }
        };
        let mut sample = self.sample(Flow::KeyRotation);
        sample.bytes_changed = report.plain_bytes;
        add_upload(&mut sample, &report);
        state.key = Some(new);
        // Outside the timing: the old key no longer opens the backup.
        let probe = self.root.with_extension("old-key");
        let refused = self.restore(&[&old], &probe).await;
        remove_dir_if_exists(&probe)?;
        ensure!(
            matches!(refused, Err(RestoreError::OtherKey { .. })),
            "the old key was not refused after rotation: {:?}",
            refused.map(drop)
        );
        Ok(sample)
    }

    async fn lose_phone(&mut self, typo: bool, state: &mut PhoneState) -> anyhow::Result<Sample> {
        let phone_key = state.key.as_ref().context("backups are not enabled")?;
        let new_phone = self.root.with_extension("new");
        remove_dir_if_exists(&new_phone)?;
        self.start();
        let mut counts = Sample::default();
        // Every key the new phone got; the backup's manifest names the one.
        let keys = match self.plan.method {
            Method::Password => {
                if typo {
                    self.mistype(&mut counts).await?;
                }
                let recovered = self
                    .vault
                    .recover(&self.password(state.password_version))
                    .await?;
                let mut keys = vec![recovered.key.clone()];
                keys.extend(recovered.previous.clone());
                keys
            }
            // The user types the 64 digits they wrote down.
            Method::Key => vec![RootKey::parse(&phone_key.to_display_digits())?],
        };
        let key = keys[0].clone();
        let restored = self
            .restore(&keys.iter().collect::<Vec<_>>(), &new_phone)
            .await?;
        let mut sample = self.sample(Flow::Restore);
        sample.refusals = counts.refusals;
        sample.wrong_guesses = counts.wrong_guesses;
        sample.bytes_moved = restored.downloaded_bytes;

        let (old, new) = (self.root.clone(), new_phone.clone());
        let differ = blocking(move || Ok(phone::diff_trees(&old, &new)?)).await?;
        sample.verified = Some(differ.is_empty());
        if !differ.is_empty() {
            sample.error = Some(format!(
                "the restored phone differs in {} paths, first {}",
                differ.len(),
                differ[0]
            ));
            state.finished = true;
            return Ok(sample);
        }
        // The new phone carries on in the old one's place.
        std::fs::remove_dir_all(&self.root)?;
        std::fs::rename(&new_phone, &self.root)?;
        state.key = Some(key);
        Ok(sample)
    }

    /// Restores with the first of `keys` the backup was made with, after
    /// the vault's pointer vouched for the served backup.
    async fn restore(
        &self,
        keys: &[&RootKey],
        target: &Path,
    ) -> Result<RestoreReport, RestoreError> {
        backup_client::restore_any(&self.gateway, &self.vault, self.name(), keys, target).await
    }

    async fn lockout(&mut self, state: &mut PhoneState) -> anyhow::Result<Sample> {
        self.start();
        let max = self.shared.max_guesses;
        let mut sample = Sample::default();
        for guess in 1..=max {
            let typed = Password::new(format!("{} forgotten, guess {guess}", self.plan.account));
            match self.vault.recover(&typed).await {
                Err(VaultError::WrongPassword { .. }) if guess < max => {}
                Err(VaultError::KeyErased) if guess == max => {}
                other => bail!(
                    "guess {guess} of {max}: unexpected answer {:?}",
                    other.map(drop)
                ),
            }
            sample.refusals += 1;
            sample.wrong_guesses += 1;
        }
        // From now on even the right password is refused, for good.
        match self
            .vault
            .recover(&self.password(state.password_version))
            .await
        {
            Err(VaultError::KeyErased) => sample.refusals += 1,
            other => bail!(
                "the right password after the lockout: {:?}",
                other.map(drop)
            ),
        }
        Ok(Sample {
            refusals: sample.refusals,
            wrong_guesses: sample.wrong_guesses,
            lockouts: 1,
            ..self.sample(Flow::Lockout)
        })
    }

    /// After a lockout: erase what is left, enable anew, back up in full.
    async fn start_over(&mut self, state: &mut PhoneState) -> anyhow::Result<Sample> {
        self.start();
        self.vault.start_over().await?;
        self.gateway.delete_backup().await?;
        let key = RootKey::generate();
        let password = self.password(state.password_version + 1);
        self.vault.register(&password, &key, None).await?;
        let report =
            backup_client::back_up(&self.gateway, &self.vault, self.name(), &key, &self.root)
                .await?;
        state.password_version += 1;
        state.key = Some(key);
        let mut sample = self.sample(Flow::StartOver);
        sample.bytes_changed = report.plain_bytes;
        add_upload(&mut sample, &report);
        Ok(sample)
    }

    async fn disable(&mut self, state: &mut PhoneState) -> anyhow::Result<Sample> {
        let key = state.key.take().context("backups are not enabled")?;
        self.start();
        self.vault.delete(Proof::BackupKey(&key)).await?;
        self.gateway.delete_backup().await?;
        let sample = self.sample(Flow::Disable);
        ensure!(
            self.gateway.get_backup().await?.is_none(),
            "the backup survived disabling backups"
        );
        let after = self.vault.pointer().await;
        ensure!(
            matches!(after, Err(VaultError::NotRegistered)),
            "the vault record survived disabling backups: {:?}",
            after.map(drop)
        );
        Ok(sample)
    }
}

/// Where phone `index` lives.
pub fn phone_dir(phones_dir: &Path, index: u32) -> PathBuf {
    phones_dir.join(format!("phone-{index}"))
}

fn add_upload(sample: &mut Sample, report: &BackupReport) {
    sample.bytes_uploaded = report.uploaded_bytes;
    sample.bytes_moved = report.uploaded_bytes;
}

fn remove_dir_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs file work (SQLite, tree comparison) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a blocking task panicked")?
}
