//! Test support: an in-process vault on 127.0.0.1:0 with a manual clock,
//! serving TLS with development certificates and verifying tokens from a
//! test account authority, and a raw device-side client (opaque-ke's
//! `ClientRegistration` / `ClientLogin` with the fast Argon2 preset, Ed25519
//! proofs of the backup key) that talks to it over gRPC through the
//! workspace's shared client pieces (`rpc::endpoint`,
//! `account_token::BearerToken`) and can also send malformed messages.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use account_token::{AccountId, Audience, Authority, BearerToken};
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use e2eb_proto::vault::v2 as pb;
use e2eb_proto::vault::v2::key_vault_client::KeyVaultClient;
use ed25519_dalek::Signer;
use hkdf::Hkdf;
use key_vault::clock::ManualClock;
use key_vault::config::{Config, Policy};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use vault_suite::opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
};
use vault_suite::proof::{ProofOperation, proof_message};
use vault_suite::{Suite, blob};

/// How a test proves it may change a record.
#[derive(Clone)]
pub enum Auth {
    /// A login ticket (proof of the password).
    Ticket(Vec<u8>),
    /// A signature with the backup auth key whose seed is derived from
    /// these bytes (the tests' stand-in for `K`).
    Key(Vec<u8>),
}

/// The backup auth key the tests derive from a key stand-in.
pub fn auth_key(key: &[u8]) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&Sha256::digest(key).into())
}

/// The account authority's key file of the test stack in `dir` (its
/// public half lands beside it as `token.pub`).
pub fn authority_key_file(dir: &Path) -> PathBuf {
    dir.join("authority/token.key")
}

/// Where the development certificates of the test stack in `dir` live.
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

/// The test stack's account authority (created on first use).
pub fn authority(dir: &Path) -> Authority {
    Authority::load_or_create(&authority_key_file(dir)).expect("the test authority key")
}

/// A vault token for `account` from the test stack's authority.
pub fn token_in(dir: &Path, account: &str) -> String {
    authority(dir)
        .mint(
            &AccountId::new(account).unwrap(),
            Audience::KeyVault,
            std::time::Duration::from_secs(600),
        )
        .unwrap()
        .expose_secret()
        .to_string()
}

/// Makes the authority key and the dev certificates the vault in `dir` uses.
pub fn prepare(dir: &Path) {
    authority(dir);
    rpc::dev_certs::ensure(&tls_dir(dir), &[key_vault::SERVICE]).expect("dev certificates");
}

/// What a client of the vault in `dir` trusts.
pub fn trust(dir: &Path) -> rpc::Trust {
    rpc::Trust::from_ca_file(&rpc::dev_certs::ca_path(&tls_dir(dir))).expect("the dev CA")
}

/// Files of one vault: database, sealing key, the authority's public key,
/// TLS certificate and key.
pub fn config(dir: &Path, policy: Policy) -> Config {
    use clap::Parser;
    prepare(dir);
    let mut config = Config::try_parse_from(["key-vault"]).expect("defaults parse");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.db = dir.join("vault/vault.db");
    config.sealing_key_file = dir.join("vault-sealing.key");
    config.tokens.token_public_key_file = account_token::public_key_file(&authority_key_file(dir));
    config.tls = rpc::ServerTls::from_dev_certs(&tls_dir(dir), key_vault::SERVICE);
    config.policy = policy;
    config
}

pub fn policy(max_guesses: u32) -> Policy {
    Policy {
        max_guesses,
        ..Policy::default()
    }
}

