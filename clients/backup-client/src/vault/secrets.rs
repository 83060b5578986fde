//! The device's vault secrets: the password, and the backup key sealed under
//! the OPAQUE export key so that only someone who knows the password can
//! open it, and only for this account.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::key::RootKey;

const SEALED_KEY_INFO: &[u8] = b"e2e-backups v1 vault sealed backup key";
const NONCE_LEN: usize = 12;

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

/// `nonce (12) || AES-256-GCM(HKDF(export key), K, aad = account)`.
pub fn seal_root_key(export_key: &[u8], account: &str, key: &RootKey) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(export_key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.expose_secret(),
                aad: account.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts 32 bytes");
    [nonce.as_slice(), &sealed].concat()
}

pub fn unseal_root_key(
    export_key: &[u8],
    account: &str,
    sealed: &[u8],
) -> Result<RootKey, UnsealError> {
    if sealed.len() != NONCE_LEN + 32 + 16 {
        return Err(UnsealError);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let plain = Zeroizing::new(
        cipher(export_key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: account.as_bytes(),
                },
            )
            .map_err(|_| UnsealError)?,
    );
    let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| UnsealError)?;
    Ok(RootKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_key_opens_only_with_the_same_export_key_and_account() {
        let key = RootKey::generate();
        let sealed = seal_root_key(&[1; 64], "alice", &key);
        let opened = unseal_root_key(&[1; 64], "alice", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), key.expose_secret());
        assert_eq!(
            unseal_root_key(&[2; 64], "alice", &sealed).unwrap_err(),
            UnsealError
        );
        assert_eq!(
            unseal_root_key(&[1; 64], "bob", &sealed).unwrap_err(),
            UnsealError
        );
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert_eq!(
            unseal_root_key(&[1; 64], "alice", &altered).unwrap_err(),
            UnsealError
        );
        assert!(!sealed.windows(32).any(|w| w == key.expose_secret()));
    }

    #[test]
    fn password_debug_is_redacted() {
        let shown = format!("{:?}", Password::new("correct horse"));
        assert!(!shown.contains("horse"));
    }
}
