//! Blob names and sealing contexts shared by backup and restore: one place
//! decides what each sealed object is bound to.

use crate::seal::context;

/// The blob that holds the sealed manifest.
pub const MANIFEST_BLOB: &str = "manifest";

/// The blob that holds the `index`-th file of a backup.
pub fn file_blob(index: usize) -> String {
    format!("f{index:06}")
}

/// A file is bound to its account, backup, blob and path.
pub fn file_context(account: &str, backup_id: &str, blob: &str, path: &str) -> Vec<u8> {
    context(&[
        b"file",
        account.as_bytes(),
        backup_id.as_bytes(),
        blob.as_bytes(),
        path.as_bytes(),
    ])
}

/// A manifest is bound to its account and backup.
pub fn manifest_context(account: &str, backup_id: &str) -> Vec<u8> {
    context(&[b"manifest", account.as_bytes(), backup_id.as_bytes()])
}
