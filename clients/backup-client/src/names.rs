//! Sealing contexts shared by backup and restore: one place decides what
//! each sealed object is bound to.

use crate::chunking::ChunkId;
use crate::seal::context;

/// A chunk is bound to its account and its id.
pub fn chunk_context(account: &str, id: &ChunkId) -> Vec<u8> {
    context(&[b"chunk", account.as_bytes(), &id.0])
}

/// A manifest is bound to its account, its generation and the id of the key
/// that sealed it (which precedes it in the clear).
pub fn manifest_context(account: &str, generation: u64, key_id: &[u8]) -> Vec<u8> {
    context(&[
        b"manifest",
        account.as_bytes(),
        &generation.to_be_bytes(),
        key_id,
    ])
}

/// A chunk in a pack (format v3) is bound to its account and its id; its
/// place in a pack is vouched for by the pack header and the manifest.
pub fn pack_chunk_context(account: &str, id: &ChunkId) -> Vec<u8> {
    context(&[b"pack chunk", account.as_bytes(), &id.0])
}

/// A pack header is bound to its account and the pack's name, so a header
/// cannot be moved to another pack or account.
pub fn pack_header_context(account: &str, pack_name: &str) -> Vec<u8> {
    context(&[b"pack header", account.as_bytes(), pack_name.as_bytes()])
}
