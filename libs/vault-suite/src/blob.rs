//! The small sealed blob every vault-side secret uses: `nonce (12 bytes) ||
//! AES-256-GCM(key, nonce, plaintext, aad)` with a fresh random nonce. One
//! definition for the vault's sealed secrets and login state, the login
//! response, and the device's sealed keys, so none of them frames it
//! differently.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadCore, Payload};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

pub use crate::NONCE_LEN;

/// The blob did not open: another key, another `aad`, or altered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed blob does not open with this key and context")]
pub struct BlobError;

/// Seals `plaintext` bound to `aad` under a fresh random nonce.
pub fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encrypts any message shorter than 64 GiB");
    [nonce.as_slice(), &ciphertext].concat()
}

/// Reverses [`seal`]: the plaintext, if `blob` opens under `cipher` and `aad`.
pub fn open(cipher: &Aes256Gcm, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, BlobError> {
    if blob.len() < NONCE_LEN {
        return Err(BlobError);
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| BlobError)
}

#[cfg(test)]
mod tests {
    use aes_gcm::KeyInit;

    use super::*;

    #[test]
    fn a_blob_opens_only_with_its_key_and_context_and_unaltered() {
        let cipher = Aes256Gcm::new_from_slice(&[1; 32]).unwrap();
        let other = Aes256Gcm::new_from_slice(&[2; 32]).unwrap();
        let blob = seal(&cipher, b"alice", b"secret");
        assert_eq!(blob.len(), NONCE_LEN + 6 + 16);
        assert_eq!(
            open(&cipher, b"alice", &blob).unwrap().as_slice(),
            b"secret"
        );
        assert_eq!(open(&cipher, b"bob", &blob), Err(BlobError));
        assert_eq!(open(&other, b"alice", &blob), Err(BlobError));
        let mut altered = blob.clone();
        altered[NONCE_LEN] ^= 1;
        assert_eq!(open(&cipher, b"alice", &altered), Err(BlobError));
        assert_eq!(
            open(&cipher, b"alice", &blob[..NONCE_LEN - 1]),
            Err(BlobError)
        );
        // A fresh nonce each time.
        assert_ne!(seal(&cipher, b"alice", b"secret"), blob);
    }
}
