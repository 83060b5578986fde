//! The device side of e2e-backups: the backup key and the keys derived from
//! it, the sealed object format, and the operations a phone runs against the
//! blob gateway (back up, restore, disable). Everything is encrypted here,
//! before it leaves the device; the gateway and the storage see ciphertext.

pub mod backup;
pub mod device_files;
pub mod gateway;
pub mod key;
mod names;
pub mod restore;
pub mod seal;
pub mod vault;

pub use backup::{BackupError, BackupReport, back_up};
pub use gateway::{BearerToken, GatewayClient, GatewayError};
pub use key::{KeyParseError, RootKey};
pub use restore::{IntegrityFailure, RestoreError, RestoreReport, restore};

/// The blob name and context of every file in a backup, for tools and tests
/// that need to find one file's blob (e.g. to damage it on purpose).
pub fn file_blob_name(index: usize) -> String {
    names::file_blob(index)
}
