//! Packs: many sealed chunks in one stored object, so the storage sees a
//! few objects of padded sizes instead of one object per chunk.
//!
//! ```text
//! pack    = sealed chunk* | random padding | sealed PackHeader | trailer
//! trailer = "E2P3" | sealed header length (u32, big-endian)
//! ```
//!
//! A chunk is sealed as v2 seals it ([`seal::seal_chunk`]: AES-256-GCM
//! STREAM under a key derived from the chunk-data key, the account and the
//! chunk id) but stored without its clear header, which holds the id: the
//! reader knows the id from the manifest or the pack header and puts the
//! header back to open it. The header lists every chunk's (id, offset,
//! sealed length, plain length); it is sealed under a key of its own
//! ([`KeyPurpose::PackHeader`]) and bound to the account and the pack's
//! random name. The total length is a Padme length ([`padme::padded_len`]),
//! which the gateway checks.

use std::fmt;
use std::ops::Range;

use e2eb_proto::backup::v3::{PackEntry, PackHeader};
use prost::Message;
use rand::RngCore;

use crate::chunking::{ChunkId, ChunkIds};
use crate::key::{DerivedKey, KeyPurpose, RootKey};
use crate::names;
use crate::seal::{self, ObjectKind, OpenError};

/// The trailer's magic bytes.
pub const TRAILER_MAGIC: &[u8; 4] = b"E2P3";
/// Bytes of the trailer at the end of every pack.
pub const TRAILER_LEN: usize = 8;

/// A pack's name: 32 random bytes as 64 lowercase hex digits. It says
/// nothing about the content.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackName(String);

impl PackName {
    /// A fresh random name.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// A name as the gateway lists it; `None` unless 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackName({})", &self.0[..16])
    }
}

impl fmt::Display for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a pack, its header or one of its chunks could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("the pack has {len} bytes, fewer than its 8-byte trailer: it was truncated in storage")]
    TooShort { len: u64 },
    #[error(
        "the pack does not end in an \"E2P3\" trailer: it is not a pack of this format, or its end was altered in storage"
    )]
    BadTrailer,
    #[error(
        "the pack's trailer gives a {header_len}-byte header, which does not fit in the pack's \
         {pack_len} bytes: the trailer was altered or the pack truncated in storage"
    )]
    HeaderOutOfBounds { header_len: u32, pack_len: u64 },
    #[error(
        "the pack's header does not open ({0}): it was altered in storage, or belongs to another \
         pack, account or key"
    )]
    HeaderDamaged(OpenError),
    #[error(
        "the pack's header opened but is not a valid header: the pack was made by faulty software"
    )]
    HeaderMalformed,
    #[error(
        "the pack's header lists a chunk at bytes {offset}..+{length}, outside the pack's {data_len} \
         bytes of chunks: the pack was made by faulty software"
    )]
    EntryOutOfBounds {
        offset: u64,
        length: u32,
        data_len: u64,
    },
    #[error(
        "a chunk in the pack does not open ({0}): it was altered in storage, or moved from another \
         account or key"
    )]
    ChunkDamaged(OpenError),
    #[error("a chunk's content does not match its id: chunks were swapped or the id list altered")]
    WrongChunk,
    #[error("a chunk has {found} bytes where {expected} were recorded")]
    WrongLength { expected: u64, found: u64 },
}

/// The sealed length of a chunk of `plain_len` bytes inside a pack.
pub fn sealed_chunk_len(plain_len: u64) -> u64 {
    seal::sealed_len(plain_len) - seal::HEADER_LEN as u64
}

/// The keys one account's packs are sealed under.
#[derive(Clone)]
pub struct PackKeys {
    account: String,
    chunk_key: DerivedKey,
    header_key: DerivedKey,
    ids: ChunkIds,
}

impl PackKeys {
    pub fn new(key: &RootKey, account: &str) -> Self {
        Self {
            account: account.to_string(),
            chunk_key: key.derive(KeyPurpose::FileData),
            header_key: key.derive(KeyPurpose::PackHeader),
            ids: ChunkIds::new(key),
        }
    }

    /// Seals one chunk as a pack stores it (no clear header).
    pub fn seal_chunk(&self, id: &ChunkId, plain: &[u8]) -> Vec<u8> {
        let context = names::pack_chunk_context(&self.account, id);
        let mut sealed = seal::seal_chunk(&self.chunk_key, &id.0, &context, plain);
        sealed.drain(..seal::HEADER_LEN);
        sealed
    }

    /// Opens one sealed chunk of a pack, checks that its plaintext is the
    /// chunk named `id` (the keyed MAC) and has `plain_len` bytes.
    pub fn open_chunk(
        &self,
        id: &ChunkId,
        sealed: &[u8],
        plain_len: u32,
    ) -> Result<Vec<u8>, PackError> {
        let context = names::pack_chunk_context(&self.account, id);
        let with_header = [seal::chunk_header(&id.0).as_slice(), sealed].concat();
        let plain = seal::open(&self.chunk_key, ObjectKind::Chunk, &context, &with_header)
            .map_err(PackError::ChunkDamaged)?;
        if !self.ids.verify(id, &plain) {
            return Err(PackError::WrongChunk);
        }
        if plain.len() as u64 != u64::from(plain_len) {
            return Err(PackError::WrongLength {
                expected: plain_len.into(),
                found: plain.len() as u64,
            });
        }
        Ok(plain)
    }

