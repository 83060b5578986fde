//! Storage format v3: packs. Chunks are sealed into packs of about 16 MiB
//! with a sealed table of contents at their end, each pack padded to a
//! Padme length under a random name; a sealed, padded manifest maps files to
//! chunks and chunks to (pack, offset, length). The gateway and the storage
//! see pack names and padded sizes, never a chunk id or a chunk size.
//!
//! - [`pack`]: the pack format (writer, trailer and header, chunk opening);
//! - [`manifest`]: the sealed v3 manifest;
//! - [`gateway`]: the client of the gateway's pack API.
//!
//! Padding lengths come from the workspace's `padme` crate, the very
//! function the gateway checks sizes with, so the two cannot disagree.

pub mod gateway;
pub mod manifest;
pub mod pack;

pub use gateway::PackGatewayClient;
