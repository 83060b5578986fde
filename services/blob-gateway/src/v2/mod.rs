//! The v2 service (`e2ebackup.storage.v2.BlobGateway`): content-addressed
//! chunks and generations. A commit names a sealed manifest and every chunk
//! it references; it is atomic (one PUT of the commit record), conditional
//! on the generation the client started from, and followed by the deletion
//! of everything the new generation no longer references.

pub mod chunks;
pub mod commit;
pub mod gc;
pub mod layout;
pub mod record;
pub mod service;
pub mod uploads;
