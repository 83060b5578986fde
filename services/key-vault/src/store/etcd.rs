//! The consensus record store: etcd's v3 API (the `etcd-client` crate over
//! tonic), for several vault replicas. etcd replicates every write through
//! Raft to a majority of its members before acknowledging it, and its reads
//! are linearizable (this store never asks for serializable reads, which a
//! lagging member could answer), so a replica never decides on stale data.
//!
//! The store talks to one member at a time and moves to the next when that
//! one cannot answer (down, cut off from the majority, mid-election), so
//! losing a minority of the cluster never reaches the vault's callers; only
//! when no member answers within a few seconds does a call fail with
//! [`StoreError::NoQuorum`] (the vault answers UNAVAILABLE). A call may thus
//! be sent twice; every write is built so that a second send is harmless.
//!
//! Layout under the configured prefix:
//!
//! ```text
//! <prefix>/secrets                          the sealed vault secrets (created once)
//! <prefix>/accounts/<account>               write id (16) || MAC (32) || row body
//! <prefix>/ephemeral/<account>/<kind>/<hex id>   MAC || expiry (8, BE) || payload
//! ```
//!
//! A row's revision is etcd's `mod_revision` of its key: global and
//! monotonic, so a deleted and re-created row never reuses one. Every write
//! is one transaction that compares it, so two replicas can never both
//! spend the same guess. Short-lived items carry an etcd lease that outlives
//! their expiry, so etcd drops them by itself; taking one is a delete that
//! returns the previous value (atomic: exactly one taker).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, PutOptions, Txn, TxnOp, TxnResponse,
};
use rand::RngCore;
use tokio::time::Instant;

use super::{Ephemeral, EphemeralKind, RecordStore, Revision, StoreError, StoredRow};

/// How long one etcd call to one member may take before that member is
/// taken as cut off.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a store call keeps trying other members (a leader election
/// takes about a second) before it answers "no quorum".
const FAILOVER_BUDGET: Duration = Duration::from_secs(4);
/// Extra lease time beyond an item's expiry (the vault checks the expiry
/// itself; the lease only garbage-collects).
const LEASE_SLACK_SECS: i64 = 30;
/// Bytes of the random id each row write carries (see `put_row_as`).
const WRITE_ID_LEN: usize = 16;

/// A vault record store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    /// One client per member: a call goes to one member, and moves to the
    /// next when that member cannot answer.
    members: Arc<[Client]>,
    /// The member that answered last; calls start there.
    preferred: Arc<AtomicUsize>,
    prefix: String,
    endpoints: String,
}

impl EtcdStore {
    /// Prepares clients for the members at `endpoints` (connections are
    /// made on first use, so a member that is down now is no obstacle) and
    /// keeps everything under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), CALL_TIMEOUT);
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(etcd)?;
            members.push(client);
        }
        if members.is_empty() {
            return Err(StoreError::Database("no etcd endpoint given".into()));
        }
        Ok(Self {
            members: members.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            prefix: prefix.trim_end_matches('/').to_owned(),
            endpoints: endpoints.join(","),
        })
    }

    /// Runs `call` on the preferred member; when a member cannot answer
    /// (down, cut off from the majority, or mid-election) runs it again on
    /// the next, until one answers or [`FAILOVER_BUDGET`] is spent. Returns
    /// the answer and whether an earlier attempt may have been applied
    /// without its answer arriving. Every `call` must be safe to send twice:
    /// reads are, and each write below says why it is.
    async fn with_failover<T, F, Fut>(&self, call: F) -> Result<(T, bool), StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + FAILOVER_BUDGET;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut backoff = Duration::from_millis(50);
        for attempt in 0.. {
            let member = (first + attempt) % self.members.len();
            match call(self.members[member].clone()).await {
                Ok(answer) => {
                    self.preferred.store(member, Ordering::Relaxed);
                    return Ok((answer, attempt > 0));
                }
                Err(error) => {
                    let error = etcd(error);
                    if !matches!(error, StoreError::NoQuorum) || Instant::now() >= deadline {
                        return Err(error);
                    }
                    tracing::debug!(member, "etcd member did not answer; trying the next");
                    if (attempt + 1) % self.members.len() == 0 {
                        // Every member failed once: give an election time.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
        unreachable!("the loop returns")
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

    /// [`RecordStore::put_row`] with the write's id given. The stored value
    /// starts with `write_id`; the transaction returns the current value
    /// when its comparison fails. A write sent again after its answer was
    /// lost therefore either applies (the first never did), or finds its
    /// own id (the first did: success), or finds another id (another write
    /// came first, and the first send, comparing the same revision, can
    /// never apply later). So a guess is spent exactly once per write.
    async fn put_row_as(
        &self,
        account: &str,
        row: &StoredRow,
        expected: Option<Revision>,
        write_id: [u8; WRITE_ID_LEN],
    ) -> Result<bool, StoreError> {
        let key = self.account_key(account);
        let value = [write_id.as_slice(), row.mac.as_slice(), &row.body].concat();
        let (response, _) = self
            .with_failover(|client| {
                let compare = match expected {
                    None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    Some(revision) => Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        etcd_revision(revision),
                    ),
                };
                let txn = Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]);
                async move { client.kv_client().txn(txn).await }
            })
            .await?;
        Ok(response.succeeded()
            || first_get_value(&response).is_some_and(|current| current.starts_with(&write_id)))
    }
}

