//! The fetch plan of a v3 restore: which byte ranges of which packs to
//! read so that every chunk the files still need arrives, checked first
//! against the manifest's own claims (chunk and pack indexes, sealed
//! lengths, file sizes, pack names). Neighbouring chunks of a pack are
//! fetched in one range when the gap between them is small, so a restore
//! that needs a whole pack reads it in few calls, and one that needs a few
//! chunks reads only those; a pack's padding, header and trailer are never
//! read. Pure: no I/O.

use std::collections::BTreeMap;

use e2eb_proto::backup::v3::Manifest;

use super::integrity;
use crate::chunking::ChunkId;
use crate::packs::pack::{self, PackName};
use crate::restore::{IntegrityFailure, RestoreError};

/// Two needed chunks of a pack closer than this are fetched in one range
/// (the bytes between them are read and dropped).
const MERGE_GAP: u64 = 256 * 1024;
/// Largest range fetched at once.
const MAX_RANGE: u64 = 32 * 1024 * 1024;

/// One chunk to fetch and where the files use it.
pub(super) struct Needed {
    pub(super) id: ChunkId,
    pub(super) offset: u64,
    pub(super) sealed_length: u32,
    pub(super) plain_length: u32,
    /// (file index, byte offset in the file), first use first.
    pub(super) uses: Vec<(usize, u64)>,
}

/// One ranged read of a pack and the chunks it covers.
pub(super) struct Range {
    pub(super) pack: PackName,
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) chunks: Vec<Needed>,
}

/// What to fetch, checked against the manifest's own claims.
pub(super) struct Plan {
    pub(super) ranges: Vec<Range>,
}

