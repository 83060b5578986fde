//! The account id a token names: the one value the services take from a
//! verified token, used inside object keys and vault rows, so its alphabet
//! is restricted.

use std::fmt;

/// A validated account id: 1–64 characters of `[A-Za-z0-9_-]`, safe inside
/// object keys and file names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

/// An account id outside the allowed alphabet or length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account id must be 1-64 characters of [A-Za-z0-9_-]")]
pub struct InvalidAccountId;

impl AccountId {
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidAccountId> {
        let id = id.into();
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(id))
        } else {
            Err(InvalidAccountId)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_restricted() {
        assert!(AccountId::new("device-0001_A").is_ok());
        assert!(AccountId::new("x".repeat(64)).is_ok());
        for bad in ["", "a.b", "a/b", "ä", &"x".repeat(65)] {
            assert_eq!(AccountId::new(bad), Err(InvalidAccountId), "{bad}");
        }
    }
}
