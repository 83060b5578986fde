//! Content-defined chunking and keyed chunk ids.
//!
//! A SQLite database changes in place, a few scattered pages a day, and never
//! shifts: it is cut at its own page boundaries, so a daily backup re-sends
//! exactly the changed pages. Every other file is cut with FastCDC
//! (64/256/1024 KiB), so an insertion shifts only the chunks around it;
//! media never change once written, so large chunks mean few objects. A chunk's id is
//! HMAC-SHA256 of its plaintext under a key derived from `K`: equal chunks
//! get equal ids (an unchanged chunk is never uploaded again), while the
//! gateway, without the key, learns nothing from an id.

use std::fmt;
use std::io::Read;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use zeroize::Zeroizing;

use crate::key::{DerivedKey, KeyPurpose, RootKey};

/// FastCDC's minimum, average and maximum chunk sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// For files written once (media, documents).
pub const LARGE_CHUNKS: ChunkSizes = ChunkSizes {
    min: 64 * 1024,
    avg: 256 * 1024,
    max: 1024 * 1024,
};

/// How a file is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutting {
    /// Content-defined chunks.
    Cdc(ChunkSizes),
    /// Fixed blocks of this many bytes (a SQLite database's pages).
    Pages(usize),
}

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
/// Bytes of a file's start that decide how it is cut.
const HEAD_LEN: usize = 18;

/// Decides from the first bytes of a file: a SQLite database is cut at its
/// page size (header bytes 16-17, big-endian; 1 means 65536), anything else
/// by content.
pub fn cutting_for(head: &[u8]) -> Cutting {
    if head.len() >= HEAD_LEN && head.starts_with(SQLITE_MAGIC) {
        let page = match u16::from_be_bytes([head[16], head[17]]) {
            1 => 65536,
            size if size.is_power_of_two() && size >= 512 => size as usize,
            _ => return Cutting::Cdc(LARGE_CHUNKS),
        };
        Cutting::Pages(page)
    } else {
        Cutting::Cdc(LARGE_CHUNKS)
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
    let mut head = [0u8; HEAD_LEN];
    let mut file = std::fs::File::open(path)?;
    let n = read_up_to(&mut file, &mut head)?;
    let reader = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    let cut: Box<dyn Iterator<Item = std::io::Result<Chunk>> + 'a> = match cutting_for(&head[..n]) {
        Cutting::Cdc(sizes) => Box::new(chunks(reader, sizes, ids)),
        Cutting::Pages(page) => Box::new(pages(reader, page, ids)),
    };
    Ok(cut)
}

/// Cuts `reader` into fixed blocks of `page` bytes (the last may be shorter).
pub fn pages<R: Read + 'static>(
    mut reader: R,
    page: usize,
    ids: &ChunkIds,
) -> impl Iterator<Item = std::io::Result<Chunk>> + '_ {
    std::iter::from_fn(move || {
        let mut data = vec![0u8; page];
        match read_up_to(&mut reader, &mut data) {
            Ok(0) => None,
            Ok(n) => {
                data.truncate(n);
                Some(Ok(Chunk {
                    id: ids.id_of(&data),
                    data,
                }))
            }
            Err(error) => Some(Err(error)),
        }
    })
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

/// FastCDC's gear table keyed by `K` (format v3). With the crate's public
/// table, anyone can compute where a known file is cut and so recognise it
/// from the chunk sizes; with a secret table the boundaries depend on the
/// key. The whole table (256 words) is drawn from HKDF under
/// [`KeyPurpose::CdcGearSeed`], rather than fastcdc's `with_level_and_seed`,
/// which XORs one 64-bit value into the public table (every entry keeps its
/// public differences to the others).
#[derive(Clone)]
pub struct GearTable {
    gear: std::sync::Arc<Zeroizing<[u64; 256]>>,
    gear_ls: std::sync::Arc<Zeroizing<[u64; 256]>>,
}

impl GearTable {
    pub fn new(key: &RootKey) -> Self {
        let seed = key.derive(KeyPurpose::CdcGearSeed);
        let mut bytes = Zeroizing::new([0u8; 256 * 8]);
        hkdf::Hkdf::<Sha256>::new(None, seed.expose_secret())
            .expand(b"e2e-backups v3 gear table", bytes.as_mut())
            .expect("2048 bytes is a valid HKDF-SHA256 output length");
        let mut gear = Zeroizing::new([0u64; 256]);
        let mut gear_ls = Zeroizing::new([0u64; 256]);
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            gear[i] = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            // FastCDC 2020 reads two bytes per step, the first through the
            // table shifted left by one.
            gear_ls[i] = gear[i] << 1;
        }
        Self {
            gear: std::sync::Arc::new(gear),
            gear_ls: std::sync::Arc::new(gear_ls),
        }
    }
}

