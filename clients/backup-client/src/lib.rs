//! The device side of e2e-backups: the backup key and the keys derived from
//! it, content-defined chunking, the sealed object and manifest formats, and
//! the operations a phone runs against the blob gateway (back up, restore,
//! rotate the key, disable) and the key vault (password protection).
//! Everything is encrypted here, before it leaves the device; the gateway and
//! the storage see ciphertext.

pub mod backup;
pub mod chunking;
pub mod device_files;
pub mod freshness;
pub mod gateway;
pub mod key;
pub mod manifest;
mod names;
pub mod packs;
pub mod restore;
pub mod rotate;
pub mod seal;
pub mod vault;

pub use backup::{BackupError, BackupReport, back_up, back_up_with_signer};
pub use gateway::{BearerToken, GatewayClient, GatewayError};
pub use key::{KeyParseError, RootKey};
pub use restore::{IntegrityFailure, RestoreError, RestoreReport, restore, restore_any};
