//! End-to-end: the real local S3, key vault and blob gateway binaries,
//! driven by the real backup client and simulator. One test binary.

mod cli;
mod crash;
mod fleet;
mod key_backup;
mod packs_v3;
mod resilience;
mod rotation;
mod rotation_v3;
mod trust_storage;
mod trust_tokens;
mod trust_vault;
mod vault;