impl fmt::Debug for GearTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GearTable(<redacted>)")
    }
}

/// Cuts `reader` into content-defined chunks with a keyed gear table
/// (FastCDC 2020, normalisation level 1, as [`chunks`] uses).
pub fn keyed_chunks<R: Read>(
    mut reader: R,
    sizes: ChunkSizes,
    gear: &GearTable,
    ids: &ChunkIds,
) -> impl Iterator<Item = std::io::Result<Chunk>> + use<R> {
    use fastcdc::v2020::{MASKS, cut_gear, logarithm2};
    let bits = logarithm2(sizes.avg);
    let mask_s = MASKS[(bits + 1) as usize];
    let mask_l = MASKS[(bits - 1) as usize];
    let (min, avg, max) = (sizes.min as usize, sizes.avg as usize, sizes.max as usize);
    let gear = gear.clone();
    let ids = ids.clone();
    let mut buffer: Vec<u8> = Vec::with_capacity(max);
    let mut eof = false;
    std::iter::from_fn(move || {
        if !eof && buffer.len() < max {
            let start = buffer.len();
            buffer.resize(max, 0);
            match read_up_to(&mut reader, &mut buffer[start..]) {
                Ok(n) => {
                    buffer.truncate(start + n);
                    eof = start + n < max;
                }
                Err(error) => return Some(Err(error)),
            }
        }
        if buffer.is_empty() {
            return None;
        }
        let (_, cut) = cut_gear(
            &buffer,
            min,
            avg,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &gear.gear,
            &gear.gear_ls,
        );
        let rest = buffer.split_off(cut);
        let data = std::mem::replace(&mut buffer, rest);
        buffer.reserve(max.saturating_sub(buffer.len()));
        Some(Ok(Chunk {
            id: ids.id_of(&data),
            data,
        }))
    })
}

