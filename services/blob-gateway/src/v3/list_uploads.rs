//! ListUploads: packs the account holds that the committed generation does
//! not reference (an interrupted backup's), so a resumed backup can reuse
//! them.

use account_token::AccountId;

use crate::v3::Core;
use crate::v3::error::V3Error;
use crate::v3::layout;
use crate::v3::record::{self, PackEntry};

pub async fn list_uploads(core: &Core, account: &AccountId) -> Result<Vec<PackEntry>, V3Error> {
    let current = record::read(core.store.as_ref(), account).await?;
    let prefix = layout::packs_prefix(account);
    let objects = core.store.list(&prefix).await?;
    Ok(objects
        .into_iter()
        .filter_map(|object| {
            let name = layout::pack_of_key(&prefix, &object.key)?;
            let committed = current
                .as_ref()
                .is_some_and(|c| c.record.references(name.as_str()));
            (!committed).then(|| PackEntry {
                name: name.to_string(),
                size: object.size,
            })
        })
        .collect())
}
