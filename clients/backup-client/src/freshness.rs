//! Freshness: the storage operator may serve an older backup (a rollback)
//! or another one altogether (a substitution); only the backup pointer in
//! the key vault says which generation the device last committed. [`judge`]
//! decides, purely, what a served manifest is in the pointer's eyes; backup
//! and restore refuse whatever it does not vouch for.

use crate::vault::{BackupRef, Pointer};

/// What the pointer says of a served generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouched {
    /// The committed generation.
    Committed,
    /// The announced generation: its commit landed but was never confirmed
    /// (the device crashed or lost the answer); confirming it settles it.
    Pending,
}

/// Why a served backup is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshnessError {
    #[error(
        "the storage served generation {served}, older than generation {committed} that the key \
         vault records as committed: a rollback. Refusing it; the newer backup must be put back"
    )]
    RolledBack { served: u64, committed: u64 },
    #[error(
        "the storage served a generation {served} that the key vault does not vouch for (its \
         manifest digest matches neither the committed nor the pending generation): a \
         substituted backup. Refusing it"
    )]
    Substituted { served: u64 },
    #[error(
        "the key vault records generation {committed} as committed but the storage has no backup \
         at all: it was deleted or lost by the storage"
    )]
    Missing { committed: u64 },
}

/// Judges the manifest the gateway served (`None`: it has no backup).
pub fn judge(
    pointer: &Pointer,
    served: Option<BackupRef>,
) -> Result<Option<Vouched>, FreshnessError> {
    let Some(served) = served else {
        return match pointer.committed {
            Some(committed) => Err(FreshnessError::Missing {
                committed: committed.generation,
            }),
            None => Ok(None),
        };
    };
    if pointer.committed == Some(served) {
        return Ok(Some(Vouched::Committed));
    }
    if pointer.pending.map(|p| p.backup) == Some(served) {
        return Ok(Some(Vouched::Pending));
    }
    match pointer.committed {
        Some(committed) if served.generation < committed.generation => {
            Err(FreshnessError::RolledBack {
                served: served.generation,
                committed: committed.generation,
            })
        }
        _ => Err(FreshnessError::Substituted {
            served: served.generation,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::PendingBackup;

    fn backup(generation: u64, digest: u8) -> BackupRef {
        BackupRef {
            generation,
            manifest_digest: [digest; 32],
        }
    }

    fn pointer(committed: Option<BackupRef>, pending: Option<BackupRef>) -> Pointer {
        Pointer {
            committed,
            pending: pending.map(|backup| PendingBackup {
                backup,
                auth_public_key: [0; 32],
            }),
            auth_public_key: [0; 32],
            has_password: false,
        }
    }

    #[test]
    fn the_committed_and_the_pending_generation_are_vouched_for() {
        let p = pointer(Some(backup(3, 3)), Some(backup(4, 4)));
        assert_eq!(judge(&p, Some(backup(3, 3))), Ok(Some(Vouched::Committed)));
        assert_eq!(judge(&p, Some(backup(4, 4))), Ok(Some(Vouched::Pending)));
        assert_eq!(judge(&pointer(None, None), None), Ok(None));
    }

    #[test]
    fn older_generations_are_rollbacks_and_the_rest_substitutions() {
        let p = pointer(Some(backup(3, 3)), Some(backup(4, 4)));
        assert_eq!(
            judge(&p, Some(backup(2, 2))),
            Err(FreshnessError::RolledBack {
                served: 2,
                committed: 3
            })
        );
        for served in [backup(3, 9), backup(4, 9), backup(5, 5)] {
            assert_eq!(
                judge(&p, Some(served)),
                Err(FreshnessError::Substituted {
                    served: served.generation
                })
            );
        }
        // Nothing vouched for at all: any served backup is substituted.
        assert_eq!(
            judge(&pointer(None, None), Some(backup(1, 1))),
            Err(FreshnessError::Substituted { served: 1 })
        );
        assert_eq!(
            judge(&p, None),
            Err(FreshnessError::Missing { committed: 3 })
        );
    }
}
