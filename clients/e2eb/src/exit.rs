//! What a failure means to a script: each error the library can return is
//! sorted into one kind with its own exit code (listed in `--help` and the
//! README), so a caller can tell a wrong password from a tampered backup
//! from an unreachable service without parsing messages.

use backup_client::freshness::FreshnessError;
use backup_client::rotate::RotateError;
use backup_client::vault::VaultError;
use backup_client::{BackupError, GatewayError, RestoreError};
use serde::Serialize;

use crate::secrets::UsageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Other,
    Usage,
    WrongPassword,
    KeyErased,
    Integrity,
    Unavailable,
    WrongKey,
    NotEnabled,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::WrongPassword => 3,
            Kind::KeyErased => 4,
            Kind::Integrity => 5,
            Kind::Unavailable => 6,
            Kind::WrongKey => 7,
            Kind::NotEnabled => 8,
        }
    }
}

/// The kind of the first error in `error`'s chain that has one.
pub fn classify(error: &anyhow::Error) -> Kind {
    error
        .chain()
        .find_map(|cause| {
            if cause.is::<UsageError>() || cause.is::<rpc::ClientSetupError>() {
                return Some(Kind::Usage);
            }
            if let Some(e) = cause.downcast_ref::<VaultError>() {
                return Some(vault(e));
            }
            if let Some(e) = cause.downcast_ref::<GatewayError>() {
                return Some(gateway(e));
            }
            if let Some(e) = cause.downcast_ref::<BackupError>() {
                return Some(backup(e));
            }
            if let Some(e) = cause.downcast_ref::<RestoreError>() {
                return Some(restore(e));
            }
            if let Some(e) = cause.downcast_ref::<RotateError>() {
                return Some(match e {
                    RotateError::NotStarted(e) | RotateError::NotFinished(e) => vault(e),
                    RotateError::Unsettled { source, .. } => backup(source),
                });
            }
            if cause.is::<FreshnessError>() {
                return Some(Kind::Integrity);
            }
            None
        })
        .unwrap_or(Kind::Other)
}

fn vault(error: &VaultError) -> Kind {
    match error {
        VaultError::WrongPassword { .. } => Kind::WrongPassword,
        VaultError::KeyErased => Kind::KeyErased,
        VaultError::NotRegistered => Kind::NotEnabled,
        VaultError::NoPassword | VaultError::Connect(_) => Kind::Usage,
        VaultError::ProofRejected => Kind::WrongKey,
        VaultError::RecordTampered | VaultError::VaultKeyMismatch { .. } => Kind::Integrity,
        VaultError::Unavailable(_) | VaultError::SessionLost => Kind::Unavailable,
        _ => Kind::Other,
    }
}

fn gateway(error: &GatewayError) -> Kind {
    match error {
        GatewayError::Unavailable(_) => Kind::Unavailable,
        GatewayError::Connect(_) => Kind::Usage,
        _ => Kind::Other,
    }
}

fn backup(error: &BackupError) -> Kind {
    match error {
        BackupError::Freshness(_) => Kind::Integrity,
        BackupError::KeyNotRegistered { .. } => Kind::WrongKey,
        BackupError::Gateway(e) => gateway(e),
        BackupError::Vault(e) => vault(e),
        BackupError::ReadDevice { .. } | BackupError::FileChanged { .. } => Kind::Other,
    }
}

fn restore(error: &RestoreError) -> Kind {
    match error {
        RestoreError::NoBackup => Kind::NotEnabled,
        RestoreError::TargetNotEmpty { .. } => Kind::Usage,
        RestoreError::OtherKey { .. } => Kind::WrongKey,
        RestoreError::WrongKeyOrForeignBackup
        | RestoreError::ManifestTampered
        | RestoreError::ManifestMismatch
        | RestoreError::Freshness(_)
        | RestoreError::UnsafePath { .. }
        | RestoreError::MissingFile { .. }
        | RestoreError::Integrity { .. } => Kind::Integrity,
        RestoreError::Vault(e) => vault(e),
        RestoreError::Gateway(e) => gateway(e),
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_code_and_errors_keep_their_kind_under_context() {
        let kinds = [
            Kind::Other,
            Kind::Usage,
            Kind::WrongPassword,
            Kind::KeyErased,
            Kind::Integrity,
            Kind::Unavailable,
            Kind::WrongKey,
            Kind::NotEnabled,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());

        let wrapped = anyhow::Error::new(RestoreError::Vault(VaultError::WrongPassword {
            guesses_remaining: 2,
        }))
        .context("restore failed");
        assert_eq!(classify(&wrapped), Kind::WrongPassword);
        let rollback = anyhow::Error::new(BackupError::Freshness(FreshnessError::RolledBack {
            served: 1,
            committed: 2,
        }));
        assert_eq!(classify(&rollback), Kind::Integrity);
        let erased = anyhow::Error::new(VaultError::KeyErased);
        assert_eq!(classify(&erased), Kind::KeyErased);
        let down = anyhow::Error::new(GatewayError::Unavailable("refused".into()));
        assert_eq!(classify(&down), Kind::Unavailable);
        assert_eq!(classify(&anyhow::anyhow!("disk full")), Kind::Other);
    }
}
