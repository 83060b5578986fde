//! The end-to-end harness: starts the real binaries (local S3, key vault,
//! blob gateway) on fresh loopback ports in a temporary directory, waits
//! until each is ready (the services by their gRPC health check over TLS),
//! and kills them in reverse order when dropped, also when a test panics.
//!
//! Like `make up`, it plays the account authority (its key under
//! `<dir>/authority/`, the services get only the public key) and makes
//! development certificates (`<dir>/tls/`): the services serve TLS and the
//! clients trust that CA.
//!
//! The binaries are the workspace's own, found next to the test executable
//! (`target/<profile>/`); `make test` builds them first. Each service
//! serves Prometheus metrics on a loopback port of its own ([`scrape`]).

pub mod scrape;

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use account_token::{AccountId, Audience, Authority, BearerToken};
use anyhow::Context;
use backup_client::vault::{KsfStrength, VaultClient};
use backup_client::{GatewayClient, RootKey};

pub const BUCKET: &str = "e2e-backups";
pub const GATEWAY_SERVICE: &str = blob_gateway::SERVICE_NAME;
pub const VAULT_SERVICE: &str = e2eb_proto::vault::v2::key_vault_server::SERVICE_NAME;
/// The vault's guess limit in these tests (the production default is 10).
pub const MAX_GUESSES: u32 = 5;
/// The gateway's per-account quota in these tests.
pub const QUOTA_BYTES: u64 = 2 << 20;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running process and the name it is known by.
struct Process {
    name: &'static str,
    child: Child,
}

pub struct Stack {
    dir: tempfile::TempDir,
    pub s3_port: u16,
    pub gateway_port: u16,
    pub vault_port: u16,
    /// Where the gateway and the vault serve their metrics.
    pub gateway_metrics_port: u16,
    pub vault_metrics_port: u16,
    /// The account authority: the harness mints every token.
    pub authority: Authority,
    /// What clients trust: the CA of this stack's dev certificates.
    pub trust: rpc::Trust,
    /// Extra environment for the next gateway start (e.g. a failpoint).
    pub gateway_env: Vec<(String, String)>,
    /// The etcd member [`Stack::start_etcd`] started: client URL.
    pub etcd_endpoint: Option<String>,
    /// Ports of the vault replicas on etcd, by replica index.
    pub vault_replica_ports: Vec<u16>,
    processes: Vec<Process>,
}

/// Process names of the vault replicas on etcd (see
/// [`Stack::start_vault_replica`]).
pub const VAULT_REPLICAS: [&str; 3] = ["key-vault-1", "key-vault-2", "key-vault-3"];

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A free loopback port outside the kernel's ephemeral range (32768 and
/// up), so outgoing connections cannot take it between the check and the
/// child's bind. nextest runs every test in its own process: each process
/// draws from its own window of 20 ports, chosen by its pid, so parallel
/// tests do not race for the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let window = 20_000 + (std::process::id() % 600) as u16 * 20;
    (0..200)
        .map(|_| window + NEXT.fetch_add(1, Ordering::Relaxed) % 20)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port in this test's window")
}

impl Stack {
    /// Starts local S3 and the blob gateway and waits until both are ready.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let authority = Authority::load_or_create(&authority_key_file(dir.path()))?;
        let tls = dir.path().join("tls");
        rpc::dev_certs::generate(&tls, &[key_vault_name(), blob_gateway::SERVICE])?;
        let trust = rpc::Trust::from_ca_file(&rpc::dev_certs::ca_path(&tls))?;
        let mut stack = Stack {
            dir,
            s3_port: free_port(),
            gateway_port: free_port(),
            vault_port: free_port(),
            gateway_metrics_port: free_port(),
            vault_metrics_port: free_port(),
            authority,
            trust,
            gateway_env: Vec::new(),
            etcd_endpoint: None,
            vault_replica_ports: Vec::new(),
            processes: Vec::new(),
        };
        stack.start_s3().await?;
        stack.start_vault().await?;
        stack.start_gateway().await?;
        Ok(stack)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn s3_data_dir(&self) -> PathBuf {
        self.dir().join("s3")
    }

