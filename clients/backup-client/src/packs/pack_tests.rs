//! Tests of the pack format: round trips, the Padme length, and a
//! specific error for each part of a pack that is altered or misplaced.

use super::*;

fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

struct Fixture {
    key: RootKey,
    keys: PackKeys,
    chunks: Vec<(ChunkId, Vec<u8>)>,
    pack: FinishedPack,
}

fn fixture(account: &str) -> Fixture {
    let key = RootKey::from_bytes([9; 32]);
    let keys = PackKeys::new(&key, account);
    let ids = ChunkIds::new(&key);
    let chunks: Vec<(ChunkId, Vec<u8>)> = [0usize, 1, 1000, seal::SEGMENT_LEN + 7, 200_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let plain = data(len, i as u32 + 1);
            (ids.id_of(&plain), plain)
        })
        .collect();
    let mut writer = PackWriter::new(keys.clone());
    for (id, plain) in &chunks {
        writer.add(id, plain);
    }
    let pack = writer.finish();
    Fixture {
        key,
        keys,
        chunks,
        pack,
    }
}

fn sealed_of<'a>(pack: &'a [u8], entry: &PackEntry) -> &'a [u8] {
    &pack[entry.offset as usize..(entry.offset + u64::from(entry.sealed_length)) as usize]
}

#[test]
fn chunks_round_trip_through_the_header() {
    let f = fixture("alice");
    let entries = read_header(&f.keys, &f.pack.name, &f.pack.bytes).unwrap();
    assert_eq!(entries, f.pack.entries);
    assert_eq!(entries.len(), f.chunks.len());
    for (entry, (id, plain)) in entries.iter().zip(&f.chunks) {
        assert_eq!(entry.id, id.0);
        assert_eq!(
            u64::from(entry.sealed_length),
            sealed_chunk_len(plain.len() as u64)
        );
        let opened = f
            .keys
            .open_chunk(id, sealed_of(&f.pack.bytes, entry), entry.plain_length)
            .unwrap();
        assert_eq!(&opened, plain);
    }
}

#[test]
fn the_total_length_is_a_padme_length_and_names_are_random_hex() {
    for count in [1usize, 3, 40] {
        let key = RootKey::generate();
        let keys = PackKeys::new(&key, "alice");
        let ids = ChunkIds::new(&key);
        let mut writer = PackWriter::new(keys);
        for i in 0..count {
            let plain = data(1000 + 777 * i, i as u32);
            writer.add(&ids.id_of(&plain), &plain);
        }
        let pack = writer.finish();
        let len = pack.bytes.len() as u64;
        assert!(padme::is_padded(len), "{len} is not a Padme length");
        assert_eq!(PackName::parse(pack.name.as_str()), Some(pack.name.clone()));
    }
    assert_ne!(PackName::random(), PackName::random());
    assert_eq!(PackName::parse("ABCD"), None);
    assert_eq!(PackName::parse(&"A".repeat(64)), None);
}

#[test]
fn no_chunk_id_appears_in_the_pack() {
    let f = fixture("alice");
    for (id, _) in &f.chunks {
        let found = f.pack.bytes.windows(32).any(|w| w == id.0);
        assert!(!found, "a chunk id is stored in the clear");
    }
}

#[test]
fn a_flipped_byte_in_a_chunk_is_chunk_damage() {
    let f = fixture("alice");
    let entry = &f.pack.entries[3];
    let mut bytes = f.pack.bytes.clone();
    bytes[entry.offset as usize + 5] ^= 1;
    let id = ChunkId(entry.id.clone().try_into().unwrap());
    assert!(matches!(
        f.keys
            .open_chunk(&id, sealed_of(&bytes, entry), entry.plain_length),
        Err(PackError::ChunkDamaged(OpenError::Damaged))
    ));
    // The header still opens: the damage is the chunk's alone.
    assert!(read_header(&f.keys, &f.pack.name, &bytes).is_ok());
}

