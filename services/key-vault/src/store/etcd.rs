//! The consensus record store: etcd's v3 API (the `etcd-client` crate over
//! tonic), for several vault replicas. etcd replicates every write through
//! Raft to a majority of its members before acknowledging it, and its reads
//! are linearizable (this store never asks for serializable reads, which a
//! lagging member could answer), so a replica never decides on stale data; a member
//! cut off from the majority answers nothing, which surfaces here as
//! [`StoreError::NoQuorum`] (the vault answers UNAVAILABLE).
//!
//! Layout under the configured prefix:
//!
//! ```text
//! <prefix>/secrets                          the sealed vault secrets (created once)
//! <prefix>/accounts/<account>               MAC (32 bytes) || row body
//! <prefix>/ephemeral/<account>/<kind>/<hex id>   MAC || expiry (8, BE) || payload
//! ```
//!
//! A row's revision is etcd's `mod_revision` of its key: global and
//! monotonic, so a deleted and re-created row never reuses one. Every write
//! is one transaction that compares it, so two replicas can never both
//! spend the same guess. Short-lived items carry an etcd lease that outlives
//! their expiry, so etcd drops them by itself; taking one is a delete that
//! returns the previous value (atomic: exactly one taker).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, PutOptions, Txn, TxnOp,
};

use super::{Ephemeral, EphemeralKind, RecordStore, Revision, StoreError, StoredRow};

/// How long one etcd call may take before the member is taken as cut off.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Extra lease time beyond an item's expiry (the vault checks the expiry
/// itself; the lease only garbage-collects).
const LEASE_SLACK_SECS: i64 = 30;

/// A vault record store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: String,
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (any member will do; the
    /// client fails over between them) and keeps everything under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), CALL_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(etcd)?;
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
            endpoints: endpoints.join(","),
        })
    }

    fn secrets_key(&self) -> String {
        format!("{}/secrets", self.prefix)
    }

    fn account_key(&self, account: &str) -> String {
        format!("{}/accounts/{account}", self.prefix)
    }

    fn ephemerals_of(&self, account: &str) -> String {
        format!("{}/ephemeral/{account}/", self.prefix)
    }

    fn ephemeral_key(&self, kind: EphemeralKind, id: &[u8], account: &str) -> String {
        format!(
            "{}{}/{}",
            self.ephemerals_of(account),
            kind.as_str(),
            hex::encode(id)
        )
    }
}

#[async_trait]
impl RecordStore for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd cluster {} (prefix {})", self.endpoints, self.prefix)
    }

    async fn load_secrets(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut response = self
            .client
            .kv_client()
            .get(self.secrets_key(), None)
            .await
            .map_err(etcd)?;
        Ok(response.take_kvs().pop().map(|kv| kv.value().to_vec()))
    }

    async fn store_secrets_once(&self, sealed: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let key = self.secrets_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), sealed.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.client.kv_client().txn(txn).await.map_err(etcd)?;
        if response.succeeded() {
            return Ok(sealed);
        }
        first_get_value(&response).ok_or(StoreError::Corrupt(
            "vault secrets vanished while being read",
        ))
    }

    async fn get_row(&self, account: &str) -> Result<Option<(StoredRow, Revision)>, StoreError> {
        let mut response = self
            .client
            .kv_client()
            .get(self.account_key(account), None)
            .await
            .map_err(etcd)?;
        let Some(kv) = response.take_kvs().pop() else {
            return Ok(None);
        };
        let value = kv.value();
        if value.len() < 32 {
            return Err(StoreError::Corrupt("row"));
        }
        let (mac, body) = value.split_at(32);
        let row = StoredRow {
            body: body.to_vec(),
            mac: mac.try_into().expect("split at 32"),
        };
        Ok(Some((row, revision_of(kv.mod_revision())?)))
    }

    async fn put_row(
        &self,
        account: &str,
        row: StoredRow,
        expected: Option<Revision>,
        _scrub: bool,
    ) -> Result<bool, StoreError> {
        let key = self.account_key(account);
        let compare = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(revision) => {
                Compare::mod_revision(key.clone(), CompareOp::Equal, etcd_revision(revision))
            }
        };
        let value = [row.mac.as_slice(), &row.body].concat();
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, value, None)]);
        let response = self.client.kv_client().txn(txn).await.map_err(etcd)?;
        Ok(response.succeeded())
    }

    async fn delete_row(&self, account: &str, expected: Revision) -> Result<bool, StoreError> {
        let key = self.account_key(account);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                etcd_revision(expected),
            )])
            .and_then([
                TxnOp::delete(key, None),
                TxnOp::delete(
                    self.ephemerals_of(account),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]);
        let response = self.client.kv_client().txn(txn).await.map_err(etcd)?;
        Ok(response.succeeded())
    }

    async fn put_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        item: Ephemeral,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let ttl_ms = item.expires_at_ms.saturating_sub(now_ms);
        let ttl = i64::try_from(ttl_ms.div_ceil(1000))
            .unwrap_or(i64::MAX / 2)
            .saturating_add(LEASE_SLACK_SECS);
        let lease = self
            .client
            .lease_client()
            .grant(ttl, None)
            .await
            .map_err(etcd)?;
        let value = [
            item.mac.as_slice(),
            &item.expires_at_ms.to_be_bytes(),
            &item.payload,
        ]
        .concat();
        self.client
            .kv_client()
            .put(
                self.ephemeral_key(kind, id, &item.account),
                value,
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await
            .map_err(etcd)?;
        Ok(())
    }

    async fn take_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &str,
    ) -> Result<Option<Ephemeral>, StoreError> {
        let mut response = self
            .client
            .kv_client()
            .delete(
                self.ephemeral_key(kind, id, account),
                Some(DeleteOptions::new().with_prev_key()),
            )
            .await
            .map_err(etcd)?;
        let Some(kv) = response.take_prev_kvs().pop() else {
            return Ok(None);
        };
        let value = kv.value();
        if value.len() < 40 {
            return Err(StoreError::Corrupt("short-lived item"));
        }
        let (mac, rest) = value.split_at(32);
        let (expires, payload) = rest.split_at(8);
        Ok(Some(Ephemeral {
            account: account.to_owned(),
            payload: payload.to_vec(),
            expires_at_ms: u64::from_be_bytes(expires.try_into().expect("split at 8")),
            mac: mac.try_into().expect("split at 32"),
        }))
    }
}

