//! PutPack: one pack streamed in, visible whole or not at all.
//!
//! The header names the pack and its size, which must be a Padme length
//! within the pack limit; a pack the committed generation references is
//! never replaced; the account's committed and uncommitted bytes plus this
//! pack must fit the quota. The data goes to the store as it arrives (one
//! PUT up to the part size, multipart above); a body that ends short, runs
//! long or breaks drops the upload, and nothing is kept.

use std::sync::{Arc, Mutex};

use account_token::AccountId;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::failpoint;
use crate::objects::StoreError;
use crate::v3::error::V3Error;
use crate::v3::layout::{self, PackName};
use crate::v3::{Core, record};

/// Largest data payload per upload message.
pub const MESSAGE_BYTES: u64 = 1024 * 1024;

/// What the header of an upload declares.
#[derive(Debug, Clone)]
pub struct PackHeader {
    pub name: String,
    pub size: u64,
}

/// Checks the header before any byte is stored.
async fn admit(core: &Core, account: &AccountId, header: &PackHeader) -> Result<PackName, V3Error> {
    let name = PackName::parse(&header.name)?;
    if header.size == 0 || !padme::is_padded(header.size) {
        return Err(V3Error::NotPadded {
            what: "pack",
            size: header.size,
        });
    }
    if header.size > core.limits.max_pack_bytes {
        return Err(V3Error::PackTooLarge {
            size: header.size,
            limit: core.limits.max_pack_bytes,
        });
    }
    let current = record::read(core.store.as_ref(), account).await?;
    if let Some(current) = &current
        && current.record.references(name.as_str())
    {
        return Err(V3Error::PackCommitted(name.to_string()));
    }
    let packs_prefix = layout::packs_prefix(account);
    let held: u64 = core
        .store
        .list(&packs_prefix)
        .await?
        .iter()
        .filter(|object| object.key[packs_prefix.len()..] != *name.as_str())
        .map(|object| object.size)
        .sum();
    let manifest = current.map_or(0, |c| c.record.manifest_size);
    let needed = held.saturating_add(manifest).saturating_add(header.size);
    if needed > core.limits.quota_bytes {
        return Err(V3Error::QuotaExceeded {
            needed,
            quota: core.limits.quota_bytes,
        });
    }
    Ok(name)
}

/// Stores the pack `header` declares from `data`.
pub async fn put_pack<S>(
    core: &Core,
    account: &AccountId,
    header: PackHeader,
    data: S,
) -> Result<(), V3Error>
where
    S: Stream<Item = Result<Bytes, V3Error>> + Send + 'static,
{
    let name = admit(core, account, &header).await?;
    // The store sees only bytes; why a body stopped is kept here.
    let refusal: Arc<Mutex<Option<V3Error>>> = Arc::default();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let body = {
        let (refusal, received) = (refusal.clone(), received.clone());
        data.map(move |next| {
            let outcome = next.and_then(|bytes| {
                let len = bytes.len() as u64;
                if len > MESSAGE_BYTES {
                    return Err(V3Error::MessageTooLarge {
                        size: len,
                        limit: MESSAGE_BYTES,
                    });
                }
                received.fetch_add(len, std::sync::atomic::Ordering::SeqCst);
                Ok(bytes)
            });
            outcome.map_err(|error| {
                let text = error.to_string();
                *refusal.lock().unwrap() = Some(error);
                StoreError::Aborted(text)
            })
        })
        .boxed()
    };
    let key = layout::pack_key(account, &name);
    match core.store.put_stream(&key, header.size, body).await {
        Ok(()) => {
            failpoint::hit("put-pack:after-store");
            Ok(())
        }
        Err(error) => {
            if let Some(refusal) = refusal.lock().unwrap().take() {
                return Err(refusal);
            }
            let received = received.load(std::sync::atomic::Ordering::SeqCst);
            match error {
                StoreError::Aborted(_) if received != header.size => Err(V3Error::SizeMismatch {
                    declared: header.size,
                    received,
                }),
                other => Err(other.into()),
            }
        }
    }
}
