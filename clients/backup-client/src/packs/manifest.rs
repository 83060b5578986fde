//! The sealed manifest of format v3:
//!
//! ```text
//! sealed = "E2M3" | key id (8) | nonce (12) | AES-256-GCM(plaintext) (tag 16)
//! plaintext = protobuf length (u32, big-endian) | Manifest | zero padding
//! ```
//!
//! The padding makes the whole sealed length a Padme length, so the
//! manifest's size says little about the number of files and chunks (the
//! gateway refuses any other length). The key is derived from `K`
//! ([`KeyPurpose::ManifestV3`]) and the account; the nonce is random. The
//! associated data is the magic, the key id of the key that opens it (not the
//! clear one: see [`open`]), the account and the generation, so a manifest
//! moved to another account or generation does not open. [`digest`] is what
//! the vault's backup pointer records and what the next manifest names as
//! its `previous_digest`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use e2eb_proto::backup::v3::Manifest;
use prost::Message;
use rand::RngCore;

use crate::key::{KeyPurpose, RootKey};
use crate::seal::context;

pub use crate::manifest::digest;

/// The magic bytes a v3 manifest starts with.
pub const MAGIC: &[u8; 4] = b"E2M3";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const LENGTH_LEN: usize = 4;
/// Bytes a sealed manifest has besides its protobuf and padding.
pub const OVERHEAD: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN + LENGTH_LEN + TAG_LEN;

/// Why a v3 manifest could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "this is not a v3 manifest (no \"E2M3\" magic); it was damaged or is of another format"
    )]
    NotV3,
    #[error(
        "the backup was made with another key (key id {backup_key_id}, this key is {our_key_id}); \
         use the key that made it"
    )]
    OtherKey {
        backup_key_id: String,
        our_key_id: String,
    },
    #[error(
        "the manifest's key id was altered: the manifest opens with this key, which is not the key \
         id in front of it; the stored backup was tampered with"
    )]
    KeyIdAltered,
    #[error(
        "the manifest does not open: it was altered in storage, or belongs to another account or \
         generation"
    )]
    Damaged,
    #[error("the manifest opened but is not a valid manifest: it was made by faulty software")]
    Malformed,
    #[error("the manifest names another account or generation than the one asked for")]
    Mismatch,
}

fn cipher(key: &RootKey, account: &str) -> Aes256Gcm {
    let object_key = key
        .derive(KeyPurpose::ManifestV3)
        .for_object(&[0; 32], &context(&[b"manifest v3", account.as_bytes()]));
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(object_key.expose_secret()))
}

fn aad(key_id: &[u8; KEY_ID_LEN], account: &str, generation: u64) -> Vec<u8> {
    context(&[MAGIC, key_id, account.as_bytes(), &generation.to_be_bytes()])
}

/// Seals `manifest` for its account and generation, padded to a Padme length.
pub fn seal(key: &RootKey, manifest: &Manifest) -> Vec<u8> {
    let body = manifest.encode_to_vec();
    let total = padme::padded_len((OVERHEAD + body.len()) as u64) as usize;
    let mut plain = Vec::with_capacity(total - OVERHEAD + LENGTH_LEN);
    let body_len = u32::try_from(body.len()).expect("a manifest is far below 4 GiB");
    plain.extend_from_slice(&body_len.to_be_bytes());
    plain.extend_from_slice(&body);
    plain.resize(total - (OVERHEAD - LENGTH_LEN), 0);
    let key_id = key.key_id();
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(key, &manifest.account_id)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad(&key_id, &manifest.account_id, manifest.generation),
            },
        )
        .expect("AES-GCM seals any manifest below 64 GiB");
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    debug_assert_eq!(out.len(), total);
    out
}

/// The key id in front of a sealed v3 manifest.
pub fn key_id_of(sealed: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    if !sealed.starts_with(MAGIC) {
        return None;
    }
    sealed.get(4..4 + KEY_ID_LEN)?.try_into().ok()
}

