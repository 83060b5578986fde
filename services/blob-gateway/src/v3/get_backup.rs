//! GetBackup and GetManifest: the committed generation and its manifest.

use account_token::AccountId;
use bytes::Bytes;

use crate::objects::StoreError;
use crate::v3::Core;
use crate::v3::error::V3Error;
use crate::v3::list_uploads::list_uploads;
use crate::v3::record::{self, CommitRecord};

/// The committed generation and the bytes of uploads no commit references.
#[derive(Debug)]
pub struct Backup {
    pub record: CommitRecord,
    pub uncommitted_bytes: u64,
}

pub async fn get_backup(core: &Core, account: &AccountId) -> Result<Backup, V3Error> {
    let current = record::read(core.store.as_ref(), account)
        .await?
        .ok_or(V3Error::NoBackup)?;
    let uncommitted_bytes = list_uploads(core, account)
        .await?
        .iter()
        .map(|pack| pack.size)
        .sum();
    Ok(Backup {
        record: current.record,
        uncommitted_bytes,
    })
}

/// The sealed manifest of `generation`, which must be the committed one.
pub async fn get_manifest(
    core: &Core,
    account: &AccountId,
    generation: u64,
) -> Result<Bytes, V3Error> {
    let current = record::read(core.store.as_ref(), account)
        .await?
        .ok_or(V3Error::NoBackup)?;
    if current.record.generation != generation {
        return Err(V3Error::GenerationNotCommitted {
            requested: generation,
            committed: current.record.generation,
        });
    }
    let manifest = core
        .store
        .get(&current.record.manifest_key)
        .await?
        .ok_or_else(|| {
            StoreError::Other(format!(
                "the manifest of committed generation {generation} is missing"
            ))
        })?;
    Ok(manifest.bytes)
}
