//! The orphan sweep: for every account under `v3/` (listed, so also
//! accounts that never committed), deletes packs no committed generation
//! references and manifests other than the committed one — but only those
//! older than a grace period, because another gateway may be committing a
//! fresh upload right now. It runs at start and then periodically.
//!
//! Before deleting, the account's record is read again: if a commit
//! happened meanwhile, the account is left for the next round.

use std::time::{Duration, SystemTime};

use account_token::AccountId;
use tracing::{info, warn};

use crate::objects::ObjectInfo;
use crate::v3::Core;
use crate::v3::error::V3Error;
use crate::v3::layout;
use crate::v3::record::{self, Current};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub accounts: u64,
    pub deleted: u64,
}

/// One round over every account. Errors of one account are logged and the
/// round goes on.
pub async fn sweep(core: &Core, grace: Duration) -> Result<Swept, V3Error> {
    let mut swept = Swept::default();
    for dir in core.store.list_dirs(layout::ROOT).await? {
        let name = dir[layout::ROOT.len()..].trim_end_matches('/');
        let Ok(account) = AccountId::new(name) else {
            warn!(prefix = %dir, "not an account's prefix; the sweep skips it");
            continue;
        };
        swept.accounts += 1;
        match sweep_account(core, &account, grace).await {
            Ok(deleted) => swept.deleted += deleted,
            Err(error) => {
                warn!(%account, %error, "sweeping the account failed; the next round retries")
            }
        }
    }
    core.metrics.objects_deleted.inc_by(swept.deleted);
    if swept.deleted > 0 {
        info!(
            accounts = swept.accounts,
            deleted = swept.deleted,
            "orphan sweep deleted objects"
        );
    }
    Ok(swept)
}

fn garbage(
    account: &AccountId,
    current: Option<&Current>,
    objects: &[ObjectInfo],
    cutoff: SystemTime,
) -> Vec<String> {
    let packs = layout::packs_prefix(account);
    let manifests = layout::manifests_prefix(account);
    let old = |object: &ObjectInfo| object.last_modified.is_some_and(|t| t < cutoff);
    objects
        .iter()
        .filter(|object| old(object))
        .filter(|object| {
            if let Some(name) = object.key.strip_prefix(&packs) {
                !current.is_some_and(|c| c.record.references(name))
            } else if object.key.starts_with(&manifests) {
                current.is_none_or(|c| c.record.manifest_key != object.key)
            } else {
                false
            }
        })
        .map(|object| object.key.clone())
        .collect()
}

/// Sweeps one account; returns the objects deleted.
pub async fn sweep_account(
    core: &Core,
    account: &AccountId,
    grace: Duration,
) -> Result<u64, V3Error> {
    let _guard = core.order.lock(account).await;
    let store = core.store.as_ref();
    let cutoff = SystemTime::now() - grace;
    let current = record::read(store, account).await?;
    let objects = store.list(&layout::account_prefix(account)).await?;
    let keys = garbage(account, current.as_ref(), &objects, cutoff);
    if keys.is_empty() {
        return Ok(0);
    }
    let now = record::read(store, account).await?;
    if now.as_ref().map(|c| &c.etag) != current.as_ref().map(|c| &c.etag) {
        return Ok(0);
    }
    Ok(store.delete_many(keys).await?)
}
