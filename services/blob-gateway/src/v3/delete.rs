//! DeleteBackup: everything of the account goes. The commit record goes
//! first, so a half-deleted backup is never presented as committed.

use account_token::AccountId;

use crate::v3::Core;
use crate::v3::error::V3Error;
use crate::v3::layout;

pub async fn delete_backup(core: &Core, account: &AccountId) -> Result<u64, V3Error> {
    let _guard = core.order.lock(account).await;
    let objects = core.store.list(&layout::account_prefix(account)).await?;
    let record = layout::record_key(account);
    core.store.delete_many(vec![record.clone()]).await?;
    let rest: Vec<String> = objects
        .iter()
        .map(|object| object.key.clone())
        .filter(|key| *key != record)
        .collect();
    core.store.delete_many(rest).await?;
    Ok(objects.len() as u64)
}
