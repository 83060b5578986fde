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