#[async_trait]
impl RecordStore for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd cluster {} (prefix {})", self.endpoints, self.prefix)
    }

    async fn load_secrets(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.secrets_key();
        let (mut response, _) = self
            .with_failover(|client| {
                let key = key.clone();
                async move { client.kv_client().get(key, None).await }
            })
            .await?;
        Ok(response.take_kvs().pop().map(|kv| kv.value().to_vec()))
    }

    async fn store_secrets_once(&self, sealed: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        // Sent twice, the second finds the first's secrets: the same bytes.
        let key = self.secrets_key();
        let (response, _) = self
            .with_failover(|client| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), sealed.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]);
                async move { client.kv_client().txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return Ok(sealed);
        }
        first_get_value(&response).ok_or(StoreError::Corrupt(
            "vault secrets vanished while being read",
        ))
    }

    async fn get_row(&self, account: &str) -> Result<Option<(StoredRow, Revision)>, StoreError> {
        let key = self.account_key(account);
        let (mut response, _) = self
            .with_failover(|client| {
                let key = key.clone();
                async move { client.kv_client().get(key, None).await }
            })
            .await?;
        let Some(kv) = response.take_kvs().pop() else {
            return Ok(None);
        };
        let value = kv.value();
        if value.len() < WRITE_ID_LEN + 32 {
            return Err(StoreError::Corrupt("row"));
        }
        let (mac, body) = value[WRITE_ID_LEN..].split_at(32);
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
        let mut write_id = [0; WRITE_ID_LEN];
        rand::thread_rng().fill_bytes(&mut write_id);
        self.put_row_as(account, &row, expected, write_id).await
    }

    async fn delete_row(&self, account: &str, expected: Revision) -> Result<bool, StoreError> {
        // Sent again after a lost answer, the delete finds the row gone:
        // ours applied, or another delete did; either way it is gone, which
        // is what the caller asked for.
        let key = self.account_key(account);
        let ephemerals = self.ephemerals_of(account);
        let (response, resent) = self
            .with_failover(|client| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        etcd_revision(expected),
                    )])
                    .and_then([
                        TxnOp::delete(key.clone(), None),
                        TxnOp::delete(ephemerals.clone(), Some(DeleteOptions::new().with_prefix())),
                    ])
                    .or_else([TxnOp::get(key.clone(), None)]);
                async move { client.kv_client().txn(txn).await }
            })
            .await?;
        Ok(response.succeeded() || (resent && first_get_value(&response).is_none()))
    }

    async fn put_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        item: Ephemeral,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        // Both steps may be sent twice: a second lease is left to expire, a
        // second put writes the same value.
        let ttl_ms = item.expires_at_ms.saturating_sub(now_ms);
        let ttl = i64::try_from(ttl_ms.div_ceil(1000))
            .unwrap_or(i64::MAX / 2)
            .saturating_add(LEASE_SLACK_SECS);
        let (lease, _) = self
            .with_failover(|client| async move { client.lease_client().grant(ttl, None).await })
            .await?;
        let key = self.ephemeral_key(kind, id, &item.account);
        let value = [
            item.mac.as_slice(),
            &item.expires_at_ms.to_be_bytes(),
            &item.payload,
        ]
        .concat();
        self.with_failover(|client| {
            let (key, value) = (key.clone(), value.clone());
            let options = PutOptions::new().with_lease(lease.id());
            async move { client.kv_client().put(key, value, Some(options)).await }
        })
        .await?;
        Ok(())
    }

    async fn take_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &str,
    ) -> Result<Option<Ephemeral>, StoreError> {
        // Sent again after a lost answer, the take finds nothing: the item
        // was taken once (the login it belonged to must start over).
        let key = self.ephemeral_key(kind, id, account);
        let (mut response, _) = self
            .with_failover(|client| {
                let key = key.clone();
                let options = DeleteOptions::new().with_prev_key();
                async move { client.kv_client().delete(key, Some(options)).await }
            })
            .await?;
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

fn first_get_value(response: &TxnResponse) -> Option<Vec<u8>> {
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

    fn row(body: &[u8]) -> StoredRow {
        StoredRow {
            body: body.to_vec(),
            mac: [7; 32],
        }
    }

    #[tokio::test]
    async fn a_row_write_sent_again_after_its_answer_was_lost_applies_once() {
        let etcd = start_etcd().await;
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/e2eb/test")
            .await
            .unwrap();
        let (first, resent, other) = ([1; WRITE_ID_LEN], [2; WRITE_ID_LEN], [3; WRITE_ID_LEN]);
        assert!(
            store
                .put_row_as("alice", &row(b"v1"), None, first)
                .await
                .unwrap()
        );
        // The same write again (its answer was lost): it applied, once.
        assert!(
            store
                .put_row_as("alice", &row(b"v1"), None, first)
                .await
                .unwrap()
        );
        // Another writer's create finds the row there.
        assert!(
            !store
                .put_row_as("alice", &row(b"x"), None, other)
                .await
                .unwrap()
        );
        let (_, revision) = store.get_row("alice").await.unwrap().unwrap();

        assert!(
            store
                .put_row_as("alice", &row(b"v2"), Some(revision), resent)
                .await
                .unwrap()
        );
        let (stored, after) = store.get_row("alice").await.unwrap().unwrap();
        assert!(
            store
                .put_row_as("alice", &row(b"v2"), Some(revision), resent)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_row("alice").await.unwrap().unwrap(),
            (stored, after)
        );
        // A write that lost the race to it is told so, and changes nothing.
        assert!(
            !store
                .put_row_as("alice", &row(b"x"), Some(revision), other)
                .await
                .unwrap()
        );
        assert_eq!(store.get_row("alice").await.unwrap().unwrap().0.body, b"v2");
    }

    #[tokio::test]
    async fn a_member_that_is_down_is_passed_over() {
        let etcd = start_etcd().await;
        let down = format!("http://127.0.0.1:{}", free_port());
        let store = EtcdStore::connect(&[down, etcd.endpoint.clone()], "/e2eb/test")
            .await
            .unwrap();
        suite::run(&store).await;
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