/// Opens the manifest of `account`'s `generation`. It is opened under this
/// key's own id whatever the clear one says; the clear id is only believed
/// once authentication tells an altered id from another key.
pub fn open(
    key: &RootKey,
    account: &str,
    generation: u64,
    sealed: &[u8],
) -> Result<Manifest, ManifestError> {
    let backup_key_id = key_id_of(sealed).ok_or(ManifestError::NotV3)?;
    let body_start = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
    if sealed.len() < body_start + TAG_LEN {
        return Err(ManifestError::Damaged);
    }
    let our_key_id = key.key_id();
    let opened = cipher(key, account).decrypt(
        Nonce::from_slice(&sealed[MAGIC.len() + KEY_ID_LEN..body_start]),
        Payload {
            msg: &sealed[body_start..],
            aad: &aad(&our_key_id, account, generation),
        },
    );
    let plain = match opened {
        Ok(_) if backup_key_id != our_key_id => return Err(ManifestError::KeyIdAltered),
        Ok(plain) => plain,
        Err(_) if backup_key_id != our_key_id => {
            return Err(ManifestError::OtherKey {
                backup_key_id: hex::encode(backup_key_id),
                our_key_id: hex::encode(our_key_id),
            });
        }
        Err(_) => return Err(ManifestError::Damaged),
    };
    let body_len = plain
        .get(..LENGTH_LEN)
        .map(|b| u32::from_be_bytes(b.try_into().expect("four bytes")) as usize)
        .ok_or(ManifestError::Malformed)?;
    let body = plain
        .get(LENGTH_LEN..LENGTH_LEN + body_len)
        .ok_or(ManifestError::Malformed)?;
    let manifest = Manifest::decode(body).map_err(|_| ManifestError::Malformed)?;
    if manifest.account_id != account || manifest.generation != generation {
        return Err(ManifestError::Mismatch);
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2eb_proto::backup::v3::{ChunkLocation, FileEntry};

    fn manifest(files: usize) -> Manifest {
        Manifest {
            account_id: "alice".into(),
            generation: 3,
            created_at: 1_700_000_000,
            previous_digest: vec![7; 32],
            packs: vec!["ab".repeat(32)],
            chunks: vec![ChunkLocation {
                id: vec![1; 32],
                pack: 0,
                offset: 0,
                sealed_length: 1016,
                plain_length: 1000,
            }],
            files: (0..files)
                .map(|i| FileEntry {
                    path: format!("Media/{i}.jpg"),
                    size: 1000,
                    modified_ns: 5,
                    chunks: vec![0],
                    mode: 0o644,
                })
                .collect(),
            empty_dirs: vec!["Backups".into()],
        }
    }

    #[test]
    fn round_trips_and_the_digest_is_of_the_sealed_bytes() {
        let key = RootKey::generate();
        let original = manifest(3);
        let sealed = seal(&key, &original);
        assert_eq!(open(&key, "alice", 3, &sealed), Ok(original.clone()));
        assert_eq!(&sealed[..4], MAGIC);
        assert_eq!(key_id_of(&sealed), Some(key.key_id()));
        // A fresh nonce each time: two sealings differ, and so do digests.
        let again = seal(&key, &original);
        assert_ne!(sealed, again);
        assert_ne!(digest(&sealed), digest(&again));
        use sha2::Digest;
        assert_eq!(
            digest(&sealed),
            <[u8; 32]>::from(sha2::Sha256::digest(&sealed))
        );
    }

    #[test]
    fn the_sealed_length_is_a_padme_length() {
        let key = RootKey::generate();
        for files in [0, 1, 7, 100, 1000, 5000] {
            let sealed = seal(&key, &manifest(files));
            assert!(
                padme::is_padded(sealed.len() as u64),
                "{files} files: {} bytes",
                sealed.len()
            );
            assert_eq!(open(&key, "alice", 3, &sealed).unwrap().files.len(), files);
        }
    }

    #[test]
    fn an_altered_key_id_is_tampering_not_another_key() {
        let key = RootKey::generate();
        let mut sealed = seal(&key, &manifest(1));
        sealed[5] ^= 1;
        assert_eq!(
            open(&key, "alice", 3, &sealed),
            Err(ManifestError::KeyIdAltered)
        );
    }

    #[test]
    fn another_key_is_named_by_its_id() {
        let key = RootKey::generate();
        let other = RootKey::generate();
        let sealed = seal(&key, &manifest(1));
        assert_eq!(
            open(&other, "alice", 3, &sealed),
            Err(ManifestError::OtherKey {
                backup_key_id: hex::encode(key.key_id()),
                our_key_id: hex::encode(other.key_id()),
            })
        );
    }

    #[test]
    fn another_account_generation_or_a_flipped_byte_does_not_open() {
        let key = RootKey::generate();
        let sealed = seal(&key, &manifest(2));
        assert_eq!(open(&key, "bob", 3, &sealed), Err(ManifestError::Damaged));
        assert_eq!(open(&key, "alice", 4, &sealed), Err(ManifestError::Damaged));
        for position in [15, 30, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[position] ^= 1;
            assert_eq!(
                open(&key, "alice", 3, &bad),
                Err(ManifestError::Damaged),
                "flip at {position}"
            );
        }
        let mut not_v3 = sealed.clone();
        not_v3[0] = b'X';
        assert_eq!(open(&key, "alice", 3, &not_v3), Err(ManifestError::NotV3));
        assert_eq!(
            open(&key, "alice", 3, &sealed[..30]),
            Err(ManifestError::Damaged)
        );
    }

    #[test]
    fn a_manifest_sealed_for_another_account_is_a_mismatch_only_if_it_opens() {
        // The account inside must match the account asked for; sealing binds
        // the account the manifest names, so this cannot normally happen.
        let key = RootKey::generate();
        let mut wrong = manifest(1);
        wrong.account_id = "bob".into();
        let sealed = seal(&key, &wrong);
        assert_eq!(open(&key, "alice", 3, &sealed), Err(ManifestError::Damaged));
        assert!(open(&key, "bob", 3, &sealed).is_ok());
    }
}
