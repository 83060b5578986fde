//! The sealed object format: how a file or a manifest is encrypted before it
//! leaves the device.
//!
//! ```text
//! header  = "E2EB" | version (1) | kind (1) | salt (32 random bytes)
//! body    = STREAM segments: AES-256-GCM over 64 KiB plaintext pieces
//! ```
//!
//! Each object gets its own key, `HKDF(purpose key, salt, context)`, and the segments
//! use the STREAM construction of the `aead` crate (big-endian 32-bit counter
//! plus a last-segment flag in the nonce), so within one key no nonce repeats.
//! Every segment's associated data is the header followed by the object's
//! context (account, backup, blob, path). Hence a flipped byte, a dropped or
//! reordered segment, a truncated object, or an object moved to another file,
//! backup or account all fail authentication.

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use rand::RngCore;

use crate::key::DerivedKey;

/// Plaintext bytes per segment.
pub const SEGMENT_LEN: usize = 64 * 1024;
/// Bytes of authentication tag per segment.
pub const TAG_LEN: usize = 16;
/// Bytes of header before the first segment.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 32;

const MAGIC: &[u8; 4] = b"E2EB";
const VERSION: u8 = 1;
const STREAM_NONCE: [u8; 7] = [0; 7];

/// What a sealed object holds; part of the header, so one kind can never be
/// opened as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    File = 1,
    Manifest = 2,
    Chunk = 3,
    /// The sealed table of contents of a pack (format v3).
    PackHeader = 4,
}

/// Why a sealed object could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed object of the expected kind and version")]
    BadHeader,
    #[error("the sealed object ends early")]
    Truncated,
    #[error(
        "the sealed object fails authentication: it was altered, reordered, moved, or sealed under another key"
    )]
    Damaged,
}

/// Builds an object's context from its fields, each length-prefixed so that
/// no two different field lists give the same bytes.
pub fn context(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The sealed size of `plain_len` bytes of plaintext.
pub fn sealed_len(plain_len: u64) -> u64 {
    let segments = plain_len.div_ceil(SEGMENT_LEN as u64).max(1);
    HEADER_LEN as u64 + plain_len + segments * TAG_LEN as u64
}

fn cipher(key: &DerivedKey, salt: &[u8; 32], context: &[u8]) -> Aes256Gcm {
    let object_key = key.for_object(salt, context);
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(object_key.expose_secret()))
}

/// Encrypts one object incrementally: feed plaintext with [`Sealer::push`],
/// end with [`Sealer::finish`]. Output goes to a caller's buffer, header first.
pub struct Sealer {
    encryptor: EncryptorBE32<Aes256Gcm>,
    aad: Vec<u8>,
    pending: Vec<u8>,
    header_written: bool,
}

impl Sealer {
    /// A sealer with a fresh random salt, hence a fresh object key.
    pub fn new(key: &DerivedKey, kind: ObjectKind, context: &[u8]) -> Self {
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::with_salt(key, kind, &salt, context)
    }

    /// A sealer whose object key is derived from `salt`. The same salt must
    /// never seal two different plaintexts: chunks use their id, a MAC of
    /// the plaintext, so equal salts mean equal plaintexts.
    pub fn with_salt(key: &DerivedKey, kind: ObjectKind, salt: &[u8; 32], context: &[u8]) -> Self {
        let mut header = Vec::with_capacity(HEADER_LEN + context.len());
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.push(kind as u8);
        header.extend_from_slice(salt);
        let aad = [header.as_slice(), context].concat();
        Self {
            encryptor: EncryptorBE32::from_aead(cipher(key, salt, context), (&STREAM_NONCE).into()),
            aad,
            pending: Vec::with_capacity(2 * SEGMENT_LEN),
            header_written: false,
        }
    }

    fn write_header(&mut self, out: &mut Vec<u8>) {
        if !self.header_written {
            out.extend_from_slice(&self.aad[..HEADER_LEN]);
            self.header_written = true;
        }
    }

    /// Seals every complete segment that is known not to be the last.
    pub fn push(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        self.write_header(out);
        self.pending.extend_from_slice(plaintext);
        while self.pending.len() > SEGMENT_LEN {
            let rest = self.pending.split_off(SEGMENT_LEN);
            let segment = std::mem::replace(&mut self.pending, rest);
            let sealed = self
                .encryptor
                .encrypt_next(Payload {
                    msg: &segment,
                    aad: &self.aad,
                })
                .expect("AES-GCM seals any segment shorter than 64 GiB");
            out.extend_from_slice(&sealed);
        }
    }

