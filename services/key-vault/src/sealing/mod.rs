//! The sealing key: what keeps the vault secrets (OPRF seed, server key pair,
//! login-state key, row key) encrypted at rest. Behind [`SealingKeySource`]
//! so the key can live in a file ([`file`], the embedded default) or inside
//! a PKCS#11 token that never releases it ([`pkcs11`], SoftHSM2 here, an
//! HSM in production) without the vault knowing which: it only ever asks to
//! seal or open, never for the key's bytes.
//!
//! Every sealed blob is framed the same way, `kind (1 byte) || nonce (12) ||
//! AES-256-GCM ciphertext and tag`, where the first byte names the kind of
//! source that sealed it. A blob sealed by one kind is never handed to the
//! other's cipher: opening it says which source sealed it instead.

pub mod file;
pub mod pkcs11;

use zeroize::Zeroizing;

pub use file::FileSealingKey;
pub use pkcs11::{Pkcs11Config, Pkcs11Error, Pkcs11SealingKey};

/// Length of the AES-GCM nonce in every sealed blob.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag that ends every sealed blob.
pub const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    #[error("cannot read or create the sealing key file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the sealing key file {path} does not hold 64 hex digits")]
    InvalidKeyFile { path: std::path::PathBuf },
    #[error("the sealed data does not open under the sealing key from {source_name}")]
    DoesNotOpen { source_name: String },
    #[error(
        "the sealed data was sealed by {sealed_by}, but this vault is configured with \
         {source_name}; start it with the sealing source that sealed it (--sealing)"
    )]
    OtherSource {
        sealed_by: SourceKind,
        source_name: String,
    },
    #[error(transparent)]
    Pkcs11(#[from] Pkcs11Error),
}

/// Seals and opens small secrets under a key the vault never sees.
pub trait SealingKeySource: Send + Sync + 'static {
    /// Names the key's origin in error messages (never the key itself).
    fn describe(&self) -> String;
    /// Encrypts and authenticates `plaintext`, binding `aad`.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealingError>;
    /// Reverses [`Self::seal`]; fails if the key, `aad` or bytes differ.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealingError>;
}

/// The kind of source that sealed a blob: its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceKind {
    /// A key file (format 1 since the first vault: existing blobs still open).
    KeyFile = 1,
    /// An AES key inside a PKCS#11 token.
    Pkcs11Token = 2,
}

impl SourceKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::KeyFile),
            2 => Some(Self::Pkcs11Token),
            _ => None,
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KeyFile => "a sealing key file",
            Self::Pkcs11Token => "a PKCS#11 token key",
        })
    }
}

/// Frames a sealed blob: `kind || nonce || ciphertext-and-tag`.
pub(crate) fn frame(kind: SourceKind, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Vec<u8> {
    [&[kind as u8][..], nonce, ciphertext].concat()
}

/// Splits a blob framed by [`frame`] for a source of `kind`, described by
/// `source_name`, into nonce and ciphertext-and-tag. A blob of the other
/// kind is [`SealingError::OtherSource`]; anything else that cannot be one
/// of ours is [`SealingError::DoesNotOpen`].
pub(crate) fn unframe(
    sealed: &[u8],
    kind: SourceKind,
    source_name: impl FnOnce() -> String,
) -> Result<(&[u8; NONCE_LEN], &[u8]), SealingError> {
    let (sealed_by, rest) = match sealed.split_first() {
        Some((&byte, rest)) => (SourceKind::from_byte(byte), rest),
        None => (None, sealed),
    };
    match sealed_by {
        Some(sealed_by) if sealed_by != kind => Err(SealingError::OtherSource {
            sealed_by,
            source_name: source_name(),
        }),
        Some(_) if rest.len() >= NONCE_LEN + TAG_LEN => {
            let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
            Ok((
                nonce.try_into().expect("split at the nonce length"),
                ciphertext,
            ))
        }
        _ => Err(SealingError::DoesNotOpen {
            source_name: source_name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_names_the_source_and_refuses_the_other_kind() {
        let blob = frame(SourceKind::Pkcs11Token, &[7; NONCE_LEN], &[9; TAG_LEN + 3]);
        assert_eq!(blob[0], 2);
        let (nonce, ciphertext) = unframe(&blob, SourceKind::Pkcs11Token, String::new).unwrap();
        assert_eq!(nonce, &[7; NONCE_LEN]);
        assert_eq!(ciphertext, &[9; TAG_LEN + 3]);

        let error = unframe(&blob, SourceKind::KeyFile, || "key file k".into()).unwrap_err();
        assert!(
            matches!(
                error,
                SealingError::OtherSource {
                    sealed_by: SourceKind::Pkcs11Token,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("PKCS#11"), "{error}");
        assert!(error.to_string().contains("key file k"), "{error}");
    }

    #[test]
    fn short_empty_or_unknown_blobs_do_not_open() {
        let does_not_open = |blob: &[u8]| {
            matches!(
                unframe(blob, SourceKind::KeyFile, String::new),
                Err(SealingError::DoesNotOpen { .. })
            )
        };
        assert!(does_not_open(&[]));
        assert!(does_not_open(&[1; NONCE_LEN + TAG_LEN]));
        assert!(does_not_open(&[9; 64]));
        assert!(!does_not_open(&[1; 1 + NONCE_LEN + TAG_LEN]));
    }
}
