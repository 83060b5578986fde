//! Account tokens: the short-lived bearer tokens that the account authority
//! (the chat server, in WhatsApp's design) issues and that the blob gateway
//! and the key vault verify. A token names one account and an expiry and is
//! signed with HMAC-SHA256 under a key the services share with the authority.
//!
//! Format: `e2eb1.<account>.<expires unix seconds>.<base64url MAC>`, where the
//! MAC covers everything before the last dot. Account ids are 1–64 characters
//! of `[A-Za-z0-9_-]`, so they are safe inside object keys and never contain
//! the separator.

pub mod grpc;

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

const PREFIX: &str = "e2eb1";

/// A validated account id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn new(id: impl Into<String>) -> Result<Self, TokenError> {
        let id = id.into();
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(id))
        } else {
            Err(TokenError::InvalidAccountId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("account id must be 1-64 characters of [A-Za-z0-9_-]")]
    InvalidAccountId,
    #[error("account token is malformed; ask the account authority for a new one")]
    Malformed,
    #[error("account token signature is invalid; ask the account authority for a new one")]
    BadSignature,
    #[error(
        "account token expired at unix time {expired_at}; ask the account authority for a new one"
    )]
    Expired { expired_at: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or create the token signing key at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the token signing key at {path} is not 64 hex digits")]
    Invalid { path: String },
}

/// The HMAC key shared by the account authority and the services.
pub struct SigningKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Reads the key (64 hex digits) from `path`, creating the file with a new
    /// random key (mode 0600) if it does not exist. Safe when several
    /// processes start at once: exactly one key wins.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let key = Self::generate();
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut file = open_private(&tmp).map_err(io)?;
            file.write_all(hex::encode(key.0.as_ref()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            // hard_link fails if another process created the key first; then
            // theirs is the key and ours is dropped.
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| KeyFileError::Invalid {
            path: path.display().to_string(),
        })?;
        Ok(Self(key))
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(self.0.as_ref()).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// Issues a token for `account` valid for `ttl` from now.
    pub fn mint(&self, account: &AccountId, ttl: Duration) -> String {
        self.mint_at(account, unix_now() + ttl.as_secs())
    }

    /// Issues a token for `account` that expires at `expires_at` (unix seconds).
    pub fn mint_at(&self, account: &AccountId, expires_at: u64) -> String {
        let payload = format!("{PREFIX}.{account}.{expires_at}");
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks a token's signature and expiry and returns the account it names.
    pub fn verify(&self, token: &str) -> Result<AccountId, TokenError> {
        self.verify_at(token, unix_now())
    }

    pub fn verify_at(&self, token: &str, now: u64) -> Result<AccountId, TokenError> {
        let (payload, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some(PREFIX), Some(account), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let expires_at: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        if expires_at <= now {
            return Err(TokenError::Expired {
                expired_at: expires_at,
            });
        }
        AccountId::new(account)
    }
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    #[test]
    fn a_minted_token_verifies_to_its_account() {
        let key = SigningKey::generate();
        let token = key.mint_at(&alice(), 2_000);
        assert_eq!(key.verify_at(&token, 1_999), Ok(alice()));
    }

    #[test]
    fn expired_token_is_refused() {
        let key = SigningKey::generate();
        let token = key.mint_at(&alice(), 2_000);
        assert_eq!(
            key.verify_at(&token, 2_000),
            Err(TokenError::Expired { expired_at: 2_000 })
        );
    }

    #[test]
    fn token_from_another_key_or_edited_is_refused() {
        let key = SigningKey::generate();
        let token = SigningKey::generate().mint_at(&alice(), 2_000);
        assert_eq!(key.verify_at(&token, 1), Err(TokenError::BadSignature));

        let token = key.mint_at(&alice(), 2_000);
        let forged = token.replacen("alice", "mallo", 1);
        assert_eq!(key.verify_at(&forged, 1), Err(TokenError::BadSignature));
        let extended = token.replacen("2000", "9000", 1);
        assert_eq!(key.verify_at(&extended, 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let key = SigningKey::generate();
        for token in [
            "",
            "abc",
            "e2eb1.alice.2000",
            "e2eb1.a.b.c.d",
            "x.alice.2000.!!",
        ] {
            assert_eq!(
                key.verify_at(token, 1),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
    }

    #[test]
    fn account_ids_are_restricted() {
        assert!(AccountId::new("device-0001_A").is_ok());
        for bad in ["", "a.b", "a/b", "ä", &"x".repeat(65)] {
            assert_eq!(
                AccountId::new(bad),
                Err(TokenError::InvalidAccountId),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_file_is_created_once_and_reread() {
        let dir = std::env::temp_dir().join(format!("e2eb-token-test-{}", std::process::id()));
        let path = dir.join("key");
        let _ = std::fs::remove_dir_all(&dir);
        let first = SigningKey::load_or_create(&path).unwrap();
        let second = SigningKey::load_or_create(&path).unwrap();
        let token = first.mint_at(&alice(), 2_000);
        assert_eq!(second.verify_at(&token, 1), Ok(alice()));
        assert!(!format!("{first:?}").contains(&std::fs::read_to_string(&path).unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
