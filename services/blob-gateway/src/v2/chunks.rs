//! Chunks in and out: which ids the account holds, streamed uploads that
//! become visible only whole, streamed downloads.

use std::collections::HashSet;

use account_token::AccountId;
use aws_sdk_s3::primitives::ByteStream;
use e2eb_proto::storage::v2::{PutChunkRequest, put_chunk_request};
use futures::{StreamExt, TryStreamExt};
use tonic::Streaming;

use crate::config::Limits;
use crate::error::ServiceError;
use crate::failpoint;
use crate::store::{BlobWriter, Store, StoreError};
use crate::v2::layout::{self, ChunkId};
use crate::v2::record;

/// Most ids one `HasChunks` call may ask about.
pub const MAX_IDS_PER_CALL: usize = 1000;
/// Listing pages (1,000 keys each) `HasChunks` reads before it asks about
/// the remaining ids one by one.
const LIST_PAGE_BUDGET: usize = 2;
/// HEAD requests in flight at once for one `HasChunks` call; also the most
/// unknown ids that are asked about by HEAD alone, in one round trip.
const HEAD_CONCURRENCY: usize = 64;

/// Which of `ids` the account holds, in request order.
///
/// Most ids a device asks about are the previous generation's, and the
/// commit record lists exactly those: one GET answers them (the record's
/// chunks are never deleted while it is committed). The other ids — new
/// chunks, or uploads of a backup that was interrupted — are looked up in
/// the object store: up to [`HEAD_CONCURRENCY`] of them with one HEAD each
/// (one round trip), more by [`listed_or_headed`].
pub async fn present(
    store: &Store,
    account: &AccountId,
    ids: &[ChunkId],
) -> Result<Vec<ChunkId>, ServiceError> {
    if ids.len() > MAX_IDS_PER_CALL {
        return Err(ServiceError::TooManyIds {
            count: ids.len(),
            limit: MAX_IDS_PER_CALL,
        });
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let committed: HashSet<String> = record::read(store, account)
        .await?
        .map(|record| record.chunk_ids.into_iter().collect())
        .unwrap_or_default();
    let unknown: Vec<&ChunkId> = ids
        .iter()
        .filter(|id| !committed.contains(id.as_str()))
        .collect();
    let held = if unknown.len() <= HEAD_CONCURRENCY {
        headed(store, account, &unknown).await?
    } else {
        listed_or_headed(store, account, &unknown).await?
    };
    Ok(ids
        .iter()
        .filter(|id| committed.contains(id.as_str()) || held.contains(id.as_str()))
        .cloned()
        .collect())
}

/// Which of `ids` exist, by one listing of the key range they span
/// (`start-after` the smallest), for at most [`LIST_PAGE_BUDGET`] pages,
/// then one HEAD per id the listing did not reach. A page answers up to
/// 1,000 ids in one request where HEADs cost one each; the budget bounds
/// the listing for accounts holding many chunks beyond the asked range. A
/// client that sends its ids sorted makes each call's range narrow, so one
/// page usually answers it whatever the account's size.
async fn listed_or_headed(
    store: &Store,
    account: &AccountId,
    ids: &[&ChunkId],
) -> Result<HashSet<String>, ServiceError> {
    let (Some(smallest), Some(largest)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(HashSet::new());
    };
    let prefix = layout::chunks_prefix(account);
    // The smallest id without its last digit sorts just before the id itself.
    let start_after = format!("{prefix}{}", &smallest.as_str()[..63]);
    let listing = store
        .list_from(&prefix, &start_after, LIST_PAGE_BUDGET)
        .await?;
    // Ids past the listing's last key are unknown when it stopped early.
    let reached = match (listing.truncated, listing.objects.last()) {
        (false, _) => largest.as_str(),
        (true, Some(last)) => &last.key[prefix.len()..],
        (true, None) => "",
    };
    let unreached: Vec<&ChunkId> = ids
        .iter()
        .copied()
        .filter(|id| id.as_str() > reached)
        .collect();
    let mut held = headed(store, account, &unreached).await?;
    held.extend(
        listing
            .objects
            .iter()
            .map(|object| object.key[prefix.len()..].to_owned()),
    );
    Ok(held)
}

/// Which of `ids` exist, by one HEAD each, [`HEAD_CONCURRENCY`] at once.
async fn headed(
    store: &Store,
    account: &AccountId,
    ids: &[&ChunkId],
) -> Result<HashSet<String>, ServiceError> {
    // Owned items and a cloned store: borrowed items in a buffered stream
    // make the future fail the `Send` check of the gRPC handler.
    let keys: Vec<(String, String)> = ids
        .iter()
        .map(|id| (id.as_str().to_owned(), layout::chunk_key(account, id)))
        .collect();
    let held = futures::stream::iter(keys)
        .map(|(id, key)| {
            let store = store.clone();
            async move { Ok::<_, StoreError>(store.head(&key).await?.map(|_| id)) }
        })
        .buffer_unordered(HEAD_CONCURRENCY)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await?;
    Ok(held)
}

/// Receives one chunk: a header, then data. Returns `false` when the
/// account already held the chunk (the data is read and dropped). The chunk
/// becomes visible only whole: one PUT, or a completed multipart upload
/// above the part size; a failed or short upload leaves nothing.
pub async fn put(
    store: &Store,
    limits: &Limits,
    account: &AccountId,
    mut messages: Streaming<PutChunkRequest>,
) -> Result<(ChunkId, bool), ServiceError> {
    let header = match messages.message().await {
        Ok(Some(PutChunkRequest {
            part: Some(put_chunk_request::Part::Header(header)),
        })) => header,
        Ok(_) => {
            return Err(ServiceError::InvalidArgument(
                "the first PutChunk message must be the header".into(),
            ));
        }
        Err(status) => return Err(ServiceError::Stream(status)),
    };
    let id = ChunkId::parse(&header.chunk_id)?;
    if header.size > limits.max_chunk_bytes {
        return Err(ServiceError::ChunkTooLarge {
            size: header.size,
            limit: limits.max_chunk_bytes,
        });
    }
    let key = layout::chunk_key(account, &id);
    if store.head(&key).await?.is_some() {
        receive(&mut messages, header.size, None).await?;
        return Ok((id, false));
    }
    let mut writer = store.writer(key);
    match receive(&mut messages, header.size, Some(&mut writer)).await {
        Ok(()) => writer.finish().await?,
        Err(error) => {
            writer.abort().await;
            return Err(error);
        }
    }
    failpoint::hit("put-chunk:after-store");
    Ok((id, true))
}

/// Reads the data messages into `writer` (or drops them), checking that
/// exactly `declared` bytes arrive.
async fn receive(
    messages: &mut Streaming<PutChunkRequest>,
    declared: u64,
    mut writer: Option<&mut BlobWriter>,
) -> Result<(), ServiceError> {
    let mut received = 0u64;
    loop {
        let data = match messages.message().await {
            Ok(None) => break,
            Ok(Some(PutChunkRequest {
                part: Some(put_chunk_request::Part::Data(data)),
            })) => data,
            Ok(Some(_)) => {
                return Err(ServiceError::InvalidArgument(
                    "only the first PutChunk message may be a header".into(),
                ));
            }
            Err(status) => return Err(ServiceError::Stream(status)),
        };
        received += data.len() as u64;
        if received > declared {
            return Err(ServiceError::SizeMismatch { declared, received });
        }
        if let Some(writer) = writer.as_deref_mut() {
            writer.write(&data).await?;
        }
    }
    if received != declared {
        return Err(ServiceError::SizeMismatch { declared, received });
    }
    Ok(())
}

/// Opens a chunk for download.
pub async fn get(
    store: &Store,
    account: &AccountId,
    id: &ChunkId,
) -> Result<ByteStream, ServiceError> {
    match store.get(&layout::chunk_key(account, id)).await {
        Ok(body) => Ok(body),
        Err(StoreError::NotFound) => Err(ServiceError::ChunkNotFound(id.to_string())),
        Err(other) => Err(other.into()),
    }
}