/// Cuts a file for format v3: a SQLite database at its pages, anything else
/// by content with the keyed gear table.
pub fn keyed_file_chunks(
    path: &std::path::Path,
    ids: &ChunkIds,
    gear: &GearTable,
) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Chunk>> + Send>> {
    let mut head = [0u8; HEAD_LEN];
    let mut file = std::fs::File::open(path)?;
    let n = read_up_to(&mut file, &mut head)?;
    let reader = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    Ok(match cutting_for(&head[..n]) {
        Cutting::Cdc(sizes) => Box::new(keyed_chunks(reader, sizes, gear, ids)),
        Cutting::Pages(page) => {
            let ids = ids.clone();
            let mut reader = reader;
            Box::new(std::iter::from_fn(move || {
                let mut data = vec![0u8; page];
                match read_up_to(&mut reader, &mut data) {
                    Ok(0) => None,
                    Ok(n) => {
                        data.truncate(n);
                        Some(Ok(Chunk {
                            id: ids.id_of(&data),
                            data,
                        }))
                    }
                    Err(error) => Some(Err(error)),
                }
            }))
        }
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
    fn databases_are_cut_at_their_pages_and_media_by_content() {
        assert_eq!(
            cutting_for(b"SQLite format 3\0\x10\x00rest"),
            Cutting::Pages(4096)
        );
        assert_eq!(
            cutting_for(b"SQLite format 3\0\x00\x01rest"),
            Cutting::Pages(65536)
        );
        assert_eq!(
            cutting_for(b"SQLite format 3\0\x00\x07"),
            Cutting::Cdc(LARGE_CHUNKS)
        );
        assert_eq!(cutting_for(b"\xFF\xD8\xFF\xE0"), Cutting::Cdc(LARGE_CHUNKS));
        assert_eq!(cutting_for(b""), Cutting::Cdc(LARGE_CHUNKS));
    }

    #[test]
    fn pages_cover_the_input_in_fixed_blocks() {
        let ids = ChunkIds::new(&RootKey::generate());
        let input = data(3 * 4096 + 100, 4);
        let blocks: Vec<Chunk> = pages(std::io::Cursor::new(input.clone()), 4096, &ids)
            .map(Result::unwrap)
            .collect();
        let sizes: Vec<usize> = blocks.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [4096, 4096, 4096, 100]);
        let joined: Vec<u8> = blocks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, input);
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

    fn keyed_cuts(key: &RootKey, input: &[u8]) -> Vec<usize> {
        let gear = GearTable::new(key);
        let ids = ChunkIds::new(key);
        keyed_chunks(
            std::io::Cursor::new(input.to_vec()),
            LARGE_CHUNKS,
            &gear,
            &ids,
        )
        .map(|c| c.unwrap().data.len())
        .collect()
    }

    #[test]
    fn keyed_chunks_cover_the_input_within_the_size_bounds() {
        let key = RootKey::generate();
        let gear = GearTable::new(&key);
        let ids = ChunkIds::new(&key);
        for len in [0usize, 1, 70_000, 5 << 20] {
            let input = data(len, 9);
            let pieces: Vec<Chunk> = keyed_chunks(
                std::io::Cursor::new(input.clone()),
                LARGE_CHUNKS,
                &gear,
                &ids,
            )
            .map(Result::unwrap)
            .collect();
            let mut joined = Vec::new();
            for (i, chunk) in pieces.iter().enumerate() {
                assert!(chunk.data.len() <= LARGE_CHUNKS.max as usize);
                if i + 1 < pieces.len() {
                    assert!(chunk.data.len() >= LARGE_CHUNKS.min as usize);
                }
                assert!(ids.verify(&chunk.id, &chunk.data));
                joined.extend_from_slice(&chunk.data);
            }
            assert_eq!(joined, input, "len {len}");
        }
    }

    #[test]
    fn two_keys_cut_the_same_data_at_different_boundaries_one_key_always_alike() {
        let input = data(8 << 20, 5);
        let a = RootKey::from_bytes([1; 32]);
        let b = RootKey::from_bytes([2; 32]);
        let cuts_a = keyed_cuts(&a, &input);
        assert!(cuts_a.len() > 10, "{} chunks", cuts_a.len());
        assert_eq!(cuts_a, keyed_cuts(&RootKey::from_bytes([1; 32]), &input));
        let cuts_b = keyed_cuts(&b, &input);
        assert_ne!(cuts_a, cuts_b);
        // Boundaries (as offsets) mostly differ, not just shifted sizes.
        let offsets = |cuts: &[usize]| -> std::collections::HashSet<usize> {
            cuts.iter()
                .scan(0, |at, len| {
                    *at += len;
                    Some(*at)
                })
                .collect()
        };
        let (oa, ob) = (offsets(&cuts_a), offsets(&cuts_b));
        let shared = oa.intersection(&ob).count();
        assert!(
            shared <= 2,
            "{shared} shared boundaries (the end of the data is one)"
        );
        // And the keyed table is not the public one.
        let public: Vec<usize> = chunks(
            std::io::Cursor::new(input.clone()),
            LARGE_CHUNKS,
            &ChunkIds::new(&a),
        )
        .map(|c| c.unwrap().data.len())
        .collect();
        assert_ne!(public, cuts_a);
    }

    #[test]
    fn keyed_chunking_keeps_an_insertion_local() {
        let key = RootKey::generate();
        let original = data(4 << 20, 6);
        let mut edited = original.clone();
        edited.splice(2 << 20..2 << 20, data(1000, 7));
        let gear = GearTable::new(&key);
        let ids = ChunkIds::new(&key);
        let ids_of = |bytes: Vec<u8>| -> Vec<ChunkId> {
            keyed_chunks(std::io::Cursor::new(bytes), LARGE_CHUNKS, &gear, &ids)
                .map(|c| c.unwrap().id)
                .collect()
        };
        let before = ids_of(original);
        let after = ids_of(edited);
        let changed = after.iter().filter(|id| !before.contains(id)).count();
        assert!(changed <= 3, "{changed} of {} changed", after.len());
    }

    #[test]
    fn keyed_file_chunks_cut_databases_at_their_pages() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("msgstore.db");
        let mut bytes = b"SQLite format 3\0\x10\x00".to_vec();
        bytes.resize(3 * 4096 + 10, 7);
        std::fs::write(&db, &bytes).unwrap();
        let key = RootKey::generate();
        let sizes: Vec<usize> = keyed_file_chunks(&db, &ChunkIds::new(&key), &GearTable::new(&key))
            .unwrap()
            .map(|c| c.unwrap().data.len())
            .collect();
        assert_eq!(sizes, [4096, 4096, 4096, 10]);
        assert!(format!("{:?}", GearTable::new(&key)).contains("redacted"));
    }
}