fn first_get_value(response: &etcd_client::TxnResponse) -> Option<Vec<u8>> {
    response.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

fn revision_of(revision: i64) -> Result<Revision, StoreError> {
    Revision::try_from(revision).map_err(|_| StoreError::Corrupt("row revision"))
}

fn etcd_revision(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// etcd failures: a cluster that cannot be reached or has no leader is
/// "no quorum" (retry later); anything else is a store failure.
fn etcd(error: etcd_client::Error) -> StoreError {
    use etcd_client::Error;
    match &error {
        Error::TransportError(_) | Error::IoError(_) => StoreError::NoQuorum,
        Error::GRpcStatus(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            StoreError::NoQuorum
        }
        // The connection to a member broke mid-call (the member died):
        // tonic reports it as UNKNOWN with the transport error as source.
        Error::GRpcStatus(status)
            if status.code() == tonic::Code::Unknown
                && std::error::Error::source(status).is_some() =>
        {
            StoreError::NoQuorum
        }
        _ => StoreError::Database(format!("etcd: {error}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use super::*;
    use crate::store::suite;

    /// One etcd member on loopback in a temporary directory, killed on drop.
    pub(crate) struct TestEtcd {
        child: Child,
        pub endpoint: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for TestEtcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// Starts a single-member cluster (Debian's `etcd-server`; `make deps`
    /// installs it) and waits until it answers.
    pub(crate) async fn start_etcd() -> TestEtcd {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (Debian's etcd-server; run `make deps`)");
        let etcd = TestEtcd {
            child,
            endpoint,
            _dir: dir,
        };
        for _ in 0..200 {
            if let Ok(store) =
                EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/probe").await
                && store.load_secrets().await.is_ok()
            {
                return etcd;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not answer on {}", etcd.endpoint);
    }

    #[tokio::test]
    async fn the_store_suite_passes() {
        let etcd = start_etcd().await;
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/e2eb/test")
            .await
            .unwrap();
        suite::run(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_lose_no_update() {
        let etcd = start_etcd().await;
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/e2eb/test")
            .await
            .unwrap();
        suite::concurrent_writers_lose_no_update(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn a_cluster_that_cannot_be_reached_is_no_quorum() {
        let etcd = start_etcd().await;
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/e2eb/test")
            .await
            .unwrap();
        drop(etcd);
        let error = store.get_row("alice").await.unwrap_err();
        assert!(matches!(error, StoreError::NoQuorum), "{error:?}");
        assert!(error.is_transient());
    }
}
