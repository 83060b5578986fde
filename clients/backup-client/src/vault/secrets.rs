//! The device's vault secrets: the password, and the backup key sealed under
//! the OPAQUE export key so that only someone who knows the password can
//! open it, and only for this account.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use hkdf::Hkdf;
use sha2::Sha256;
use vault_suite::blob;
use zeroize::Zeroizing;

use crate::key::RootKey;

const SEALED_KEY_INFO: &[u8] = b"e2e-backups v1 vault sealed backup key";

/// A backup password. `Debug` is redacted; the text is zeroized on drop.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    pub fn expose_secret(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The sealed key blob did not open: the export key (the password) or the
/// account differ from the ones it was sealed with, or it was altered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the sealed backup key does not open with this password for this account")]
pub struct UnsealError;

fn cipher(export_key: &[u8]) -> Aes256Gcm {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, export_key)
        .expand(SEALED_KEY_INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(key.as_ref()).expect("the key is 32 bytes")
}

/// Most keys one sealed blob carries: the current key, and during a key
/// rotation the previous one.
pub const MAX_SEALED_KEYS: usize = 2;

/// `nonce (12) || AES-256-GCM(HKDF(export key), K1 || K2.., aad = account)`.
/// The first key is the current one.
pub fn seal_root_keys(export_key: &[u8], account: &str, keys: &[&RootKey]) -> Vec<u8> {
    assert!(
        (1..=MAX_SEALED_KEYS).contains(&keys.len()),
        "a sealed blob carries one or two keys"
    );
    let mut plain = Zeroizing::new(Vec::with_capacity(32 * keys.len()));
    for key in keys {
        plain.extend_from_slice(key.expose_secret());
    }
    blob::seal(&cipher(export_key), account.as_bytes(), &plain)
}

/// Opens a blob from [`seal_root_keys`]: the keys, current first.
pub fn unseal_root_keys(
    export_key: &[u8],
    account: &str,
    sealed: &[u8],
) -> Result<Vec<RootKey>, UnsealError> {
    let plain =
        blob::open(&cipher(export_key), account.as_bytes(), sealed).map_err(|_| UnsealError)?;
    if plain.is_empty() || plain.len() % 32 != 0 || plain.len() / 32 > MAX_SEALED_KEYS {
        return Err(UnsealError);
    }
    Ok(plain
        .chunks(32)
        .map(|bytes| RootKey::from_bytes(bytes.try_into().expect("32-byte pieces")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_export_key_and_account() {
        let key = RootKey::generate();
        let old = RootKey::generate();
        let sealed = seal_root_keys(&[1; 64], "alice", &[&key, &old]);
        let opened = unseal_root_keys(&[1; 64], "alice", &sealed).unwrap();
        assert_eq!(opened.len(), 2);
        assert_eq!(opened[0].expose_secret(), key.expose_secret());
        assert_eq!(opened[1].expose_secret(), old.expose_secret());
        for (export_key, account) in [([2u8; 64], "alice"), ([1u8; 64], "bob")] {
            let result = unseal_root_keys(&export_key, account, &sealed);
            assert_eq!(result.unwrap_err(), UnsealError);
        }
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert_eq!(
            unseal_root_keys(&[1; 64], "alice", &altered).unwrap_err(),
            UnsealError
        );
        assert!(!sealed.windows(32).any(|w| w == key.expose_secret()));
        let single = seal_root_keys(&[1; 64], "alice", &[&key]);
        assert_eq!(
            unseal_root_keys(&[1; 64], "alice", &single).unwrap().len(),
            1
        );
    }

    #[test]
    fn password_debug_is_redacted() {
        let shown = format!("{:?}", Password::new("correct horse"));
        assert!(!shown.contains("horse"));
    }
}
