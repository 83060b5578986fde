//! Where the v2 service keeps things. Every object of an account is under
//! `accounts/<account>/`, next to (and named apart from) the v1 objects:
//!
//! ```text
//! accounts/<account>/generation                 the commit record (JSON, one PUT)
//! accounts/<account>/manifests/<generation>     sealed manifests, 20-digit zero-padded
//! accounts/<account>/chunks/<chunk id>          sealed chunks, 64 lowercase hex digits
//! ```
//!
//! Zero padding makes manifests sort by generation; ids and generations are
//! validated here, so no request can name a key outside its account.

use std::fmt;

use account_token::AccountId;

use crate::error::ServiceError;

pub fn account_prefix(account: &AccountId) -> String {
    format!("accounts/{account}/")
}

pub fn record_key(account: &AccountId) -> String {
    format!("accounts/{account}/generation")
}

pub fn chunks_prefix(account: &AccountId) -> String {
    format!("accounts/{account}/chunks/")
}

pub fn chunk_key(account: &AccountId, id: &ChunkId) -> String {
    format!("accounts/{account}/chunks/{}", id.0)
}

pub fn manifests_prefix(account: &AccountId) -> String {
    format!("accounts/{account}/manifests/")
}

pub fn manifest_key(account: &AccountId, generation: u64) -> String {
    format!("accounts/{account}/manifests/{generation:020}")
}

/// The account named by a key directly under `accounts/`, such as the
/// common prefix `accounts/alice/` of a delimited listing.
pub fn account_of_prefix(prefix: &str) -> Option<AccountId> {
    let name = prefix.strip_prefix("accounts/")?.strip_suffix('/')?;
    AccountId::new(name).ok()
}

/// A chunk id: exactly 64 lowercase hex digits (the client's keyed MAC of
/// the chunk's plaintext, hex-encoded).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(String);

impl ChunkId {
    pub fn parse(id: &str) -> Result<Self, ServiceError> {
        if is_chunk_id(id) {
            Ok(Self(id.to_string()))
        } else {
            Err(ServiceError::InvalidArgument(format!(
                "chunk id must be 64 lowercase hex digits, got {} characters{}",
                id.len(),
                if id.len() == 64 {
                    " with others than [0-9a-f]"
                } else {
                    ""
                }
            )))
        }
    }

    /// The id of a chunk object key under `chunks_prefix`, or `None` for any
    /// other key (such as a stray object that is not a chunk).
    pub fn from_key(chunks_prefix: &str, key: &str) -> Option<Self> {
        key.strip_prefix(chunks_prefix)
            .filter(|id| is_chunk_id(id))
            .map(|id| Self(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.0[..16])
    }
}

fn is_chunk_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses and deduplicates a request's chunk ids, keeping their order.
pub fn parse_ids(ids: &[String]) -> Result<Vec<ChunkId>, ServiceError> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        let id = ChunkId::parse(id)?;
        if seen.insert(id.clone()) {
            parsed.push(id);
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    #[test]
    fn chunk_ids_are_exactly_64_lowercase_hex_digits() {
        assert!(ChunkId::parse(&"0a".repeat(32)).is_ok());
        let dots = format!("../{}", "0".repeat(61));
        let slash = format!("{}/0", "0".repeat(62));
        for bad in [
            "",
            "0".repeat(63).as_str(),
            "0".repeat(65).as_str(),
            "0A".repeat(32).as_str(),
            "g".repeat(64).as_str(),
            dots.as_str(),
            slash.as_str(),
        ] {
            assert!(ChunkId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_stay_under_the_account_prefix() {
        let id = ChunkId::parse(&"ab".repeat(32)).unwrap();
        let prefix = account_prefix(&alice());
        for key in [
            chunk_key(&alice(), &id),
            manifest_key(&alice(), 7),
            record_key(&alice()),
        ] {
            assert!(key.starts_with(&prefix), "{key}");
        }
        assert!(chunk_key(&alice(), &id).starts_with(&chunks_prefix(&alice())));
        assert_eq!(
            manifest_key(&alice(), 7),
            "accounts/alice/manifests/00000000000000000007"
        );
        assert_eq!(
            manifest_key(&alice(), u64::MAX),
            "accounts/alice/manifests/18446744073709551615"
        );
    }

    #[test]
    fn chunk_keys_parse_back_and_strays_do_not() {
        let id = ChunkId::parse(&"cd".repeat(32)).unwrap();
        let prefix = chunks_prefix(&alice());
        assert_eq!(
            ChunkId::from_key(&prefix, &chunk_key(&alice(), &id)),
            Some(id)
        );
        assert_eq!(ChunkId::from_key(&prefix, "accounts/alice/chunks/x"), None);
        assert_eq!(ChunkId::from_key(&prefix, &record_key(&alice())), None);
    }

    #[test]
    fn account_prefixes_name_their_account() {
        assert_eq!(account_of_prefix("accounts/alice/"), Some(alice()));
        assert_eq!(account_of_prefix("accounts/a/b/"), None);
        assert_eq!(account_of_prefix("other/alice/"), None);
    }

    #[test]
    fn duplicate_ids_are_dropped_in_order() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let ids = parse_ids(&[b.clone(), a.clone(), b.clone()]).unwrap();
        let ids: Vec<&str> = ids.iter().map(ChunkId::as_str).collect();
        assert_eq!(ids, [b.as_str(), a.as_str()]);
    }
}