impl Plan {
    /// The plan for the files not marked in `done` (a file index past its
    /// end is not done).
    pub(super) fn new(manifest: &Manifest, done: &[bool]) -> Result<Self, RestoreError> {
        let packs: Vec<PackName> = manifest
            .packs
            .iter()
            .map(|name| {
                PackName::parse(name)
                    .ok_or_else(|| integrity("(manifest)", IntegrityFailure::WrongChunk))
            })
            .collect::<Result<_, _>>()?;
        let mut uses: Vec<Vec<(usize, u64)>> = vec![Vec::new(); manifest.chunks.len()];
        for (file_index, file) in manifest.files.iter().enumerate() {
            let mut at = 0u64;
            for &chunk in &file.chunks {
                let location = manifest
                    .chunks
                    .get(chunk as usize)
                    .ok_or_else(|| integrity(&file.path, IntegrityFailure::WrongChunk))?;
                if !done.get(file_index).copied().unwrap_or(false) {
                    uses[chunk as usize].push((file_index, at));
                }
                at += u64::from(location.plain_length);
            }
            if at != file.size {
                return Err(integrity(&file.path, IntegrityFailure::WrongSize));
            }
        }
        // Needed chunks by pack, in pack order.
        let mut by_pack: BTreeMap<u32, Vec<Needed>> = BTreeMap::new();
        for (chunk, uses) in manifest.chunks.iter().zip(uses) {
            let Some(&(first_file, _)) = uses.first() else {
                continue;
            };
            let path = &manifest.files[first_file].path;
            let id = ChunkId(
                chunk
                    .id
                    .as_slice()
                    .try_into()
                    .map_err(|_| integrity(path, IntegrityFailure::WrongChunk))?,
            );
            let expected = pack::sealed_chunk_len(chunk.plain_length.into());
            if chunk.pack as usize >= packs.len() || u64::from(chunk.sealed_length) != expected {
                return Err(integrity(path, IntegrityFailure::WrongSize));
            }
            by_pack.entry(chunk.pack).or_default().push(Needed {
                id,
                offset: chunk.offset,
                sealed_length: chunk.sealed_length,
                plain_length: chunk.plain_length,
                uses,
            });
        }
        let mut ranges = Vec::new();
        for (pack, mut needed) in by_pack {
            needed.sort_by_key(|n| n.offset);
            let mut current: Option<Range> = None;
            for chunk in needed {
                let end = chunk.offset + u64::from(chunk.sealed_length);
                if let Some(range) = &mut current {
                    let range_end = range.offset + range.length;
                    if chunk.offset >= range_end
                        && chunk.offset - range_end <= MERGE_GAP
                        && end - range.offset <= MAX_RANGE
                    {
                        range.length = end - range.offset;
                        range.chunks.push(chunk);
                        continue;
                    }
                    ranges.push(current.take().expect("a range is open"));
                }
                current = Some(Range {
                    pack: packs[pack as usize].clone(),
                    offset: chunk.offset,
                    length: u64::from(chunk.sealed_length),
                    chunks: vec![chunk],
                });
            }
            ranges.extend(current);
        }
        Ok(Self { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::pack;
    use e2eb_proto::backup::v3::{ChunkLocation, FileEntry};

    fn chunk(id: u8, pack: u32, offset: u64, plain: u32) -> ChunkLocation {
        ChunkLocation {
            id: vec![id; 32],
            pack,
            offset,
            sealed_length: pack::sealed_chunk_len(plain.into()) as u32,
            plain_length: plain,
        }
    }

    fn file(path: &str, chunks: &[u32], size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            chunks: chunks.to_vec(),
            ..FileEntry::default()
        }
    }

    fn manifest() -> Manifest {
        let sealed = |plain: u32| pack::sealed_chunk_len(plain.into());
        Manifest {
            account_id: "alice".into(),
            generation: 1,
            packs: vec!["a".repeat(64), "b".repeat(64)],
            chunks: vec![
                chunk(0, 0, 0, 1000),
                // Right after chunk 0: merged into its range.
                chunk(1, 0, sealed(1000), 2000),
                // 1 MiB further on: a range of its own.
                chunk(2, 0, (1 << 20) + 5000, 3000),
                // Referenced by no file: never fetched.
                chunk(3, 1, 0, 10),
                chunk(4, 1, 100, 500),
            ],
            files: vec![
                file("a.db", &[0, 1, 2], 6000),
                file("b.jpg", &[4, 0], 1500),
                file("empty", &[], 0),
            ],
            ..Manifest::default()
        }
    }

    #[test]
    fn only_needed_chunks_are_fetched_in_merged_ranges() {
        let plan = Plan::new(&manifest(), &[]).unwrap();
        let ranges: Vec<(String, u64, usize)> = plan
            .ranges
            .iter()
            .map(|r| (r.pack.as_str()[..1].to_string(), r.offset, r.chunks.len()))
            .collect();
        assert_eq!(
            ranges,
            [
                ("a".to_string(), 0, 2),
                ("a".to_string(), (1 << 20) + 5000, 1),
                ("b".to_string(), 100, 1),
            ]
        );
        let first = &plan.ranges[0];
        assert_eq!(
            first.length,
            pack::sealed_chunk_len(1000) + pack::sealed_chunk_len(2000)
        );
        // Chunk 0 is written into both files that use it, at their offsets.
        assert_eq!(first.chunks[0].uses, [(0, 0), (1, 500)]);
        assert_eq!(first.chunks[1].uses, [(0, 1000)]);
    }

    #[test]
    fn an_inconsistent_manifest_is_refused_before_anything_is_fetched() {
        let mut wrong_size = manifest();
        wrong_size.files[0].size = 6001;
        assert!(matches!(
            Plan::new(&wrong_size, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongSize,
                ..
            })
        ));
        let mut no_such_chunk = manifest();
        no_such_chunk.files[1].chunks.push(99);
        assert!(matches!(
            Plan::new(&no_such_chunk, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongChunk,
                ..
            })
        ));
        let mut no_such_pack = manifest();
        no_such_pack.chunks[4].pack = 7;
        assert!(matches!(
            Plan::new(&no_such_pack, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongSize,
                ..
            })
        ));
        let mut sealed_too_long = manifest();
        sealed_too_long.chunks[2].sealed_length += 1;
        assert!(matches!(
            Plan::new(&sealed_too_long, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongSize,
                ..
            })
        ));
        let mut bad_name = manifest();
        bad_name.packs[1] = "../x".into();
        assert!(matches!(
            Plan::new(&bad_name, &[]),
            Err(RestoreError::Integrity {
                reason: IntegrityFailure::WrongChunk,
                ..
            })
        ));
    }

    #[test]
    fn files_staged_whole_are_not_fetched_again() {
        // File 0 done: only chunk 4 (b.jpg) and chunk 0 (b.jpg's too).
        let plan = Plan::new(&manifest(), &[true, false, false]).unwrap();
        let fetched: Vec<(u64, Vec<(usize, u64)>)> = plan
            .ranges
            .iter()
            .flat_map(|r| &r.chunks)
            .map(|c| (c.offset, c.uses.clone()))
            .collect();
        assert_eq!(fetched, [(0, vec![(1, 500)]), (100, vec![(1, 0)])]);
        let everything_done = Plan::new(&manifest(), &[true, true, true]).unwrap();
        assert!(everything_done.ranges.is_empty());
    }
}
