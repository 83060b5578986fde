//! Content-defined chunking and keyed chunk ids.
//!
//! Files are cut with FastCDC, so an insertion shifts only the chunks around
//! it. Databases (SQLite files) change a few scattered 4 KiB pages a day, so
//! they get small chunks (2/8/32 KiB) and a daily backup re-sends little
//! more than the changed pages; media files never change once written, so
//! they get large chunks (64/256/1024 KiB) and few objects. A chunk's id is
//! HMAC-SHA256 of its plaintext under a key derived from `K`: equal chunks
//! get equal ids (an unchanged chunk is never uploaded again), while the
//! gateway, without the key, learns nothing from an id.

use std::fmt;
use std::io::Read;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::key::{DerivedKey, KeyPurpose, RootKey};

/// FastCDC's minimum, average and maximum chunk sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// For files that change in place (databases).
pub const SMALL_CHUNKS: ChunkSizes = ChunkSizes {
    min: 2 * 1024,
    avg: 8 * 1024,
    max: 32 * 1024,
};

/// For files written once (media).
pub const LARGE_CHUNKS: ChunkSizes = ChunkSizes {
    min: 64 * 1024,
    avg: 256 * 1024,
    max: 1024 * 1024,
};

/// Picks chunk sizes from the first bytes of a file: SQLite databases get
/// small chunks, everything else large ones.
pub fn sizes_for(first_bytes: &[u8]) -> ChunkSizes {
    if first_bytes.starts_with(b"SQLite format 3\0") {
        SMALL_CHUNKS
    } else {
        LARGE_CHUNKS
    }
}

/// A chunk id: the 32-byte keyed MAC of the chunk's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id as the gateway knows it: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Computes chunk ids under one backup key.
#[derive(Clone)]
pub struct ChunkIds {
    key: DerivedKey,
}

impl ChunkIds {
    pub fn new(key: &RootKey) -> Self {
        Self {
            key: key.derive(KeyPurpose::ChunkId),
        }
    }

    pub fn id_of(&self, plaintext: &[u8]) -> ChunkId {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.key.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(plaintext);
        ChunkId(mac.finalize().into_bytes().into())
    }

    /// Whether `plaintext` is the chunk named `id` (constant time).
    pub fn verify(&self, id: &ChunkId, plaintext: &[u8]) -> bool {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.key.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(plaintext);
        mac.verify_slice(&id.0).is_ok()
    }
}

/// One chunk of a file, with its plaintext.
pub struct Chunk {
    pub id: ChunkId,
    pub data: Vec<u8>,
}

/// Cuts a file into content-defined chunks sized for its kind.
pub fn file_chunks<'a>(
    path: &std::path::Path,
    ids: &'a ChunkIds,
) -> std::io::Result<impl Iterator<Item = std::io::Result<Chunk>> + 'a> {
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path)?;
    let n = read_up_to(&mut file, &mut head)?;
    let sizes = sizes_for(&head[..n]);
    let reader = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    Ok(chunks(reader, sizes, ids))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Cuts `reader` into content-defined chunks of the given sizes.
pub fn chunks<R: Read + 'static>(
    reader: R,
    sizes: ChunkSizes,
    ids: &ChunkIds,
) -> impl Iterator<Item = std::io::Result<Chunk>> + '_ {
    fastcdc::v2020::StreamCDC::new(reader, sizes.min, sizes.avg, sizes.max).map(move |chunk| {
        let chunk = chunk.map_err(|error| match error {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        Ok(Chunk {
            id: ids.id_of(&chunk.data),
            data: chunk.data,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut state = seed as u32 | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    fn ids_of(bytes: Vec<u8>, ids: &ChunkIds) -> Vec<ChunkId> {
        chunks(std::io::Cursor::new(bytes), LARGE_CHUNKS, ids)
            .map(|c| c.unwrap().id)
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_within_the_size_bounds() {
        let ids = ChunkIds::new(&RootKey::generate());
        let input = data(2 << 20, 1);
        let mut joined = Vec::new();
        let pieces: Vec<Chunk> = chunks(std::io::Cursor::new(input.clone()), LARGE_CHUNKS, &ids)
            .map(Result::unwrap)
            .collect();
        for (i, chunk) in pieces.iter().enumerate() {
            assert!(chunk.data.len() <= LARGE_CHUNKS.max as usize);
            if i + 1 < pieces.len() {
                assert!(chunk.data.len() >= LARGE_CHUNKS.min as usize);
            }
            assert!(ids.verify(&chunk.id, &chunk.data));
            joined.extend_from_slice(&chunk.data);
        }
        assert_eq!(joined, input);
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let ids = ChunkIds::new(&RootKey::generate());
        let original = data(4 << 20, 2);
        let mut edited = original.clone();
        edited.splice(2 << 20..2 << 20, data(1000, 3));
        let before = ids_of(original, &ids);
        let after = ids_of(edited, &ids);
        let unchanged = after.iter().filter(|id| before.contains(id)).count();
        assert!(
            after.len() - unchanged <= 3,
            "{} of {} changed",
            after.len() - unchanged,
            after.len()
        );
    }

    #[test]
    fn databases_get_small_chunks_and_media_large_ones() {
        assert_eq!(sizes_for(b"SQLite format 3\0rest"), SMALL_CHUNKS);
        assert_eq!(sizes_for(b"\xFF\xD8\xFF\xE0"), LARGE_CHUNKS);
        assert_eq!(sizes_for(b""), LARGE_CHUNKS);
    }

    #[test]
    fn ids_depend_on_the_key() {
        let a = ChunkIds::new(&RootKey::generate());
        let b = ChunkIds::new(&RootKey::generate());
        assert_ne!(a.id_of(b"chunk"), b.id_of(b"chunk"));
        assert_eq!(a.id_of(b"chunk"), a.id_of(b"chunk"));
        assert!(!a.verify(&a.id_of(b"chunk"), b"chunk!"));
        let id = a.id_of(b"x");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
    }
}
