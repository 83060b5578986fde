//! What a v3 backup already holds, and the tables of the manifest it
//! writes: where each known chunk lies (the previous generation's packs,
//! an interrupted run's uploads read by their trailers and headers), the
//! chunk list of an untouched file, and the manifest's chunk and pack
//! tables with each entry listed once.

use std::collections::{HashMap, HashSet};

use e2eb_proto::backup::v3::{ChunkLocation, FileEntry, Manifest, PackEntry};
use e2eb_proto::storage::v3::PackInfo;
use tracing::debug;

use super::super::gateway::PackGatewayClient;
use super::super::pack::{self, PackKeys, PackName};
use crate::chunking::ChunkId;
use crate::gateway::GatewayError;

/// Where a chunk already lies.
#[derive(Debug, Clone)]
pub(super) struct Location {
    pub(super) pack: PackName,
    pub(super) offset: u64,
    pub(super) sealed_length: u32,
    pub(super) plain_length: u32,
}

/// Every chunk this backup can reference where it lies: the previous
/// manifest's chunks in packs the gateway still lists as committed, and
/// the chunks in the headers of uncommitted uploads (an interrupted run's).
/// An upload that does not open under this key and account is left out
/// (the commit abandons it).
pub(super) async fn known_chunks<'a>(
    gateway: &PackGatewayClient,
    keys: &PackKeys,
    previous: Option<&Manifest>,
    committed_packs: impl Iterator<Item = &'a PackInfo>,
    uploads: &[PackInfo],
) -> Result<HashMap<ChunkId, Location>, GatewayError> {
    let committed: HashSet<&str> = committed_packs.map(|p| p.name.as_str()).collect();
    let mut known: HashMap<ChunkId, Location> = HashMap::new();
    for chunk in previous.iter().flat_map(|m| &m.chunks) {
        let Some(location) = previous.and_then(|m| location_in(m, chunk)) else {
            continue;
        };
        if committed.contains(location.pack.as_str())
            && let Ok(id) = <[u8; 32]>::try_from(chunk.id.as_slice())
        {
            known.insert(ChunkId(id), location);
        }
    }
    for upload in uploads {
        match read_upload(gateway, keys, upload).await {
            Ok(Some((name, entries))) => {
                for entry in entries {
                    let Ok(id) = <[u8; 32]>::try_from(entry.id.as_slice()) else {
                        continue;
                    };
                    known.entry(ChunkId(id)).or_insert(Location {
                        pack: name.clone(),
                        offset: entry.offset,
                        sealed_length: entry.sealed_length,
                        plain_length: entry.plain_length,
                    });
                }
            }
            Ok(None) => {}
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => debug!(%error, "an uncommitted pack is not readable; abandoning it"),
        }
    }
    Ok(known)
}

/// A chunk's location as a manifest records it.
fn location_in(manifest: &Manifest, chunk: &ChunkLocation) -> Option<Location> {
    let pack = PackName::parse(manifest.packs.get(chunk.pack as usize)?)?;
    Some(Location {
        pack,
        offset: chunk.offset,
        sealed_length: chunk.sealed_length,
        plain_length: chunk.plain_length,
    })
}

/// The chunks of an untouched file, if every one still lies where the
/// backup can reference it.
pub(super) fn reuse_chunks(
    previous: &Manifest,
    old: &FileEntry,
    known: &HashMap<ChunkId, Location>,
) -> Option<Vec<(ChunkId, Location)>> {
    let mut out = Vec::with_capacity(old.chunks.len());
    let mut total = 0u64;
    for &index in &old.chunks {
        let chunk = previous.chunks.get(index as usize)?;
        let id = ChunkId(chunk.id.as_slice().try_into().ok()?);
        let location = known.get(&id)?;
        total += u64::from(location.plain_length);
        out.push((id, location.clone()));
    }
    (total == old.size).then_some(out)
}

/// Reads the header of an uncommitted pack: `None` when it is not one of
/// this account's and key's packs (it is abandoned then).
async fn read_upload(
    gateway: &PackGatewayClient,
    keys: &PackKeys,
    upload: &PackInfo,
) -> Result<Option<(PackName, Vec<PackEntry>)>, GatewayError> {
    let Some(name) = PackName::parse(&upload.name) else {
        return Ok(None);
    };
    if upload.size < pack::TRAILER_LEN as u64 {
        return Ok(None);
    }
    let trailer = gateway
        .get_pack_range(
            &name,
            upload.size - pack::TRAILER_LEN as u64,
            pack::TRAILER_LEN as u64,
        )
        .await?;
    let Ok(range) =
        pack::parse_trailer(&trailer).and_then(|len| pack::header_range(upload.size, len))
    else {
        return Ok(None);
    };
    let sealed = gateway
        .get_pack_range(&name, range.start, range.end - range.start)
        .await?;
    match keys.open_header(&name, &sealed, range.start) {
        Ok(entries) => Ok(Some((name, entries))),
        Err(error) => {
            debug!(pack = %name, %error, "an uncommitted pack does not open");
            Ok(None)
        }
    }
}

/// The chunk and pack tables of the new manifest, each chunk and pack
/// listed once.
#[derive(Default)]
pub(super) struct ManifestBuilder {
    packs: Vec<String>,
    pack_index: HashMap<PackName, u32>,
    chunks: Vec<ChunkLocation>,
    chunk_index: HashMap<ChunkId, u32>,
}

impl ManifestBuilder {
    /// The index of chunk `id` in the manifest's chunk table.
    pub(super) fn reference(&mut self, id: ChunkId, location: &Location) -> u32 {
        if let Some(&index) = self.chunk_index.get(&id) {
            return index;
        }
        let next_pack = self.packs.len() as u32;
        let pack = *self
            .pack_index
            .entry(location.pack.clone())
            .or_insert(next_pack);
        if pack == next_pack {
            self.packs.push(location.pack.to_string());
        }
        let index = self.chunks.len() as u32;
        self.chunks.push(ChunkLocation {
            id: id.0.to_vec(),
            pack,
            offset: location.offset,
            sealed_length: location.sealed_length,
            plain_length: location.plain_length,
        });
        self.chunk_index.insert(id, index);
        index
    }

    /// How many referenced chunks lie in packs of an interrupted run.
    pub(super) fn resumed(&self, uploads: &[PackInfo]) -> usize {
        let uploaded: HashSet<&str> = uploads.iter().map(|u| u.name.as_str()).collect();
        self.chunks
            .iter()
            .filter(|c| uploaded.contains(self.packs[c.pack as usize].as_str()))
            .count()
    }

    pub(super) fn finish(self, manifest: Manifest) -> Manifest {
        Manifest {
            packs: self.packs,
            chunks: self.chunks,
            ..manifest
        }
    }
}
