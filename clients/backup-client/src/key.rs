//! The backup root key `K` and the keys derived from it.
//!
//! `K` is 32 bytes from the OS CSPRNG, shown to the user as 64 hex digits in
//! sixteen groups of four. Every key the device uses is derived from `K` with
//! HKDF-SHA256 and a label of its own; `K` itself never leaves the device.

use std::fmt;

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The backup root key. `Debug` is redacted and the bytes are zeroized on drop.
#[derive(Clone)]
pub struct RootKey(Zeroizing<[u8; 32]>);

/// A 32-byte key derived from [`RootKey`] for one purpose.
#[derive(Clone)]
pub struct DerivedKey(Zeroizing<[u8; 32]>);

/// What a derived key is for; each purpose has its own HKDF label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Seals file contents.
    FileData,
    /// Seals the backup manifest.
    Manifest,
    /// Keys the MAC that names chunks.
    ChunkId,
    /// Names the key in the clear (see [`RootKey::key_id`]).
    KeyId,
    /// The seed of the backup auth key: the Ed25519 key pair whose
    /// signatures prove knowledge of `K` to the key vault (password change,
    /// delete, backup pointer); the vault stores only the public half.
    VaultAuth,
    /// Seals the table of contents at the end of a pack (format v3).
    PackHeader,
    /// Seals the manifest of format v3.
    ManifestV3,
    /// Keys the gear table of content-defined chunking (format v3), so
    /// chunk boundaries do not fingerprint files the attacker knows.
    CdcGearSeed,
}

impl KeyPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::FileData => b"e2e-backups v1 file data",
            KeyPurpose::Manifest => b"e2e-backups v1 manifest",
            KeyPurpose::VaultAuth => b"e2e-backups v2 vault auth signing key",
            KeyPurpose::ChunkId => b"e2e-backups v1 chunk id",
            KeyPurpose::KeyId => b"e2e-backups v1 key id",
            KeyPurpose::PackHeader => b"e2e-backups v3 pack header",
            KeyPurpose::ManifestV3 => b"e2e-backups v3 manifest",
            KeyPurpose::CdcGearSeed => b"e2e-backups v3 cdc gear seed",
        }
    }
}

/// Why a typed-in 64-digit key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("the backup key has {found} hex digits; it must have exactly 64")]
    WrongLength { found: usize },
    #[error(
        "the backup key has an invalid character at position {position}; only 0-9, a-f, spaces and dashes are allowed"
    )]
    InvalidCharacter { position: usize },
}

