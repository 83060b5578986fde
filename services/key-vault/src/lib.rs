//! The Backup Key Vault: the HSM stand-in of WhatsApp's end-to-end
//! encrypted backups. Per account it keeps an OPAQUE registration record and
//! a sealed key blob it cannot open, and it limits password guesses: each
//! login start is counted durably before the OPRF is evaluated, a valid
//! login resets the count, and after `max_guesses` failed or abandoned
//! logins the record is erased for good. It never learns the password or
//! the backup key.
//!
//! Layout: [`vault`] is the core that decides; [`store`] holds records
//! (SQLite for one vault, etcd for a fleet of replicas, behind
//! [`store::RecordStore`]); [`sealing`] (a key file or a PKCS#11 token)
//! and [`secrets`] keep the OPAQUE server setup sealed at rest; [`service`] is the gRPC face;
//! [`run`] wires them for the binary, [`open`] + [`serve`] for tests.

pub mod clock;
pub mod config;
pub mod error;
pub mod metrics;
pub mod sealing;
pub mod secrets;
pub mod service;
pub mod store;
pub mod vault;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use account_token::{Audience, Verifier};
use anyhow::Context;
use e2eb_proto::vault::v2::key_vault_server::KeyVaultServer;
use rpc::{MetricsRegistry, RpcServer, ServerOptions, ServerTransport};
use tokio::net::TcpListener;
use tracing::info;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SealingKind, StoreKind};
use crate::metrics::VaultMetrics;
use crate::sealing::pkcs11::{self, KeyCreation};
use crate::sealing::{FileSealingKey, Pkcs11SealingKey, SealingKeySource};
use crate::secrets::VaultSecrets;
use crate::store::RecordStore;
use crate::store::etcd::EtcdStore;
use crate::store::sqlite::SqliteStore;
use crate::vault::Vault;

/// The gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str =
    <KeyVaultServer<service::KeyVaultService> as tonic::server::NamedService>::NAME;

/// The name of this service: its token audience, its certificate's name.
pub const SERVICE: &str = "key-vault";

/// Every vault message is a few hundred bytes; anything larger is refused
/// before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// A vault ready to serve: storage open, secrets unsealed, the token
/// verifier and the TLS material loaded.
pub struct Opened {
    pub vault: Vault,
    pub verifier: Verifier,
    pub transport: ServerTransport,
    /// The vault's counters and, once served, its per-RPC metrics.
    pub metrics: MetricsRegistry,
}

impl Opened {
    /// What clients pin: lowercase hex SHA-256 of the OPAQUE public key.
    pub fn fingerprint(&self) -> String {
        self.vault.info().fingerprint
    }
}

/// Opens the database, the sealing key, the account authority's public key
/// and the TLS material named by `config`, creating the vault secrets on
/// first start. Fails with a clear message if the sealing key does not
/// open existing secrets or TLS is neither configured nor explicitly off.
pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Opened> {
    let verifier = config.tokens.verifier(Audience::KeyVault)?;
    let transport = config.tls.load(SERVICE)?;
    let sealing = open_sealing(config).await?;
    let store = open_store(config).await?;
    let secrets = VaultSecrets::load_or_create(store.as_ref(), sealing.as_ref()).await?;
    info!(
        store = store.describe(),
        sealing = sealing.describe(),
        "vault secrets unsealed"
    );
    let metrics = MetricsRegistry::default();
    let vault = Vault::new(store, Arc::new(secrets), config.policy.clone(), clock)
        .with_metrics(VaultMetrics::registered(&metrics));
    Ok(Opened {
        vault,
        verifier,
        transport,
        metrics,
    })
}

/// The sealing key `config` names. A token is opened on a blocking thread:
/// loading the module and logging in can take a while.
async fn open_sealing(config: &Config) -> anyhow::Result<Box<dyn SealingKeySource>> {
    Ok(match config.sealing {
        SealingKind::File => Box::new(FileSealingKey::load_or_create(&config.sealing_key_file)?),
        SealingKind::Pkcs11 => {
            let settings = config.pkcs11.clone();
            Box::new(tokio::task::spawn_blocking(move || Pkcs11SealingKey::open(&settings)).await??)
        }
    })
}

/// `key-vault pkcs11-init`: creates the sealing key in the token `config`
/// names unless it is there, and says which on stdout.
pub async fn pkcs11_init(config: &Config) -> anyhow::Result<()> {
    let settings = config.pkcs11.clone();
    let created =
        tokio::task::spawn_blocking(move || pkcs11::create_key_if_missing(&settings)).await??;
    let what = match created {
        KeyCreation::Created => "created",
        KeyCreation::AlreadyThere => "already present",
    };
    println!(
        "sealing key {:?} in token {:?}: {what}",
        config.pkcs11.key_label, config.pkcs11.token_label
    );
    Ok(())
}

/// The record store `config` names.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn RecordStore>> {
    Ok(match config.store {
        StoreKind::Sqlite => {
            let db = config.db.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db))
                .await?
                .with_context(|| {
                    format!("cannot open the vault database {}", config.db.display())
                })?;
            Arc::new(store)
        }
        StoreKind::Etcd => {
            let store = EtcdStore::connect(&config.etcd_endpoints, &config.etcd_prefix)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach the etcd cluster at {}",
                        config.etcd_endpoints.join(",")
                    )
                })?;
            Arc::new(store)
        }
    })
}

/// Serves `opened` on `listener` until `shutdown` resolves. Health answers
/// SERVING from the start: [`open`] has loaded the database and secrets.
pub async fn serve(
    opened: Opened,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let vault = KeyVaultServer::new(service::KeyVaultService::new(opened.vault))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let options = ServerOptions {
        file_descriptor_sets: vec![e2eb_proto::FILE_DESCRIPTOR_SET],
        metrics: Some(opened.metrics),
        ..ServerOptions::default()
    };
    RpcServer::new(opened.transport, opened.verifier, options)?
        .add_service(vault)
        .serve(listener, std::future::ready(()), shutdown)
        .await?;
    info!("key-vault stopped");
    Ok(())
}

/// Runs the vault until `shutdown` resolves. Prints
/// `key-vault public key fingerprint: <hex>` on stdout once the secrets are
/// loaded, and writes the fingerprint to `--fingerprint-file` if given;
/// serves metrics at `--metrics-listen` if given.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let opened = open(&config, Arc::new(SystemClock)).await?;
    let fingerprint = opened.fingerprint();
    println!("key-vault public key fingerprint: {fingerprint}");
    if let Some(path) = &config.fingerprint_file {
        write_fingerprint(path, &fingerprint)
            .with_context(|| format!("cannot write the fingerprint file {}", path.display()))?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    config
        .metrics
        .spawn(&opened.metrics)
        .await
        .context("cannot listen for metrics (--metrics-listen)")?;
    serve(opened, listener, shutdown).await
}

/// Writes the fingerprint (and a newline) atomically: readers polling the
/// file never see half of it.
fn write_fingerprint(path: &Path, fingerprint: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{fingerprint}\n"))?;
    std::fs::rename(&tmp, path)
}
