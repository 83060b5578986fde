//! Where v3 objects live, and the one parser of pack names.

use std::fmt;

use account_token::AccountId;

use crate::v3::error::V3Error;

/// Every v3 account lives under this prefix.
pub const ROOT: &str = "v3/";

/// A pack name: 64 lowercase hex digits the device drew at random.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackName(String);

impl PackName {
    pub fn parse(name: &str) -> Result<Self, V3Error> {
        let valid = name.len() == 64
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            let shown: String = name.chars().take(80).collect();
            return Err(V3Error::Malformed(format!(
                "pack name {shown:?} is not 64 lowercase hex digits"
            )));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn account_prefix(account: &AccountId) -> String {
    format!("{ROOT}{}/", account.as_str())
}

pub fn packs_prefix(account: &AccountId) -> String {
    format!("{}packs/", account_prefix(account))
}

pub fn pack_key(account: &AccountId, name: &PackName) -> String {
    format!("{}{}", packs_prefix(account), name.as_str())
}

pub fn manifests_prefix(account: &AccountId) -> String {
    format!("{}manifests/", account_prefix(account))
}

/// A manifest's key: its generation and a digest of its bytes, so two
/// gateways committing the same generation never overwrite each other's
/// manifest (the loser's is left for the sweep).
pub fn manifest_key(account: &AccountId, generation: u64, manifest: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(manifest);
    format!(
        "{}{generation:020}-{}",
        manifests_prefix(account),
        hex::encode(&digest[..16])
    )
}

pub fn record_key(account: &AccountId) -> String {
    format!("{}commit", account_prefix(account))
}

/// The pack name in a key under `packs_prefix`, if it is one.
pub fn pack_of_key(prefix: &str, key: &str) -> Option<PackName> {
    key.strip_prefix(prefix)
        .and_then(|name| PackName::parse(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_names_are_64_lowercase_hex() {
        let good = "0123456789abcdef".repeat(4);
        assert_eq!(PackName::parse(&good).unwrap().as_str(), good);
        for bad in [
            String::new(),
            good.to_uppercase(),
            good[..63].to_string(),
            format!("{good}0"),
            format!("../{}", &good[3..]),
            "g".repeat(64),
        ] {
            assert!(PackName::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests_of_one_generation_get_distinct_keys() {
        let account = AccountId::new("alice").unwrap();
        let a = manifest_key(&account, 7, b"one");
        let b = manifest_key(&account, 7, b"two");
        assert_ne!(a, b);
        assert!(a.starts_with("v3/alice/manifests/00000000000000000007-"));
    }
}
