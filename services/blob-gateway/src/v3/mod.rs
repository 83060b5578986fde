//! The v3 service (`e2ebackup.storage.v3.BlobGateway`): packs and
//! generations, committed by S3 conditional writes so several gateways can
//! share one object store. Each operation is its own module of domain code
//! over [`ObjectStore`](crate::objects::ObjectStore); [`service`] is the
//! thin gRPC face.
//!
//! Object layout, per account under `v3/<account>/`:
//! `packs/<64 hex>` (a pack by its random name), `manifests/<generation,
//! 20 digits>-<digest>` (a sealed manifest), and `commit` (the commit
//! record: the one object that says which generation is committed).

pub mod commit;
pub mod delete;
pub mod error;
pub mod get_backup;
pub mod get_pack;
pub mod layout;
pub mod list_uploads;
pub mod order;
pub mod put_pack;
pub mod record;
pub mod service;
pub mod sweep;

use std::sync::Arc;

use crate::config::Limits;
use crate::metrics::GatewayMetrics;
use crate::objects::ObjectStore;
use order::CommitOrder;

/// What every v3 operation works with.
pub struct Core {
    pub store: Arc<dyn ObjectStore>,
    pub limits: Limits,
    pub order: CommitOrder,
    pub metrics: GatewayMetrics,
}

#[cfg(test)]
mod tests;
