//! The sealed manifest: `key id (8 bytes, clear) || sealed protobuf`. The
//! key id lets a restore say which key a backup needs; the sealing binds the
//! manifest to its account and generation.

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
        &names::manifest_context(account, manifest.generation),
        &manifest.encode_to_vec(),
    );
    [key.key_id().as_slice(), &sealed].concat()
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
    if backup_key_id != key.key_id() {
        return Err(ManifestError::OtherKey {
            backup_key_id: hex::encode(backup_key_id),
            our_key_id: hex::encode(key.key_id()),
        });
    }
    let plain = seal::open(
        &key.derive(KeyPurpose::Manifest),
        ObjectKind::Manifest,
        &names::manifest_context(account, generation),
        &sealed[KEY_ID_LEN..],
    )?;
    let manifest = Manifest::decode(plain.as_slice()).map_err(|_| ManifestError::Malformed)?;
    if manifest.account_id != account || manifest.generation != generation {
        return Err(ManifestError::Mismatch);
    }
    Ok(manifest)
}