    /// Where the local S3 server keeps the bucket's objects as files.
    pub fn bucket_dir(&self) -> PathBuf {
        self.s3_data_dir().join(BUCKET)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
    }

    pub fn gateway_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.gateway_port)
    }

    pub fn vault_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.vault_port)
    }

    /// Where this stack's dev certificates live (`ca.pem`, `<service>.pem`).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir().join("tls")
    }

    /// The authority's public key: all the services get.
    pub fn token_public_key_file(&self) -> PathBuf {
        account_token::public_key_file(&authority_key_file(self.dir()))
    }

    /// The environment `device-sim` needs to reach this stack and to play
    /// its account authority.
    pub fn sim_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("KEY_VAULT_ENDPOINT", self.vault_endpoint().into()),
            ("KEY_VAULT_FINGERPRINT", self.vault_fingerprint().into()),
            ("BLOB_GATEWAY_ENDPOINT", self.gateway_endpoint().into()),
            (
                "E2EB_AUTHORITY_KEY_FILE",
                authority_key_file(self.dir()).into(),
            ),
            (
                "E2EB_TLS_CA_FILE",
                rpc::dev_certs::ca_path(&self.tls_dir()).into(),
            ),
            ("DEVICE_SIM_WORK_DIR", self.dir().join("sim").into()),
        ]
    }

    pub fn vault_db(&self) -> PathBuf {
        self.dir().join("vault/vault.db")
    }

    /// The fingerprint the vault wrote at start: what clients pin.
    pub fn vault_fingerprint(&self) -> String {
        std::fs::read_to_string(self.dir().join("vault/fingerprint"))
            .expect("the vault wrote its fingerprint")
            .trim()
            .to_string()
    }

    /// A vault client for `account`, pinned to this stack's vault, with the
    /// cheap test KSF.
    pub fn vault(&self, account: &str) -> VaultClient {
        self.vault_pinned(account, &self.vault_fingerprint())
    }

    /// `account`'s vault client after enabling backups with the 64-digit
    /// `key`: the record that holds the key's auth key and the pointer.
    pub async fn enable_key_backup(&self, account: &str, key: &RootKey) -> VaultClient {
        let vault = self.vault(account);
        vault
            .enable_key_backup(key, None)
            .await
            .expect("enable key backup in the vault");
        vault
    }

    pub fn vault_pinned(&self, account: &str, fingerprint: &str) -> VaultClient {
        VaultClient::connect(
            &self.vault_endpoint(),
            &self.trust,
            self.token(account, Audience::KeyVault),
            account,
            fingerprint,
            KsfStrength::InsecureFastForTests,
        )
        .expect("the vault endpoint is a valid URL")
    }

    pub fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Fresh tokens for `account` at `audience` from this stack's authority.
    pub fn token(&self, account: &str, audience: Audience) -> BearerToken {
        let account = AccountId::new(account).expect("test account ids are valid");
        let token = self
            .authority
            .mint(&account, audience, Duration::from_secs(3600))
            .expect("the authority mints");
        BearerToken::new(token)
    }

    /// A gateway client acting for `account`.
    pub fn client(&self, account: &str) -> GatewayClient {
        self.client_with(self.token(account, Audience::BlobGateway))
    }

    /// A gateway client sending `token`.
    pub fn client_with(&self, token: BearerToken) -> GatewayClient {
        GatewayClient::connect(&self.gateway_endpoint(), &self.trust, token)
            .expect("the gateway endpoint is a valid URL")
    }

    fn spawn(&mut self, name: &'static str, command: &mut Command) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Debug level, so the no-secrets-in-logs test sees everything.
            .env("RUST_LOG", "debug")
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        self.processes.push(Process { name, child });
        Ok(())
    }

    pub async fn start_s3(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(bin("local-s3"));
        command
            .env("LOCAL_S3_LISTEN", format!("127.0.0.1:{}", self.s3_port))
            .env("LOCAL_S3_DATA_DIR", self.s3_data_dir());
        self.spawn("local-s3", &mut command)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            self.ensure_running("local-s3")?;
            anyhow::ensure!(Instant::now() < deadline, "local-s3 did not listen in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts the stack's key vault (state under `<dir>/vault`).
    pub async fn start_vault(&mut self) -> anyhow::Result<()> {
        let state = self.dir().join("vault");
        self.start_vault_in(&state).await
    }

    /// Starts a key vault whose database, sealing key and fingerprint file
    /// live in `state`: another directory is another vault identity.
    pub async fn start_vault_in(&mut self, state: &Path) -> anyhow::Result<()> {
        let mut command = Command::new(bin("key-vault"));
        command
            .env("KEY_VAULT_LISTEN", format!("127.0.0.1:{}", self.vault_port))
            .env("KEY_VAULT_DB", state.join("vault.db"))
            .env("KEY_VAULT_SEALING_KEY_FILE", state.join("sealing.key"))
            .env("KEY_VAULT_FINGERPRINT_FILE", state.join("fingerprint"))
            .env("KEY_VAULT_MAX_GUESSES", MAX_GUESSES.to_string())
            .env(
                "METRICS_LISTEN",
                format!("127.0.0.1:{}", self.vault_metrics_port),
            )
            .env("E2EB_TOKEN_PUBLIC_KEY_FILE", self.token_public_key_file())
            .envs(self.tls_env(key_vault_name()));
        self.spawn("key-vault", &mut command)?;
        health_probe::wait_serving(
            &self.vault_endpoint(),
            &self.trust,
            VAULT_SERVICE,
            READY_TIMEOUT,
        )
        .await
        .with_context(|| self.log_tail("key-vault"))
    }

    pub async fn start_gateway(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(bin("blob-gateway"));
        command
            .env(
                "BLOB_GATEWAY_LISTEN",
                format!("127.0.0.1:{}", self.gateway_port),
            )
            .env("S3_ENDPOINT", self.s3_endpoint())
            .env(
                "METRICS_LISTEN",
                format!("127.0.0.1:{}", self.gateway_metrics_port),
            )
            .env("E2EB_TOKEN_PUBLIC_KEY_FILE", self.token_public_key_file())
            .envs(self.tls_env(blob_gateway::SERVICE))
            // Small limits so the tests can reach them.
            .env("BLOB_GATEWAY_MAX_CHUNK_BYTES", (2 << 20).to_string())
            .env("BLOB_GATEWAY_MAX_MESSAGE_BYTES", (2 << 20).to_string())
            .env("BLOB_GATEWAY_QUOTA_BYTES", QUOTA_BYTES.to_string())
            .envs(
                self.gateway_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
        self.spawn("blob-gateway", &mut command)?;
        health_probe::wait_serving(
            &self.gateway_endpoint(),
            &self.trust,
            GATEWAY_SERVICE,
            READY_TIMEOUT,
        )
        .await
        .with_context(|| self.log_tail("blob-gateway"))
    }

    /// Starts a one-member etcd cluster (Debian's `etcd-server`; `make
    /// deps` installs it) with its data under `<dir>/etcd`, and waits until
    /// it reports itself healthy. Returns its client URL.
    pub async fn start_etcd(&mut self) -> anyhow::Result<String> {
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new("etcd");
        command
            .args(["--name", "e2e", "--data-dir"])
            .arg(self.dir().join("etcd"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e2e={peer_url}")]);
        self.spawn("etcd", &mut command)
            .context("etcd is installed (Debian's etcd-server; run `make deps`)")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !etcd_healthy(client) {
            self.ensure_running("etcd")?;
            anyhow::ensure!(Instant::now() < deadline, "etcd was not healthy in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.etcd_endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Where the vault replicas' shared sealing key and fingerprint live.
    pub fn vault_fleet_dir(&self) -> PathBuf {
        self.dir().join("vault-fleet")
    }

    /// The fingerprint of the replicas' one fleet identity.
    pub fn vault_fleet_fingerprint(&self) -> String {
        std::fs::read_to_string(self.vault_fleet_dir().join("fingerprint"))
            .expect("the first replica wrote its fingerprint")
            .trim()
            .to_string()
    }

    /// Starts vault replica `index` (0..3, named [`VAULT_REPLICAS`]) on the
    /// etcd store of [`Stack::start_etcd`], with the fleet's one sealing
    /// key file: the first replica to start creates the vault secrets in
    /// etcd, the others unseal them. Keeps its port across restarts.
    pub async fn start_vault_replica(&mut self, index: usize) -> anyhow::Result<()> {
        let etcd = self
            .etcd_endpoint
            .clone()
            .context("start etcd before the vault replicas")?;
        while self.vault_replica_ports.len() <= index {
            self.vault_replica_ports.push(free_port());
        }
        let port = self.vault_replica_ports[index];
        let fleet = self.vault_fleet_dir();
        std::fs::create_dir_all(&fleet)?;
        let mut command = Command::new(bin("key-vault"));
        command
            .env("KEY_VAULT_LISTEN", format!("127.0.0.1:{port}"))
            .env("KEY_VAULT_STORE", "etcd")
            .env("KEY_VAULT_ETCD_ENDPOINTS", &etcd)
            .env("KEY_VAULT_SEALING_KEY_FILE", fleet.join("sealing.key"))
            .env("KEY_VAULT_FINGERPRINT_FILE", fleet.join("fingerprint"))
            .env("KEY_VAULT_MAX_GUESSES", MAX_GUESSES.to_string())
            .env("E2EB_TOKEN_PUBLIC_KEY_FILE", self.token_public_key_file())
            .envs(self.tls_env(key_vault_name()));
        let name = VAULT_REPLICAS[index];
        self.spawn(name, &mut command)?;
        let endpoint = format!("https://127.0.0.1:{port}");
        health_probe::wait_serving(&endpoint, &self.trust, VAULT_SERVICE, READY_TIMEOUT)
            .await
            .with_context(|| self.log_tail(name))
    }

    /// Every vault replica's URL, comma-separated, as clients take them.
    pub fn vault_replica_endpoints(&self) -> String {
        self.vault_replica_ports
            .iter()
            .map(|port| format!("https://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process id of `name`, while the harness runs it.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// The certificate and key `service` serves (overridable by a test's
    /// own environment after this).
    fn tls_env(&self, service: &str) -> [(&'static str, PathBuf); 2] {
        [
            (
                "TLS_CERT_FILE",
                rpc::dev_certs::cert_path(&self.tls_dir(), service),
            ),
            (
                "TLS_KEY_FILE",
                rpc::dev_certs::key_path(&self.tls_dir(), service),
            ),
        ]
    }

    fn ensure_running(&mut self, name: &str) -> anyhow::Result<()> {
        let process = self
            .processes
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("{name} was never started"))?;
        if let Some(status) = process.child.try_wait()? {
            anyhow::bail!("{name} exited with {status}: {}", self.log_tail(name));
        }
        Ok(())
    }

    /// Kills one process (SIGKILL) and waits for it to go.
    pub fn kill(&mut self, name: &str) {
        if let Some(index) = self.processes.iter().position(|p| p.name == name) {
            let mut process = self.processes.remove(index);
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }

    pub fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The keys the bucket holds under `prefix`, as S3 lists them.
    pub async fn list_bucket(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let client = blob_gateway::store::client(&blob_gateway::config::S3Args {
            endpoint: self.s3_endpoint(),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            access_key: "e2eb-dev".into(),
            secret_key: "e2eb-dev-secret".into(),
            create_bucket: false,
        });
        let mut pages = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            keys.extend(
                page?
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    /// Every regular file under the local S3 data directory.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![self.s3_data_dir()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// Whether the etcd member on `port` answers its health check (HTTP/1.1
/// `GET /health` on the client port: `{"health":"true",…}`).
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("\"health\":\"true\"")
}

/// The account authority's secret key file of the stack in `dir`.
pub fn authority_key_file(dir: &Path) -> PathBuf {
    dir.join("authority/token.key")
}

/// The key vault's service name (its certificate's name). The e2e crate
/// does not link the vault; the name is the one `deploy/stack.sh` uses.
fn key_vault_name() -> &'static str {
    "key-vault"
}