    fn seal_header(&self, name: &PackName, header: &PackHeader) -> Vec<u8> {
        seal::seal(
            &self.header_key,
            ObjectKind::PackHeader,
            &names::pack_header_context(&self.account, name.as_str()),
            &header.encode_to_vec(),
        )
    }

    /// Opens the sealed header of the pack `name`; `data_len` is where the
    /// chunk area ends (every entry must lie before it).
    pub fn open_header(
        &self,
        name: &PackName,
        sealed: &[u8],
        data_len: u64,
    ) -> Result<Vec<PackEntry>, PackError> {
        let plain = seal::open(
            &self.header_key,
            ObjectKind::PackHeader,
            &names::pack_header_context(&self.account, name.as_str()),
            sealed,
        )
        .map_err(PackError::HeaderDamaged)?;
        let header =
            PackHeader::decode(plain.as_slice()).map_err(|_| PackError::HeaderMalformed)?;
        for entry in &header.entries {
            let inside = entry
                .offset
                .checked_add(entry.sealed_length.into())
                .is_some_and(|end| end <= data_len);
            if !inside {
                return Err(PackError::EntryOutOfBounds {
                    offset: entry.offset,
                    length: entry.sealed_length,
                    data_len,
                });
            }
            if entry.id.len() != 32 {
                return Err(PackError::HeaderMalformed);
            }
        }
        Ok(header.entries)
    }
}

/// The header length a trailer (a pack's last [`TRAILER_LEN`] bytes) gives.
pub fn parse_trailer(trailer: &[u8]) -> Result<u32, PackError> {
    if trailer.len() != TRAILER_LEN {
        return Err(PackError::TooShort {
            len: trailer.len() as u64,
        });
    }
    if &trailer[..4] != TRAILER_MAGIC {
        return Err(PackError::BadTrailer);
    }
    Ok(u32::from_be_bytes(
        trailer[4..].try_into().expect("four bytes"),
    ))
}

/// Where the sealed header of a pack of `pack_len` bytes lies, given the
/// header length from its trailer. The chunk area is everything before it.
pub fn header_range(pack_len: u64, header_len: u32) -> Result<Range<u64>, PackError> {
    let end = pack_len
        .checked_sub(TRAILER_LEN as u64)
        .ok_or(PackError::TooShort { len: pack_len })?;
    let start = end
        .checked_sub(header_len.into())
        .filter(|_| header_len as usize >= seal::HEADER_LEN)
        .ok_or(PackError::HeaderOutOfBounds {
            header_len,
            pack_len,
        })?;
    Ok(start..end)
}

/// Reads the header of a whole pack held in memory.
pub fn read_header(
    keys: &PackKeys,
    name: &PackName,
    pack: &[u8],
) -> Result<Vec<PackEntry>, PackError> {
    let len = pack.len() as u64;
    if pack.len() < TRAILER_LEN {
        return Err(PackError::TooShort { len });
    }
    let header_len = parse_trailer(&pack[pack.len() - TRAILER_LEN..])?;
    let range = header_range(len, header_len)?;
    keys.open_header(
        name,
        &pack[range.start as usize..range.end as usize],
        range.start,
    )
}

/// A pack being filled: chunks are sealed as they are added. Its random
/// name is drawn at the start, so a chunk's location is known at once.
pub struct PackWriter {
    name: PackName,
    keys: PackKeys,
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub name: PackName,
    /// The whole pack: a Padme length.
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new(keys: PackKeys) -> Self {
        Self {
            name: PackName::random(),
            keys,
            data: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Seals and appends a chunk; returns where it lies in the pack.
    pub fn add(&mut self, id: &ChunkId, plain: &[u8]) -> PackEntry {
        let sealed = self.keys.seal_chunk(id, plain);
        let entry = PackEntry {
            id: id.0.to_vec(),
            offset: self.data.len() as u64,
            sealed_length: u32::try_from(sealed.len()).expect("a chunk is far below 4 GiB"),
            plain_length: u32::try_from(plain.len()).expect("a chunk is far below 4 GiB"),
        };
        self.data.extend_from_slice(&sealed);
        self.entries.push(entry.clone());
        entry
    }

    pub fn name(&self) -> &PackName {
        &self.name
    }

    /// Sealed chunk bytes so far.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the header, pads with random bytes to a Padme length, and
    /// appends the trailer.
    pub fn finish(self) -> FinishedPack {
        let name = self.name;
        let header = PackHeader {
            entries: self.entries,
        };
        let sealed_header = self.keys.seal_header(&name, &header);
        let mut bytes = self.data;
        let content = (bytes.len() + sealed_header.len() + TRAILER_LEN) as u64;
        let total = padme::padded_len(content);
        let padding = (total - content) as usize;
        let start = bytes.len();
        bytes.resize(start + padding, 0);
        rand::rngs::OsRng.fill_bytes(&mut bytes[start..]);
        bytes.extend_from_slice(&sealed_header);
        bytes.extend_from_slice(TRAILER_MAGIC);
        let header_len = u32::try_from(sealed_header.len()).expect("a header is far below 4 GiB");
        bytes.extend_from_slice(&header_len.to_be_bytes());
        FinishedPack {
            name,
            bytes,
            entries: header.entries,
        }
    }
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
