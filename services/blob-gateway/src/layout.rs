//! Where things live in the bucket. Every object of an account is under
//! `accounts/<account>/`:
//!
//! ```text
//! accounts/<account>/current                     the commit record (JSON)
//! accounts/<account>/backups/<backup id>/<blob>  blobs, staged or committed
//! ```
//!
//! Committing a backup is one PUT of the commit record, which S3 makes
//! atomic; blobs of any other backup id are garbage after that.

use account_token::AccountId;

use crate::error::ServiceError;

pub fn account_prefix(account: &AccountId) -> String {
    format!("accounts/{account}/")
}

pub fn commit_record(account: &AccountId) -> String {
    format!("accounts/{account}/current")
}

pub fn backups_prefix(account: &AccountId) -> String {
    format!("accounts/{account}/backups/")
}

pub fn backup_prefix(account: &AccountId, backup_id: &BackupId) -> String {
    format!("accounts/{account}/backups/{}/", backup_id.0)
}

pub fn blob_key(account: &AccountId, backup_id: &BackupId, blob: &BlobName) -> String {
    format!("accounts/{account}/backups/{}/{}", backup_id.0, blob.0)
}

/// A backup id: 32 lowercase hex digits, chosen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupId(String);

impl BackupId {
    pub fn parse(id: &str) -> Result<Self, ServiceError> {
        let valid = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(id.to_string()))
        } else {
            Err(ServiceError::InvalidArgument(
                "backup id must be 32 lowercase hex digits".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A blob name inside a backup: 1-64 characters of `[a-z0-9._-]`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobName(String);

impl BlobName {
    pub fn parse(name: &str) -> Result<Self, ServiceError> {
        let valid = (1..=64).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(name.to_string()))
        } else {
            Err(ServiceError::InvalidArgument(
                "blob name must be 1-64 characters of [a-z0-9._-]".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_prefix() {
        for bad in ["", ".", "..", "a/b", "A", "x".repeat(65).as_str(), "a b"] {
            assert!(BlobName::parse(bad).is_err(), "{bad}");
        }
        assert!(BlobName::parse("f000001").is_ok());
        assert!(BackupId::parse(&"0f".repeat(16)).is_ok());
        for bad in ["", "../../x", &"0F".repeat(16), &"0".repeat(31)] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_under_the_account_prefix() {
        let account = AccountId::new("alice").unwrap();
        let backup = BackupId::parse(&"ab".repeat(16)).unwrap();
        let key = blob_key(&account, &backup, &BlobName::parse("manifest").unwrap());
        assert!(key.starts_with(&backup_prefix(&account, &backup)));
        assert!(key.starts_with(&account_prefix(&account)));
        assert!(commit_record(&account).starts_with(&account_prefix(&account)));
    }
}