/// A vault served in-process until stopped.
pub struct TestVault {
    pub addr: SocketAddr,
    /// `https`, or `http` when served with `--insecure-plaintext`.
    pub scheme: &'static str,
    pub dir: PathBuf,
    pub clock: ManualClock,
    pub fingerprint: String,
    policy: Policy,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestVault {
    pub async fn start(dir: &Path, policy: Policy) -> anyhow::Result<Self> {
        Self::start_with_clock(dir, policy, ManualClock::new()).await
    }

    pub async fn start_with_clock(
        dir: &Path,
        policy: Policy,
        clock: ManualClock,
    ) -> anyhow::Result<Self> {
        Self::start_with_config(dir, config(dir, policy), clock).await
    }

    /// Serves `config` (made by [`config`] and then changed: another store,
    /// plaintext) with the files of `dir`.
    pub async fn start_with_config(
        dir: &Path,
        config: Config,
        clock: ManualClock,
    ) -> anyhow::Result<Self> {
        let policy = config.policy.clone();
        let scheme = if config.tls.insecure_plaintext {
            "http"
        } else {
            "https"
        };
        let opened = key_vault::open(&config, Arc::new(clock.clone())).await?;
        let fingerprint = opened.fingerprint();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(key_vault::serve(opened, listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            scheme,
            dir: dir.to_path_buf(),
            clock,
            fingerprint,
            policy,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops the server and waits until it has let go of its port.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Starts again on the same files (and the same clock).
    pub async fn restart(self) -> Self {
        let (dir, policy, clock) = (self.dir.clone(), self.policy.clone(), self.clock.clone());
        self.stop().await;
        Self::start_with_clock(&dir, policy, clock)
            .await
            .expect("restart")
    }

    pub fn token(&self, account: &str) -> String {
        token_in(&self.dir, account)
    }

    pub async fn client(&self, account: &str) -> VaultClient {
        let url = format!("{}://{}", self.scheme, self.addr);
        let trust = match self.scheme {
            "http" => rpc::Trust::insecure_plaintext_only(),
            _ => trust(&self.dir),
        };
        VaultClient::connect_url(&url, &trust, account, self.token(account)).await
    }
}

/// What a device keeps from a registration.
#[derive(Clone)]
pub struct Registration {
    pub export_key: Vec<u8>,
    pub sealed_key: Vec<u8>,
    pub server_public_key: Vec<u8>,
}

/// A successful login as the device sees it.
pub struct LoggedIn {
    pub sealed_key: Vec<u8>,
    pub export_key: Vec<u8>,
    pub ticket: Vec<u8>,
    pub server_public_key: Vec<u8>,
}

pub enum LoginResult {
    Success(LoggedIn),
    Wrong { remaining: u32, erased: bool },
}

impl LoginResult {
    pub fn success(self) -> LoggedIn {
        match self {
            Self::Success(logged_in) => logged_in,
            Self::Wrong { remaining, erased } => {
                panic!("login failed: {remaining} left, erased {erased}")
            }
        }
    }
    pub fn wrong(&self) -> (u32, bool) {
        match self {
            Self::Success(_) => panic!("login unexpectedly succeeded"),
            Self::Wrong { remaining, erased } => (*remaining, *erased),
        }
    }
}

/// A login between its two RPCs.
pub struct Pending {
    pub state: ClientLogin<Suite>,
    pub session_id: Vec<u8>,
    pub credential_response: Vec<u8>,
    pub guesses_remaining: u32,
}

pub struct VaultClient {
    pub grpc: KeyVaultClient<InterceptedService<Channel, BearerToken>>,
    pub account: String,
    channel: Channel,
}

impl VaultClient {
    /// Connects over TLS (the vault's certificate names 127.0.0.1) and
    /// sends `token` on every call.
    pub async fn connect(
        addr: SocketAddr,
        trust: &rpc::Trust,
        account: &str,
        token: String,
    ) -> Self {
        Self::connect_url(&format!("https://{addr}"), trust, account, token).await
    }

    /// Connects to `url` (`http://` only with a plaintext trust).
    pub async fn connect_url(url: &str, trust: &rpc::Trust, account: &str, token: String) -> Self {
        let channel = rpc::endpoint(url, trust, &rpc::ChannelOptions::default())
            .expect("a valid endpoint")
            .connect()
            .await
            .expect("connect");
        Self {
            grpc: KeyVaultClient::with_interceptor(channel.clone(), BearerToken::new(token)),
            account: account.into(),
            channel,
        }
    }

    /// The same connection, sending another token.
    pub fn with_token(&self, token: String) -> Self {
        Self {
            grpc: KeyVaultClient::with_interceptor(self.channel.clone(), BearerToken::new(token)),
            account: self.account.clone(),
            channel: self.channel.clone(),
        }
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        Request::new(message)
    }

    pub async fn info(&mut self) -> Result<pb::GetVaultInfoResponse, Status> {
        let request = self.request(pb::GetVaultInfoRequest {});
        Ok(self.grpc.get_vault_info(request).await?.into_inner())
    }

    /// A signature for `operation` with the auth key of `key`, over a
    /// fresh challenge.
    pub async fn sign(
        &mut self,
        key: &[u8],
        operation: ProofOperation<'_>,
    ) -> Result<pb::KeySignature, Status> {
        let request = self.request(pb::GetChallengeRequest {});
        let challenge = self
            .grpc
            .get_challenge(request)
            .await?
            .into_inner()
            .challenge;
        let fixed: [u8; 32] = challenge.as_slice().try_into().expect("32-byte challenge");
        let message = proof_message(&self.account, &fixed, &operation);
        Ok(pb::KeySignature {
            challenge,
            signature: auth_key(key).sign(&message).to_bytes().to_vec(),
        })
    }

    async fn authorization(
        &mut self,
        auth: Option<Auth>,
        operation: ProofOperation<'_>,
    ) -> Result<Option<pb::Authorization>, Status> {
        let proof = match auth {
            None => return Ok(None),
            Some(Auth::Ticket(ticket)) => pb::authorization::Proof::LoginTicket(ticket),
            Some(Auth::Key(key)) => {
                pb::authorization::Proof::KeySignature(self.sign(&key, operation).await?)
            }
        };
        Ok(Some(pb::Authorization { proof: Some(proof) }))
    }

    /// Full registration: seals `backup_key` under the export key and
    /// registers the auth key of `key` (the stand-in for `K`).
    pub async fn register(
        &mut self,
        password: &[u8],
        backup_key: &[u8; 32],
        key: &[u8],
        authorization: Option<Auth>,
    ) -> Result<Registration, Status> {
        let start = ClientRegistration::<Suite>::start(&mut OsRng, password).unwrap();
        let request = self.request(pb::RegisterStartRequest {
            registration_request: start.message.serialize().to_vec(),
        });
        let started = self.grpc.register_start(request).await?.into_inner();
        let ksf = vault_suite::argon2_insecure_fast_for_tests();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                password,
                RegistrationResponse::deserialize(&started.registration_response).unwrap(),
                ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
            )
            .unwrap();
        let sealed_key = seal_backup_key(&finish.export_key, &self.account, backup_key);
        let auth_public_key = auth_key(key).verifying_key().to_bytes();
        let registration_id: [u8; 16] = started.registration_id.as_slice().try_into().unwrap();
        let operation = ProofOperation::Register {
            registration_id: &registration_id,
            auth_public_key: &auth_public_key,
        };
        let authorization = self.authorization(authorization, operation).await?;
        let request = self.request(pb::RegisterFinishRequest {
            registration_upload: finish.message.serialize().to_vec(),
            sealed_key: sealed_key.clone(),
            auth_public_key: auth_public_key.to_vec(),
            authorization,
            registration_id: started.registration_id,
        });
        self.grpc.register_finish(request).await?;
        Ok(Registration {
            export_key: finish.export_key.to_vec(),
            sealed_key,
            server_public_key: finish.server_s_pk.serialize().to_vec(),
        })
    }

    pub async fn login_start(&mut self, password: &[u8]) -> Result<Pending, Status> {
        let start = ClientLogin::<Suite>::start(&mut OsRng, password).unwrap();
        let request = self.request(pb::LoginStartRequest {
            credential_request: start.message.serialize().to_vec(),
        });
        let started = self.grpc.login_start(request).await?.into_inner();
        Ok(Pending {
            state: start.state,
            session_id: started.session_id,
            credential_response: started.credential_response,
            guesses_remaining: started.guesses_remaining,
        })
    }

    /// Finishes as a real device does: a wrong password is found on the
    /// device, which then sends an empty finalization for the verdict.
    pub async fn login_finish(
        &mut self,
        pending: Pending,
        password: &[u8],
    ) -> Result<LoginResult, Status> {
        let ksf = vault_suite::argon2_insecure_fast_for_tests();
        let finished = pending.state.finish(
            &mut OsRng,
            password,
            CredentialResponse::deserialize(&pending.credential_response).unwrap(),
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        );
        let (finalization, keys) = match finished {
            Ok(done) => (
                done.message.serialize().to_vec(),
                Some((
                    done.session_key.to_vec(),
                    done.export_key.to_vec(),
                    done.server_s_pk.serialize().to_vec(),
                )),
            ),
            Err(_) => (Vec::new(), None),
        };
        let response = self.finish_raw(&pending.session_id, finalization).await?;
        match (response.outcome.expect("an outcome"), keys) {
            (
                pb::login_finish_response::Outcome::Success(success),
                Some((session_key, export_key, server_public_key)),
            ) => {
                let sealed_key = vault_suite::open_login_response(
                    &session_key,
                    &self.account,
                    &success.encrypted_sealed_key,
                )
                .expect("the login response opens under the session key");
                Ok(LoginResult::Success(LoggedIn {
                    sealed_key,
                    export_key,
                    ticket: success.login_ticket,
                    server_public_key,
                }))
            }
            (pb::login_finish_response::Outcome::WrongPassword(wrong), _) => {
                Ok(LoginResult::Wrong {
                    remaining: wrong.guesses_remaining,
                    erased: wrong.key_erased,
                })
            }
            (pb::login_finish_response::Outcome::Success(_), None) => {
                panic!("the vault accepted a login the client could not finish")
            }
        }
    }

    pub async fn finish_raw(
        &mut self,
        session_id: &[u8],
        finalization: Vec<u8>,
    ) -> Result<pb::LoginFinishResponse, Status> {
        let request = self.request(pb::LoginFinishRequest {
            session_id: session_id.to_vec(),
            credential_finalization: finalization,
        });
        Ok(self.grpc.login_finish(request).await?.into_inner())
    }

    pub async fn login(&mut self, password: &[u8]) -> Result<LoginResult, Status> {
        let pending = self.login_start(password).await?;
        self.login_finish(pending, password).await
    }

    pub async fn delete(
        &mut self,
        authorization: Option<Auth>,
        start_over: bool,
    ) -> Result<(), Status> {
        let authorization = self
            .authorization(authorization, ProofOperation::Delete)
            .await?;
        let request = self.request(pb::DeleteRecordRequest {
            authorization,
            start_over,
        });
        self.grpc.delete_record(request).await.map(|_| ())
    }
}

/// The device's sealing of `K`: AES-256-GCM under HKDF(export key), with the
/// account id as associated data. The vault never holds the export key.
pub fn seal_backup_key(export_key: &[u8], account: &str, backup_key: &[u8; 32]) -> Vec<u8> {
    blob::seal(
        &backup_key_cipher(export_key),
        account.as_bytes(),
        backup_key,
    )
}

pub fn open_backup_key(export_key: &[u8], account: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    blob::open(&backup_key_cipher(export_key), account.as_bytes(), sealed)
        .ok()
        .map(|plain| plain.to_vec())
}

fn backup_key_cipher(export_key: &[u8]) -> Aes256Gcm {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(None, export_key)
        .expand(b"test/backup-key-seal", &mut key)
        .unwrap();
    Aes256Gcm::new_from_slice(&key).unwrap()
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    key
}

/// Asserts the status is FAILED_PRECONDITION with `e2eb-reason: reason`.
pub fn assert_reason<T>(result: Result<T, Status>, reason: &str) {
    let Err(status) = result else {
        panic!("expected FAILED_PRECONDITION {reason}, got success")
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("e2eb-reason")
            .map(|v| v.to_str().unwrap()),
        Some(reason),
        "{status:?}"
    );
}

pub fn assert_code<T>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(_) => panic!("expected {code:?}, got success"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}
