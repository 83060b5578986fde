//! What the vault counts for its operators (served by `rpc::metrics` next
//! to the per-RPC counts): guesses spent, logins that succeeded, wrong
//! passwords, records erased by the guess limit, registrations. Counts
//! only; never an account.

use prometheus_client::metrics::counter::Counter;
use rpc::MetricsRegistry;

/// The vault's counters; clones count into the same values.
#[derive(Clone, Default)]
pub struct VaultMetrics {
    pub guesses_spent: Counter,
    pub logins_succeeded: Counter,
    pub wrong_passwords: Counter,
    pub lockouts: Counter,
    pub registrations: Counter,
}

impl VaultMetrics {
    /// Counters registered in `registry`.
    pub fn registered(registry: &MetricsRegistry) -> Self {
        let metrics = Self::default();
        for (name, help, counter) in [
            (
                "vault_guesses_spent",
                "password guesses counted (each login start spends one)",
                &metrics.guesses_spent,
            ),
            (
                "vault_logins_succeeded",
                "logins that proved the password (the count resets)",
                &metrics.logins_succeeded,
            ),
            (
                "vault_wrong_passwords",
                "logins that finished with a wrong password",
                &metrics.wrong_passwords,
            ),
            (
                "vault_lockouts",
                "records erased for good because the guess limit was reached",
                &metrics.lockouts,
            ),
            (
                "vault_registrations",
                "password or key-only records stored (new or replaced)",
                &metrics.registrations,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        metrics
    }
}