    /// Seals the last segment (possibly empty).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.write_header(out);
        let sealed = self
            .encryptor
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .expect("AES-GCM seals any segment shorter than 64 GiB");
        out.extend_from_slice(&sealed);
    }
}

/// Decrypts one object incrementally; plaintext is released only after its
/// segment authenticated.
pub struct Opener {
    /// The purpose key is needed only until the header is read.
    key_and_kind: Option<(DerivedKey, ObjectKind)>,
    context: Vec<u8>,
    decryptor: Option<(DecryptorBE32<Aes256Gcm>, Vec<u8>)>,
    pending: Vec<u8>,
}

impl Opener {
    pub fn new(key: &DerivedKey, kind: ObjectKind, context: &[u8]) -> Self {
        Self {
            key_and_kind: Some((key.clone(), kind)),
            context: context.to_vec(),
            decryptor: None,
            pending: Vec::with_capacity(2 * (SEGMENT_LEN + TAG_LEN)),
        }
    }

    fn read_header(&mut self) -> Result<bool, OpenError> {
        if self.decryptor.is_some() {
            return Ok(true);
        }
        if self.pending.len() < HEADER_LEN {
            return Ok(false);
        }
        let (key, kind) = self.key_and_kind.take().expect("header is read once");
        let header: Vec<u8> = self.pending.drain(..HEADER_LEN).collect();
        if &header[..4] != MAGIC || header[4] != VERSION || header[5] != kind as u8 {
            return Err(OpenError::BadHeader);
        }
        let salt: [u8; 32] = header[6..]
            .try_into()
            .expect("header ends with a 32-byte salt");
        let aad = [header.as_slice(), &self.context].concat();
        let decryptor =
            DecryptorBE32::from_aead(cipher(&key, &salt, &self.context), (&STREAM_NONCE).into());
        self.decryptor = Some((decryptor, aad));
        Ok(true)
    }

    /// Opens every complete segment that is known not to be the last.
    pub fn push(&mut self, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        self.pending.extend_from_slice(sealed);
        if !self.read_header()? {
            return Ok(());
        }
        let (decryptor, aad) = self.decryptor.as_mut().expect("header was read");
        while self.pending.len() > SEGMENT_LEN + TAG_LEN {
            let rest = self.pending.split_off(SEGMENT_LEN + TAG_LEN);
            let segment = std::mem::replace(&mut self.pending, rest);
            let plain = decryptor
                .decrypt_next(Payload { msg: &segment, aad })
                .map_err(|_| OpenError::Damaged)?;
            out.extend_from_slice(&plain);
        }
        Ok(())
    }

    /// Opens the last segment; fails if the object ended early.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), OpenError> {
        if !self.read_header()? || self.pending.len() < TAG_LEN {
            return Err(OpenError::Truncated);
        }
        let (decryptor, aad) = self.decryptor.take().expect("header was read");
        let plain = decryptor
            .decrypt_last(Payload {
                msg: &self.pending,
                aad: &aad,
            })
            .map_err(|_| OpenError::Damaged)?;
        out.extend_from_slice(&plain);
        Ok(())
    }
}

/// Seals a whole buffer at once (manifests, tests).
pub fn seal(key: &DerivedKey, kind: ObjectKind, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(Sealer::new(key, kind, context), plaintext)
}

/// Seals a chunk: its id is the salt, so sealing is deterministic.
pub fn seal_chunk(key: &DerivedKey, id: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(
        Sealer::with_salt(key, ObjectKind::Chunk, id, context),
        plaintext,
    )
}

/// The clear header a sealed chunk starts with. It holds the chunk id (the
/// salt), so format v3 stores chunks in packs without it (the storage must
/// never see a chunk id) and puts it back in front to open them.
pub fn chunk_header(id: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4] = VERSION;
    header[5] = ObjectKind::Chunk as u8;
    header[6..].copy_from_slice(id);
    header
}

fn seal_with(mut sealer: Sealer, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(plaintext.len() as u64) as usize);
    sealer.push(plaintext, &mut out);
    sealer.finish(&mut out);
    out
}

