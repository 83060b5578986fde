//! What the gateway counts for its operators (served by `rpc::metrics`
//! next to the per-RPC counts): commits and the size of each committed
//! backup, packs and their bytes stored, and objects deleted once no
//! generation references them. Counts only; never an account.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rpc::MetricsRegistry;

/// The gateway's counters; clones count into the same values.
#[derive(Clone)]
pub struct GatewayMetrics {
    pub commits: Counter,
    pub committed_backup_bytes: Histogram,
    pub packs_stored: Counter,
    pub pack_bytes_stored: Counter,
    pub objects_deleted: Counter,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            commits: Counter::default(),
            // 64 KiB to 64 GiB.
            committed_backup_bytes: Histogram::new(exponential_buckets(65536.0, 4.0, 11)),
            packs_stored: Counter::default(),
            pack_bytes_stored: Counter::default(),
            objects_deleted: Counter::default(),
        }
    }
}

impl GatewayMetrics {
    /// Counters registered in `registry`.
    pub fn registered(registry: &MetricsRegistry) -> Self {
        let metrics = Self::default();
        registry.register(
            "gateway_commits",
            "generations committed",
            metrics.commits.clone(),
        );
        registry.register(
            "gateway_committed_backup_bytes",
            "bytes a backup holds in storage when a generation of it is committed",
            metrics.committed_backup_bytes.clone(),
        );
        registry.register(
            "gateway_packs_stored",
            "packs uploaded and stored (committed or not yet)",
            metrics.packs_stored.clone(),
        );
        registry.register(
            "gateway_pack_bytes_stored",
            "bytes of the packs stored",
            metrics.pack_bytes_stored.clone(),
        );
        registry.register(
            "gateway_objects_deleted",
            "packs, chunks and manifests deleted because no generation references them",
            metrics.objects_deleted.clone(),
        );
        metrics
    }

    /// Counts a committed generation of `stored_bytes` whose commit deleted
    /// `deleted` objects.
    pub fn committed(&self, stored_bytes: u64, deleted: u64) {
        self.commits.inc();
        self.committed_backup_bytes.observe(stored_bytes as f64);
        self.objects_deleted.inc_by(deleted);
    }
}
