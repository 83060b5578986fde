//! The sealed manifest: `key id (8 bytes, clear) || sealed protobuf`. The
//! key id lets a restore say which key a backup needs; the sealing binds the
//! manifest to its account, its generation and that key id, so an altered
//! key id is detected as damage, not mistaken for another key.

use e2eb_proto::backup::v2::Manifest;
use prost::Message;

use crate::key::{KeyPurpose, RootKey};
use crate::names;
use crate::seal::{self, ObjectKind, OpenError};

const KEY_ID_LEN: usize = 8;

/// Why a manifest could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "the backup was made with another key (key id {backup_key_id}, this key is {our_key_id})"
    )]
    OtherKey {
        backup_key_id: String,
        our_key_id: String,
    },
    #[error(
        "the manifest's key id was altered: the manifest opens with this key, which is not the key \
         id in front of it"
    )]
    KeyIdAltered,
    #[error("the manifest does not open: {0}")]
    Damaged(#[from] OpenError),
    #[error("the manifest is not a valid manifest")]
    Malformed,
    #[error("the manifest names another account or generation")]
    Mismatch,
}

pub fn seal(key: &RootKey, account: &str, manifest: &Manifest) -> Vec<u8> {
    let sealed = seal::seal(
        &key.derive(KeyPurpose::Manifest),
        ObjectKind::Manifest,
        &names::manifest_context(account, manifest.generation, &key.key_id()),
        &manifest.encode_to_vec(),
    );
    [key.key_id().as_slice(), &sealed].concat()
}

/// The digest the vault's backup pointer records for a sealed manifest:
/// SHA-256 of its bytes as stored.
pub fn digest(sealed: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(sealed).into()
}

/// The key id a sealed manifest was made with.
pub fn key_id_of(sealed: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    sealed.get(..KEY_ID_LEN)?.try_into().ok()
}

pub fn open(
    key: &RootKey,
    account: &str,
    generation: u64,
    sealed: &[u8],
) -> Result<Manifest, ManifestError> {
    let backup_key_id = key_id_of(sealed).ok_or(ManifestError::Malformed)?;
    // Opened under our own key id whatever the clear one says: the clear id
    // is only believed once authentication tells the two cases apart.
    let opened = seal::open(
        &key.derive(KeyPurpose::Manifest),
        ObjectKind::Manifest,
        &names::manifest_context(account, generation, &key.key_id()),
        &sealed[KEY_ID_LEN..],
    );
    let plain = match opened {
        Ok(_) if backup_key_id != key.key_id() => return Err(ManifestError::KeyIdAltered),
        Ok(plain) => plain,
        Err(_) if backup_key_id != key.key_id() => {
            return Err(ManifestError::OtherKey {
                backup_key_id: hex::encode(backup_key_id),
                our_key_id: hex::encode(key.key_id()),
            });
        }
        Err(error) => return Err(error.into()),
    };
    let manifest = Manifest::decode(plain.as_slice()).map_err(|_| ManifestError::Malformed)?;
    if manifest.account_id != account || manifest.generation != generation {
        return Err(ManifestError::Mismatch);
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_manifest(key: &RootKey) -> Vec<u8> {
        let manifest = Manifest {
            account_id: "alice".into(),
            generation: 3,
            ..Manifest::default()
        };
        seal(key, "alice", &manifest)
    }

    #[test]
    fn a_flipped_key_id_is_damage_not_another_key() {
        let key = RootKey::generate();
        let mut sealed = sealed_manifest(&key);
        assert!(open(&key, "alice", 3, &sealed).is_ok());
        sealed[0] ^= 1;
        assert_eq!(
            open(&key, "alice", 3, &sealed),
            Err(ManifestError::KeyIdAltered)
        );
    }

    #[test]
    fn another_key_is_named_by_its_id() {
        let key = RootKey::generate();
        let other = RootKey::generate();
        let sealed = sealed_manifest(&key);
        assert_eq!(
            open(&other, "alice", 3, &sealed),
            Err(ManifestError::OtherKey {
                backup_key_id: hex::encode(key.key_id()),
                our_key_id: hex::encode(other.key_id()),
            })
        );
        // Bound to account and generation.
        assert!(matches!(
            open(&key, "bob", 3, &sealed),
            Err(ManifestError::Damaged(_))
        ));
        assert!(matches!(
            open(&key, "alice", 4, &sealed),
            Err(ManifestError::Damaged(_))
        ));
    }
}
