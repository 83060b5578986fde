//! Storage format v3: packs. Chunks are sealed into packs of about 16 MiB
//! with a sealed table of contents at their end, each pack padded to a
//! Padme length under a random name; a sealed, padded manifest maps files to
//! chunks and chunks to (pack, offset, length). The gateway and the storage
//! see pack names and padded sizes, never a chunk id or a chunk size.
//!
//! - [`pack`]: the pack format (writer, trailer and header, chunk opening);
//! - [`manifest`]: the sealed v3 manifest;
//! - [`gateway`]: the client of the gateway's pack API;
//! - [`backup`] and [`restore`]: the operations, framed by the key vault's
//!   backup pointer as in v2;
//! - [`rotate`]: key rotation, v2's contract over packs.
//!
//! Padding lengths come from the workspace's `padme` crate, the very
//! function the gateway checks sizes with, so the two cannot disagree.

pub mod backup;
pub mod gateway;
pub mod manifest;
pub mod pack;
pub mod restore;
pub mod rotate;

pub use backup::{PackBackupOptions, PackBackupReport, back_up_v3, back_up_v3_with};
pub use gateway::PackGatewayClient;
pub use restore::{restore_v3, restore_v3_any};
pub use rotate::{finish_rotation_v3, rotate_key_v3, rotate_key_v3_with, rotate_key_with_vault_v3};
