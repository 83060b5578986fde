//! The stack in containers, from our own images (`make images`), on a
//! private Docker network of its own: local S3, etcd x3, key vault x3 on
//! the etcd store, and one blob gateway (the gateways' multi-replica commit
//! is not merged yet). Every container is named `<prefix>-<role>`, and the
//! dev certificates name those hosts. The test process reaches the services
//! through their published ports on 127.0.0.1 (the certificates name it).
//! Dropping the stack removes every container and then the network.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use account_token::{AccountId, Audience, Authority, BearerToken};
use backup_client::GatewayClient;
use backup_client::vault::{KsfStrength, VaultClient};
use testcontainers::core::{AccessMode, ContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub const VAULT_PORT: u16 = 50062;
pub const GATEWAY_PORT: u16 = 50061;
pub const S3_PORT: u16 = 9000;
/// The vault's guess limit in these tests.
pub const MAX_GUESSES: u32 = 5;
const TAG: &str = "local";
/// The uid our images run as.
const APP_UID: u32 = 10001;
const STARTUP: Duration = Duration::from_secs(90);

pub struct ContainerStack {
    dir: tempfile::TempDir,
    pub network: String,
    pub authority: Authority,
    pub trust: rpc::Trust,
    pub fingerprint: String,
    pub s3: ContainerAsync<GenericImage>,
    pub etcd: Vec<ContainerAsync<GenericImage>>,
    pub vaults: Vec<ContainerAsync<GenericImage>>,
    pub gateway: ContainerAsync<GenericImage>,
}

fn image(name: &str) -> GenericImage {
    GenericImage::new(format!("e2eb/{name}"), TAG.to_string())
}

fn ro(host: &Path, container: &str) -> Mount {
    Mount::bind_mount(host.display().to_string(), container).with_access_mode(AccessMode::ReadOnly)
}

impl ContainerStack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_guess_limit(MAX_GUESSES).await
    }

    /// The stack with the vault's guess limit at `max_guesses`.
    pub async fn start_with_guess_limit(max_guesses: u32) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("e2eb-containers")
            .tempdir()?;
        let prefix = format!("e2eb-{:08x}", rand::random::<u32>());
        let network = format!("{prefix}-net");
        let authority = Authority::load_or_create(&e2e_tests::authority_key_file(dir.path()))?;
        let hosts: Vec<String> = (1..=3)
            .map(|n| format!("{prefix}-key-vault-{n}"))
            .chain([format!("{prefix}-blob-gateway")])
            .collect();
        let tls = dir.path().join("tls");
        let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        rpc::dev_certs::generate(&tls, &names)?;
        let trust = rpc::Trust::from_ca_file(&rpc::dev_certs::ca_path(&tls))?;
        let sealing = dir.path().join("sealing.key");
        std::fs::write(&sealing, hex::encode(rand::random::<[u8; 32]>()))?;
        hand_to_containers(dir.path())?;

        let token_pub = account_token::public_key_file(&e2e_tests::authority_key_file(dir.path()));
        let ca = rpc::dev_certs::ca_path(&tls);
        let service = |role: &str, host: &str| {
            image(role)
                .with_wait_for(WaitFor::healthcheck())
                .with_network(&network)
                .with_container_name(host)
                .with_startup_timeout(STARTUP)
                .with_mount(ro(&ca, "/run/e2eb/tls/ca.pem"))
                .with_mount(ro(&token_pub, "/run/e2eb/authority/token.pub"))
                .with_mount(ro(
                    &rpc::dev_certs::cert_path(&tls, host),
                    &format!("/run/e2eb/tls/{role}.pem"),
                ))
                .with_mount(ro(
                    &rpc::dev_certs::key_path(&tls, host),
                    &format!("/run/e2eb/tls/{role}.key"),
                ))
        };

        let s3 = image("local-s3")
            .with_wait_for(WaitFor::message_on_stdout("local-s3 listening"))
            .with_network(&network)
            .with_container_name(format!("{prefix}-local-s3"))
            .with_startup_timeout(STARTUP)
            .start()
            .await?;

        // The members wait for each other: all three start at once.
        let cluster = (1..=3)
            .map(|n| format!("etcd-{n}=http://{prefix}-etcd-{n}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let etcd = futures::future::try_join_all((1..=3).map(|n| {
            let host = format!("{prefix}-etcd-{n}");
            image("etcd")
                .with_wait_for(WaitFor::healthcheck())
                .with_network(&network)
                .with_container_name(&host)
                .with_startup_timeout(STARTUP)
                .with_env_var("ETCD_NAME", format!("etcd-{n}"))
                .with_env_var("ETCD_INITIAL_CLUSTER", &cluster)
                .with_env_var("ETCD_INITIAL_CLUSTER_STATE", "new")
                .with_env_var("ETCD_INITIAL_CLUSTER_TOKEN", &prefix)
                .with_env_var(
                    "ETCD_INITIAL_ADVERTISE_PEER_URLS",
                    format!("http://{host}:2380"),
                )
                .with_env_var("ETCD_ADVERTISE_CLIENT_URLS", format!("http://{host}:2379"))
                .start()
        }))
        .await?;
        let endpoints = (1..=3)
            .map(|n| format!("http://{prefix}-etcd-{n}:2379"))
            .collect::<Vec<_>>()
            .join(",");

        let vaults = futures::future::try_join_all((1..=3).map(|n| {
            service("key-vault", &format!("{prefix}-key-vault-{n}"))
                .with_mount(ro(&sealing, "/run/e2eb/vault/sealing.key"))
                .with_env_var("KEY_VAULT_STORE", "etcd")
                .with_env_var("KEY_VAULT_ETCD_ENDPOINTS", &endpoints)
                .with_env_var("KEY_VAULT_ETCD_PREFIX", "/e2eb/vault")
                .with_env_var("KEY_VAULT_MAX_GUESSES", max_guesses.to_string())
                .start()
        }))
        .await?;
        let fingerprint = fingerprint_of(&vaults[0]).await?;
        for other in &vaults[1..] {
            anyhow::ensure!(
                fingerprint_of(other).await? == fingerprint,
                "the vault replicas disagree on their key: they do not share etcd"
            );
        }

        let gateway = service("blob-gateway", &format!("{prefix}-blob-gateway"))
            .with_env_var("S3_ENDPOINT", format!("http://{prefix}-local-s3:{S3_PORT}"))
            .start()
            .await?;

        Ok(Self {
            dir,
            network,
            authority,
            trust,
            fingerprint,
            s3,
            etcd,
            vaults,
            gateway,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn authority_key_file(&self) -> PathBuf {
        e2e_tests::authority_key_file(self.dir())
    }

    pub fn ca_file(&self) -> PathBuf {
        rpc::dev_certs::ca_path(&self.dir().join("tls"))
    }

    pub async fn vault_endpoint(&self, replica: usize) -> String {
        endpoint(&self.vaults[replica], VAULT_PORT).await
    }

    pub async fn gateway_endpoint(&self) -> String {
        endpoint(&self.gateway, GATEWAY_PORT).await
    }

    pub fn token(&self, account: &str, audience: Audience) -> BearerToken {
        let account = AccountId::new(account).expect("test account ids are valid");
        let token = self
            .authority
            .mint(&account, audience, Duration::from_secs(3600))
            .expect("the authority mints");
        BearerToken::new(token)
    }

    /// `account`'s client of vault replica `replica` (0-based), pinned.
    pub async fn vault(&self, replica: usize, account: &str) -> VaultClient {
        VaultClient::connect(
            &self.vault_endpoint(replica).await,
            &self.trust,
            self.token(account, Audience::KeyVault),
            account,
            &self.fingerprint,
            KsfStrength::InsecureFastForTests,
        )
        .expect("a valid vault URL")
    }

    pub async fn gateway_client(&self, account: &str) -> GatewayClient {
        GatewayClient::connect(
            &self.gateway_endpoint().await,
            &self.trust,
            self.token(account, Audience::BlobGateway),
        )
        .expect("a valid gateway URL")
    }

    /// How many objects the bucket holds (what the gateway has stored).
    pub async fn s3_object_count(&self) -> usize {
        let port = self
            .s3
            .get_host_port_ipv4(ContainerPort::Tcp(S3_PORT))
            .await
            .expect("the S3 port is published");
        let client = blob_gateway::store::client(&blob_gateway::config::S3Args {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: e2e_tests::BUCKET.into(),
            region: "us-east-1".into(),
            access_key: "e2eb-dev".into(),
            secret_key: "e2eb-dev-secret".into(),
            create_bucket: false,
        });
        let mut pages = client
            .list_objects_v2()
            .bucket(e2e_tests::BUCKET)
            .into_paginator()
            .send();
        let mut count = 0;
        while let Some(page) = pages.next().await {
            count += page.expect("S3 lists the bucket").contents().len();
        }
        count
    }

    /// Starts a stopped container again and waits until its health check
    /// passes (its published port may change: ask for endpoints afterwards).
    pub async fn restart(&self, container: &ContainerAsync<GenericImage>) -> anyhow::Result<()> {
        container.start().await?;
        wait_healthy(container.id()).await
    }
}

/// The published port of `container`'s `port`, as an https URL on loopback.
async fn endpoint(container: &ContainerAsync<GenericImage>, port: u16) -> String {
    let host_port = container
        .get_host_port_ipv4(ContainerPort::Tcp(port))
        .await
        .expect("the port is published");
    format!("https://127.0.0.1:{host_port}")
}

/// What the vault printed as its public key fingerprint.
async fn fingerprint_of(vault: &ContainerAsync<GenericImage>) -> anyhow::Result<String> {
    let stdout = String::from_utf8(vault.stdout_to_vec().await?)?;
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("key-vault public key fingerprint: "))
        .map(|f| f.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("the vault printed no fingerprint: {stdout}"))
}

/// Waits for Docker to report the container healthy.
pub async fn wait_healthy(id: &str) -> anyhow::Result<()> {
    let docker = testcontainers::core::client::docker_client_instance().await?;
    let deadline = Instant::now() + STARTUP;
    loop {
        let state = docker
            .inspect_container(id, None)
            .await?
            .state
            .unwrap_or_default();
        let health = state.health.and_then(|h| h.status);
        if health == Some(testcontainers::bollard::models::HealthStatusEnum::HEALTHY) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "container {id} not healthy after {STARTUP:?}: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The containers run as uid 10001 and mount these files read-only: as
/// root, give them to that uid (keys stay 0600); otherwise make them
/// readable (throwaway test material).
fn hand_to_containers(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let as_root = std::fs::metadata(dir)?.uid() == 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if as_root {
            std::os::unix::fs::chown(&path, Some(APP_UID), Some(APP_UID))?;
        } else {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            let readable = if path.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | readable))?;
        }
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}