/// Opens a whole buffer at once (manifests, tests).
pub fn open(
    key: &DerivedKey,
    kind: ObjectKind,
    context: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let mut out = Vec::with_capacity(sealed.len());
    let mut opener = Opener::new(key, kind, context);
    opener.push(sealed, &mut out)?;
    opener.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyPurpose, RootKey};

    fn key() -> DerivedKey {
        RootKey::from_bytes([7; 32]).derive(KeyPurpose::FileData)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    const SIZES: &[usize] = &[
        0,
        1,
        SEGMENT_LEN - 1,
        SEGMENT_LEN,
        SEGMENT_LEN + 1,
        3 * SEGMENT_LEN + 17,
    ];

    #[test]
    fn round_trips_at_every_size_and_matches_sealed_len() {
        for &len in SIZES {
            let plain = data(len);
            let sealed = seal(&key(), ObjectKind::File, b"ctx", &plain);
            assert_eq!(sealed.len() as u64, sealed_len(len as u64), "len {len}");
            assert_eq!(
                open(&key(), ObjectKind::File, b"ctx", &sealed).unwrap(),
                plain
            );
        }
    }

    #[test]
    fn streaming_in_odd_pieces_gives_the_same_plaintext() {
        let plain = data(3 * SEGMENT_LEN + 17);
        let mut sealed = Vec::new();
        let mut sealer = Sealer::new(&key(), ObjectKind::File, b"ctx");
        for piece in plain.chunks(1000) {
            sealer.push(piece, &mut sealed);
        }
        sealer.finish(&mut sealed);
        let mut opened = Vec::new();
        let mut opener = Opener::new(&key(), ObjectKind::File, b"ctx");
        for piece in sealed.chunks(7777) {
            opener.push(piece, &mut opened).unwrap();
        }
        opener.finish(&mut opened).unwrap();
        assert_eq!(opened, plain);
    }

    #[test]
    fn the_same_plaintext_seals_differently_each_time() {
        let a = seal(&key(), ObjectKind::File, b"ctx", b"hello");
        let b = seal(&key(), ObjectKind::File, b"ctx", b"hello");
        assert_ne!(a, b);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let sealed = seal(&key(), ObjectKind::File, b"ctx", &data(SEGMENT_LEN + 100));
        for position in [
            0,
            5,
            6,
            20,
            HEADER_LEN,
            HEADER_LEN + SEGMENT_LEN + 3,
            sealed.len() - 1,
        ] {
            let mut bad = sealed.clone();
            bad[position] ^= 0x01;
            let result = open(&key(), ObjectKind::File, b"ctx", &bad);
            assert!(
                matches!(result, Err(OpenError::Damaged | OpenError::BadHeader)),
                "flip at {position}: {result:?}"
            );
        }
    }

    #[test]
    fn truncation_is_detected_even_at_a_segment_boundary() {
        let sealed = seal(&key(), ObjectKind::File, b"ctx", &data(2 * SEGMENT_LEN + 5));
        for cut in [
            0,
            10,
            HEADER_LEN,
            HEADER_LEN + SEGMENT_LEN + TAG_LEN,
            sealed.len() - 1,
        ] {
            let result = open(&key(), ObjectKind::File, b"ctx", &sealed[..cut]);
            assert!(result.is_err(), "cut at {cut}");
        }
        // Dropping the whole final segment leaves a stream whose last segment
        // was not sealed as last.
        let two_segments = HEADER_LEN + 2 * (SEGMENT_LEN + TAG_LEN);
        assert_eq!(
            open(&key(), ObjectKind::File, b"ctx", &sealed[..two_segments]),
            Err(OpenError::Damaged)
        );
    }

    #[test]
    fn reordered_segments_are_detected() {
        let sealed = seal(&key(), ObjectKind::File, b"ctx", &data(3 * SEGMENT_LEN));
        let seg = SEGMENT_LEN + TAG_LEN;
        let mut swapped = sealed[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&sealed[HEADER_LEN + seg..HEADER_LEN + 2 * seg]);
        swapped.extend_from_slice(&sealed[HEADER_LEN..HEADER_LEN + seg]);
        swapped.extend_from_slice(&sealed[HEADER_LEN + 2 * seg..]);
        assert_eq!(
            open(&key(), ObjectKind::File, b"ctx", &swapped),
            Err(OpenError::Damaged)
        );
    }

    #[test]
    fn another_context_kind_or_key_is_refused() {
        let sealed = seal(&key(), ObjectKind::File, b"account a", b"secret");
        assert_eq!(
            open(&key(), ObjectKind::File, b"account b", &sealed),
            Err(OpenError::Damaged)
        );
        assert_eq!(
            open(&key(), ObjectKind::Manifest, b"account a", &sealed),
            Err(OpenError::BadHeader)
        );
        let other = RootKey::from_bytes([8; 32]).derive(KeyPurpose::FileData);
        assert_eq!(
            open(&other, ObjectKind::File, b"account a", &sealed),
            Err(OpenError::Damaged)
        );
    }

    #[test]
    fn context_fields_are_unambiguous() {
        assert_ne!(context(&[b"ab", b"c"]), context(&[b"a", b"bc"]));
    }
}