impl RootKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw key, for the few places that must have it.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as the user sees it: 64 lowercase hex digits in groups of four,
    /// separated by spaces.
    pub fn to_display_digits(&self) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(self.0.as_ref()));
        let mut out = Zeroizing::new(String::with_capacity(79));
        for (i, digit) in hex.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push(' ');
            }
            out.push(digit);
        }
        out
    }

    /// Parses a key typed by the user: either case, spaces and dashes allowed
    /// anywhere. The error says whether the length or a character is wrong
    /// (positions count from 1 over the text as given) but never echoes digits.
    pub fn parse(text: &str) -> Result<Self, KeyParseError> {
        let mut digits = Zeroizing::new(Vec::with_capacity(64));
        for (index, ch) in text.chars().enumerate() {
            match ch {
                ' ' | '-' | '\t' => {}
                c if c.is_ascii_hexdigit() => digits.push(c.to_ascii_lowercase() as u8),
                _ => {
                    return Err(KeyParseError::InvalidCharacter {
                        position: index + 1,
                    });
                }
            }
        }
        if digits.len() != 64 {
            return Err(KeyParseError::WrongLength {
                found: digits.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(digits.as_slice(), bytes.as_mut())
            .expect("64 checked hex digits decode to 32 bytes");
        Ok(Self(bytes))
    }

    /// A short public name for this key, stored in the clear before each
    /// sealed manifest so a restore can tell which key a backup needs (old
    /// or new, around a rotation) without trying to decrypt. Derived one-way
    /// from `K`; it reveals nothing about it.
    pub fn key_id(&self) -> [u8; 8] {
        let derived = self.derive(KeyPurpose::KeyId);
        derived.expose_secret()[..8]
            .try_into()
            .expect("a derived key has 32 bytes")
    }

    /// The backup auth key: an Ed25519 signing key derived from `K`.
    /// Zeroized on drop; its public half is what the vault registers.
    pub fn auth_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(self.derive(KeyPurpose::VaultAuth).expose_secret())
    }

    /// The public half of [`Self::auth_key`].
    pub fn auth_public_key(&self) -> [u8; 32] {
        self.auth_key().verifying_key().to_bytes()
    }

    /// Derives the key for `purpose` with HKDF-SHA256.
    pub fn derive(&self, purpose: KeyPurpose) -> DerivedKey {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, self.0.as_ref())
            .expand(purpose.label(), out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        DerivedKey(out)
    }
}

impl DerivedKey {
    /// A one-off key for a single sealed object: HKDF-SHA256 of this key with
    /// the object's salt, its info binding the object's context (account and
    /// what the object is). Distinct salts give distinct keys, so the
    /// per-object nonce sequence never repeats under one key; and two
    /// accounts that share a root key (and so seal an equal chunk under the
    /// same salt, its id) still never share a (key, nonce).
    pub fn for_object(&self, salt: &[u8; 32], context: &[u8]) -> DerivedKey {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(salt), self.0.as_ref())
            .expand_multi_info(&[b"e2e-backups v2 object", context], out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        DerivedKey(out)
    }

    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips_through_parse() {
        let key = RootKey::generate();
        let shown = key.to_display_digits();
        assert_eq!(shown.len(), 64 + 15);
        assert!(shown.split(' ').all(|group| group.len() == 4));
        let parsed = RootKey::parse(&shown).unwrap();
        assert_eq!(parsed.expose_secret(), key.expose_secret());
    }

    #[test]
    fn parse_accepts_either_case_spaces_and_dashes() {
        let key = RootKey::from_bytes([0xab; 32]);
        let upper = "AB".repeat(32);
        let dashed = "abAB-".repeat(16);
        for text in [upper.as_str(), dashed.as_str(), &format!("  {upper}\t")] {
            assert_eq!(
                RootKey::parse(text).unwrap().expose_secret(),
                key.expose_secret()
            );
        }
    }

    #[test]
    fn parse_says_what_is_wrong() {
        assert_eq!(
            RootKey::parse(&"a".repeat(63)).unwrap_err(),
            KeyParseError::WrongLength { found: 63 }
        );
        assert_eq!(
            RootKey::parse(&"a".repeat(65)).unwrap_err(),
            KeyParseError::WrongLength { found: 65 }
        );
        assert_eq!(
            RootKey::parse("abcd efgh").unwrap_err(),
            KeyParseError::InvalidCharacter { position: 8 }
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = RootKey::from_bytes([0x5a; 32]);
        let shown = format!("{key:?} {:?}", key.derive(KeyPurpose::FileData));
        assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn the_auth_key_is_derived_from_k_alone() {
        let key = RootKey::from_bytes([3; 32]);
        assert_eq!(
            key.auth_public_key(),
            RootKey::from_bytes([3; 32]).auth_public_key()
        );
        assert_ne!(
            key.auth_public_key(),
            RootKey::from_bytes([4; 32]).auth_public_key()
        );
        // The seed is not any other purpose's key.
        assert_ne!(
            key.auth_key().to_bytes(),
            *key.derive(KeyPurpose::Manifest).expose_secret()
        );
    }

    #[test]
    fn purposes_and_salts_give_distinct_keys() {
        let key = RootKey::generate();
        let data = key.derive(KeyPurpose::FileData);
        let manifest = key.derive(KeyPurpose::Manifest);
        assert_ne!(data.expose_secret(), manifest.expose_secret());
        assert_ne!(
            data.for_object(&[1; 32], b"alice").expose_secret(),
            data.for_object(&[2; 32], b"alice").expose_secret()
        );
        // The same salt (an equal chunk) in two accounts: two keys.
        assert_ne!(
            data.for_object(&[1; 32], b"alice").expose_secret(),
            data.for_object(&[1; 32], b"bob").expose_secret()
        );
        // Deterministic: the same key and label give the same derived key.
        assert_eq!(
            key.derive(KeyPurpose::FileData).expose_secret(),
            data.expose_secret()
        );
    }
}