#[test]
fn a_chunk_under_another_id_or_length_is_refused() {
    let f = fixture("alice");
    let (a, b) = (&f.pack.entries[2], &f.pack.entries[4]);
    let id_b = ChunkId(b.id.clone().try_into().unwrap());
    // Chunk a's bytes offered as chunk b: its key differs, so it does not open.
    assert!(matches!(
        f.keys
            .open_chunk(&id_b, sealed_of(&f.pack.bytes, a), b.plain_length),
        Err(PackError::ChunkDamaged(_))
    ));
    assert_eq!(
        f.keys
            .open_chunk(&id_b, sealed_of(&f.pack.bytes, b), b.plain_length + 1),
        Err(PackError::WrongLength {
            expected: u64::from(b.plain_length) + 1,
            found: b.plain_length.into()
        })
    );
}

#[test]
fn a_flipped_byte_in_the_header_is_header_damage() {
    let f = fixture("alice");
    let len = f.pack.bytes.len();
    let header_len = parse_trailer(&f.pack.bytes[len - TRAILER_LEN..]).unwrap() as usize;
    for position in [len - TRAILER_LEN - header_len + 10, len - TRAILER_LEN - 1] {
        let mut bytes = f.pack.bytes.clone();
        bytes[position] ^= 1;
        assert!(
            matches!(
                read_header(&f.keys, &f.pack.name, &bytes),
                Err(PackError::HeaderDamaged(_))
            ),
            "flip at {position}"
        );
    }
}

#[test]
fn an_altered_trailer_is_refused() {
    let f = fixture("alice");
    let len = f.pack.bytes.len();
    let mut bad_magic = f.pack.bytes.clone();
    bad_magic[len - TRAILER_LEN] ^= 1;
    assert_eq!(
        read_header(&f.keys, &f.pack.name, &bad_magic),
        Err(PackError::BadTrailer)
    );
    // A header length one byte off: the header does not open.
    let mut shifted = f.pack.bytes.clone();
    shifted[len - 1] ^= 1;
    assert!(matches!(
        read_header(&f.keys, &f.pack.name, &shifted),
        Err(PackError::HeaderDamaged(_))
    ));
    // A header length beyond the pack.
    let mut huge = f.pack.bytes.clone();
    huge[len - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        read_header(&f.keys, &f.pack.name, &huge),
        Err(PackError::HeaderOutOfBounds { .. })
    ));
    assert_eq!(
        read_header(&f.keys, &f.pack.name, b"E2P3"),
        Err(PackError::TooShort { len: 4 })
    );
}

#[test]
fn a_header_does_not_open_for_another_account_pack_name_or_key() {
    let f = fixture("alice");
    let bob = PackKeys::new(&f.key, "bob");
    assert!(matches!(
        read_header(&bob, &f.pack.name, &f.pack.bytes),
        Err(PackError::HeaderDamaged(_))
    ));
    assert!(matches!(
        read_header(&f.keys, &PackName::random(), &f.pack.bytes),
        Err(PackError::HeaderDamaged(_))
    ));
    let other_key = PackKeys::new(&RootKey::generate(), "alice");
    assert!(matches!(
        read_header(&other_key, &f.pack.name, &f.pack.bytes),
        Err(PackError::HeaderDamaged(_))
    ));
    // Nor does a chunk open for another account.
    let entry = &f.pack.entries[2];
    let id = ChunkId(entry.id.clone().try_into().unwrap());
    assert!(matches!(
        bob.open_chunk(&id, sealed_of(&f.pack.bytes, entry), entry.plain_length),
        Err(PackError::ChunkDamaged(_))
    ));
}

#[test]
fn the_chunk_header_put_back_is_the_one_sealing_wrote() {
    let key = RootKey::generate().derive(KeyPurpose::FileData);
    let id = [5u8; 32];
    let sealed = seal::seal_chunk(&key, &id, b"ctx", b"hello");
    assert_eq!(sealed[..seal::HEADER_LEN], seal::chunk_header(&id));
}
