//! One function per command, each a composition of `backup-client` calls
//! (the library the simulator uses); each returns a [`Report`].

mod account;
mod data;

pub use account::{disable, enable, key_new, password_change, status};
pub use data::{backup, restore, rotate};

use backup_client::RootKey;
use backup_client::vault::{Password, Recovered, VaultError};

use crate::connect::Services;
use crate::output::Output;
use crate::secrets::{KeyFiles, Secrets, usage};

/// What a command runs with.
pub struct Session {
    pub services: Services,
    pub files: KeyFiles,
    pub secrets: Secrets,
    pub out: Output,
}

/// How this device proves it may use the backup.
pub enum Credential {
    /// The 64-digit key (key file, --key-fd or prompt).
    Key(RootKey),
    /// A password, and what logging in with it recovered.
    Password {
        password: Password,
        recovered: Recovered,
    },
}

impl Credential {
    pub fn key(&self) -> &RootKey {
        match self {
            Credential::Key(key) => key,
            Credential::Password { recovered, .. } => &recovered.key,
        }
    }
}

impl Session {
    pub fn account(&self) -> &str {
        self.services.account.as_str()
    }

    /// The key file or --key-fd if there is one; else the vault says
    /// whether the account has a password (then log in with it, which costs
    /// a guess if it is wrong) or uses the key (then prompt for it).
    pub async fn credential(&mut self) -> anyhow::Result<Credential> {
        if self.secrets.key_given() || self.files.current().exists() {
            return Ok(Credential::Key(self.secrets.key(&self.files.current())?));
        }
        let pointer = self.services.vault.pointer().await?;
        if !pointer.has_password {
            return Ok(Credential::Key(self.secrets.key(&self.files.current())?));
        }
        let password = self.secrets.password("Backup password: ")?;
        let recovered = self.login(&password).await?;
        Ok(Credential::Password {
            password,
            recovered,
        })
    }

    /// Logs in to the vault with `password` (a spinner meanwhile: the
    /// password stretching takes a moment).
    pub async fn login(&self, password: &Password) -> Result<Recovered, VaultError> {
        let _spinner = self.out.progress("logging in to the key vault");
        self.services.vault.recover(password).await
    }

    /// Refuses to work with a key while a key rotation is unfinished.
    pub fn no_rotation_under_way(&self) -> anyhow::Result<()> {
        if self.files.next().exists() {
            return Err(usage(format!(
                "a key rotation did not finish (the new key is in {}): run `e2eb rotate DIR` again first",
                self.files.next().display()
            )));
        }
        Ok(())
    }
}

/// A key's public id, as the library reports it (hex).
pub fn key_id(key: &RootKey) -> String {
    hex::encode(key.key_id())
}
