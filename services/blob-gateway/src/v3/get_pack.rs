//! GetPack: a pack, or a byte range of it, as a stream of bytes (the
//! service cuts it into bounded messages).

use account_token::AccountId;

use crate::objects::Body;
use crate::v3::Core;
use crate::v3::error::V3Error;
use crate::v3::layout::{self, PackName};

/// `length` bytes from `offset` of the pack (`length` 0: to its end). A
/// range that does not lie inside the pack is refused, not shortened.
pub async fn get_pack(
    core: &Core,
    account: &AccountId,
    name: &str,
    offset: u64,
    length: u64,
) -> Result<Body, V3Error> {
    let name = PackName::parse(name)?;
    let key = layout::pack_key(account, &name);
    let size = core
        .store
        .head(&key)
        .await?
        .ok_or_else(|| V3Error::PackNotFound(name.to_string()))?;
    let length = if length == 0 {
        size.saturating_sub(offset)
    } else {
        length
    };
    let inside = offset.checked_add(length).is_some_and(|end| end <= size) && offset <= size;
    if !inside {
        return Err(V3Error::RangeOutside {
            offset,
            length,
            size,
        });
    }
    Ok(core.store.get_range(&key, offset, Some(length)).await?)
}
