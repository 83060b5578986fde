//! The device's side of the Backup Key Vault: OPAQUE registration and login
//! with `opaque-ke`, the backup key sealed under the OPAQUE export key, the
//! pinned vault key, and errors that tell the user what happened.
//!
//! One module per operation: [`register`] (enable backups with a password
//! or a key, or change the password), [`recover`] (log in and unseal the
//! key), [`delete`] (disable backups, or start over), [`pointer`] (the
//! backup pointer that lets any device detect a rolled-back or substituted
//! backup). Proof of the key is an Ed25519 signature over a fresh vault
//! challenge (`vault_suite::proof`): nothing replayable crosses the wire.

mod delete;
mod pointer;
mod recover;
mod register;
mod secrets;

use std::fmt;
use std::future::Future;

use e2eb_proto::vault::v2::key_vault_client::KeyVaultClient;
use e2eb_proto::vault::v2::{
    Authorization, GetChallengeRequest, GetVaultInfoRequest, KeySignature, authorization,
};
use ed25519_dalek::Signer;
use rpc::retry::{Endpoints, Idempotency};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vault_suite::argon2::Argon2;
use vault_suite::proof::{CHALLENGE_LEN, ProofOperation, proof_message};
use zeroize::Zeroizing;

use crate::gateway::BearerToken;
use crate::key::RootKey;

pub use pointer::{BackupRef, PendingBackup, Pointer};
pub use recover::Recovered;
pub use secrets::{Password, UnsealError};

/// Which Argon2id parameters the device stretches passwords with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsfStrength {
    /// m = 19 MiB, t = 2, p = 1 (see `vault_suite::argon2_production`).
    Production,
    /// Cheap parameters that make tests fast and passwords cheap to crack.
    InsecureFastForTests,
}

impl KsfStrength {
    fn argon2(self) -> Argon2<'static> {
        match self {
            KsfStrength::Production => vault_suite::argon2_production(),
            KsfStrength::InsecureFastForTests => vault_suite::argon2_insecure_fast_for_tests(),
        }
    }
}

/// What went wrong talking to the vault, in terms the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "wrong password; {guesses_remaining} guesses remain before the backup key is erased for good"
    )]
    WrongPassword { guesses_remaining: u32 },
    #[error(
        "the backup key was erased after too many wrong password guesses; this backup can never be restored. Start over to enable new backups"
    )]
    KeyErased,
    #[error("backups are not enabled for this account in the key vault")]
    NotRegistered,
    #[error("this account has no backup password: it uses the 64-digit key")]
    NoPassword,
    #[error(
        "a backup password is already set; prove the current password or the 64-digit key to change it"
    )]
    ProofRequired,
    #[error("the vault refused the proof (wrong key, or a login ticket that expired or was used)")]
    ProofRejected,
    #[error("the backup pointer in the vault moved while this device worked ({0}); start again")]
    PointerStale(String),
    #[error(
        "the key vault's record for this account failed its integrity check (edited outside the \
         vault); the vault refuses to use it. Contact the operator, or start over"
    )]
    RecordTampered,
    #[error(
        "the vault presented public key {presented}, not the pinned {pinned}; refusing to talk to it (possible impostor)"
    )]
    VaultKeyMismatch { pinned: String, presented: String },
    #[error("the login took too long or was interrupted; try again")]
    SessionLost,
    #[error(
        "the login was interrupted after it reached the key vault ({0}): it may have cost one of \
         the account's limited password guesses. Try again only with a password you are sure of"
    )]
    GuessMayBeSpent(String),
    #[error("the key vault is unreachable ({0}); retry later")]
    Unavailable(String),
    #[error("the key vault refused the account token ({0}); get a new token")]
    Unauthenticated(String),
    #[error("the key vault answered something this device cannot use ({0})")]
    Protocol(String),
    #[error("cannot set up the connection to the key vault: {0}")]
    Connect(#[from] rpc::ClientSetupError),
    #[error(
        "the key vault's TLS certificate is not trusted ({0}); check the CA this device trusts (--tls-ca)"
    )]
    UntrustedServer(String),
}

impl VaultError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            VaultError::Unavailable(_) | VaultError::SessionLost | VaultError::PointerStale(_)
        )
    }
}

impl From<Status> for VaultError {
    fn from(status: Status) -> Self {
        let reason = status
            .metadata()
            .get(vault_suite::REASON_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let message = status.message().to_string();
        if let Some(reason) = rpc::client::untrusted_server(&status) {
            return VaultError::UntrustedServer(reason);
        }
        if crate::gateway::is_connection_failure(&status) {
            return VaultError::Unavailable(message);
        }
        match (status.code(), reason.as_str()) {
            (Code::FailedPrecondition, vault_suite::REASON_KEY_ERASED) => VaultError::KeyErased,
            (Code::FailedPrecondition, vault_suite::REASON_PROOF_REQUIRED) => {
                VaultError::ProofRequired
            }
            (Code::FailedPrecondition, vault_suite::REASON_POINTER_STALE) => {
                VaultError::PointerStale(message)
            }
            (Code::FailedPrecondition, _) => VaultError::SessionLost,
            (Code::NotFound, vault_suite::REASON_NO_PASSWORD) => VaultError::NoPassword,
            (Code::NotFound, _) => VaultError::NotRegistered,
            (Code::DataLoss, _) => VaultError::RecordTampered,
            (Code::PermissionDenied, _) => VaultError::ProofRejected,
            (Code::Unauthenticated, _) => VaultError::Unauthenticated(message),
            (Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled, _) => {
                VaultError::Unavailable(message)
            }
            (code, _) => VaultError::Protocol(format!("{code:?}: {message}")),
        }
    }
}

impl From<tonic::transport::Error> for VaultError {
    fn from(error: tonic::transport::Error) -> Self {
        match rpc::client::untrusted_server(&error) {
            Some(reason) => VaultError::UntrustedServer(reason),
            None => VaultError::Unavailable(error.to_string()),
        }
    }
}

/// How the device proves it may change or delete an existing record.
#[derive(Clone, Copy)]
pub enum Proof<'a> {
    /// A ticket from a login that just succeeded (proof of the password).
    LoginTicket(&'a LoginTicket),
    /// A signature with the backup auth key derived from `K`.
    BackupKey(&'a RootKey),
}

/// Single-use proof of a successful login, valid for a few minutes.
pub struct LoginTicket(Zeroizing<Vec<u8>>);

impl fmt::Debug for LoginTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginTicket(<redacted>)")
    }
}

type Inner = KeyVaultClient<InterceptedService<Channel, BearerToken>>;

/// One attempt's outcome: a `Status` the retry loop judges (retry or give
/// up), or an answer that ends the call either way.
type Attempt<T> = Result<Result<T, VaultError>, Status>;

/// A connection to the key vault on behalf of one account, pinned to one
/// vault public key: one or more vault replicas, every call through the
/// shared retry policy ([`rpc::retry`]).
///
/// Which calls are repeated: reads, challenges and RegisterStart (the vault
/// keeps nothing) always; signed calls with a fresh challenge each attempt
/// (the pointer's updates are idempotent); record writes and deletes, with
/// a repeat whose proof the lost first attempt used up settled by proof of
/// the key. LoginStart spends a guess, so it is sent again only when it
/// never reached a vault; otherwise the user gets
/// [`VaultError::GuessMayBeSpent`] and decides.
#[derive(Clone)]
pub struct VaultClient {
    endpoints: Endpoints<Inner>,
    account: String,
    pinned: String,
    ksf: KsfStrength,
    login_observer: Option<LoginObserver>,
}

/// The steps of a login, as an observer sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    /// LoginStart is about to be sent: the vault counts the guess when it
    /// arrives.
    Starting,
    /// LoginStart was answered; LoginFinish (to any replica) comes next.
    Started,
}

type LoginObserver = std::sync::Arc<dyn Fn(LoginStep) + Send + Sync>;

impl VaultClient {
    /// Connects lazily over TLS to a server whose certificate `trust`
    /// accepts. `pinned_fingerprint` is the lowercase hex SHA-256 of the
    /// vault's OPAQUE public key that this device trusts. `endpoints` is
    /// one URL or several (replicas of one vault fleet), comma-separated.
    pub fn connect(
        endpoints: &str,
        trust: &rpc::Trust,
        token: BearerToken,
        account: &str,
        pinned_fingerprint: &str,
        ksf: KsfStrength,
    ) -> Result<Self, VaultError> {
        let urls = rpc::retry::split_urls(endpoints);
        if urls.is_empty() {
            return Err(VaultError::Connect(rpc::ClientSetupError::InvalidUrl {
                url: endpoints.to_string(),
                reason: "no URL in the list".into(),
            }));
        }
        let mut clients = Vec::with_capacity(urls.len());
        for url in urls {
            let channel =
                rpc::endpoint(&url, trust, &rpc::ChannelOptions::default())?.connect_lazy();
            clients.push((
                url,
                KeyVaultClient::with_interceptor(channel, token.clone()),
            ));
        }
        Ok(Self {
            endpoints: Endpoints::new(clients, rpc::retry::Retry::default()),
            account: account.to_string(),
            pinned: pinned_fingerprint.trim().to_ascii_lowercase(),
            ksf,
            login_observer: None,
        })
    }

    /// Calls `observer` at each [`LoginStep`] of [`VaultClient::recover`]
    /// (progress display; fault tests stop a replica between the steps).
    pub fn on_login_step(self, observer: impl Fn(LoginStep) + Send + Sync + 'static) -> Self {
        Self {
            login_observer: Some(std::sync::Arc::new(observer)),
            ..self
        }
    }

    fn observe(&self, step: LoginStep) {
        if let Some(observer) = &self.login_observer {
            observer(step);
        }
    }

    /// This client with another retry policy and counters.
    pub fn with_retry(self, retry: rpc::retry::Retry) -> Self {
        Self {
            endpoints: self.endpoints.with_retry(retry),
            ..self
        }
    }

    /// The retry policy and counters this client uses.
    pub fn retry(&self) -> &rpc::retry::Retry {
        self.endpoints.retry()
    }

    /// A call safe to repeat, retried per the policy.
    async fn call<T, F, Fut>(&self, what: &'static str, attempt: F) -> Result<T, VaultError>
    where
        F: FnMut(Inner) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        self.call_as(what, Idempotency::Idempotent, attempt)
            .await
            .map_err(|failed| failed.error)
    }

    /// A call per the policy; a failure says whether some attempt may have
    /// reached a vault (its answer lost).
    async fn call_as<T, F, Fut>(
        &self,
        what: &'static str,
        idempotency: Idempotency,
        attempt: F,
    ) -> Result<T, Failed>
    where
        F: FnMut(Inner) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        match self.endpoints.call(what, idempotency, attempt).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(Failed {
                error,
                maybe_delivered: false,
            }),
            Err(failed) => Err(Failed {
                error: failed.error.into(),
                maybe_delivered: failed.maybe_delivered,
            }),
        }
    }

    /// Checks a public key the vault presented inside OPAQUE against the pin.
    fn check_pin(&self, server_public_key: &[u8]) -> Result<(), VaultError> {
        let presented = vault_suite::fingerprint(server_public_key);
        if presented == self.pinned {
            Ok(())
        } else {
            Err(VaultError::VaultKeyMismatch {
                pinned: self.pinned.clone(),
                presented,
            })
        }
    }

    /// The vault's advertised fingerprint and guess limit.
    pub async fn info(&self) -> Result<(String, u32), VaultError> {
        self.call("GetVaultInfo", |mut inner| async move {
            let info = inner
                .get_vault_info(GetVaultInfoRequest {})
                .await?
                .into_inner();
            Ok(Ok((info.fingerprint, info.max_guesses)))
        })
        .await
    }

    /// A signature with `key`'s backup auth key for `operation`, over a
    /// challenge fetched from `inner` (the endpoint of this attempt). The
    /// caller has checked the vault against the pin first (a signature is
    /// bound to one challenge of one vault, but nothing of the key's goes
    /// to a vault the device does not trust).
    async fn sign_on(
        &self,
        inner: &mut Inner,
        key: &RootKey,
        operation: ProofOperation<'_>,
    ) -> Attempt<KeySignature> {
        let challenge = inner
            .get_challenge(GetChallengeRequest {})
            .await?
            .into_inner()
            .challenge;
        let Ok(challenge) = <[u8; CHALLENGE_LEN]>::try_from(challenge.as_slice()) else {
            return Ok(Err(VaultError::Protocol(
                "the vault's challenge has the wrong size".into(),
            )));
        };
        let message = proof_message(&self.account, &challenge, &operation);
        Ok(Ok(KeySignature {
            challenge: challenge.to_vec(),
            signature: key.auth_key().sign(&message).to_bytes().to_vec(),
        }))
    }

    /// `proof` on the wire for `operation`, made on `inner`.
    async fn authorization_on(
        &self,
        inner: &mut Inner,
        proof: Option<Proof<'_>>,
        operation: ProofOperation<'_>,
    ) -> Attempt<Option<Authorization>> {
        let proof = match proof {
            None => return Ok(Ok(None)),
            Some(Proof::LoginTicket(ticket)) => {
                authorization::Proof::LoginTicket(ticket.0.to_vec())
            }
            Some(Proof::BackupKey(key)) => match self.sign_on(inner, key, operation).await? {
                Ok(signature) => authorization::Proof::KeySignature(signature),
                Err(error) => return Ok(Err(error)),
            },
        };
        Ok(Ok(Some(Authorization { proof: Some(proof) })))
    }

    /// Checks the key the vault advertises against the pin before any
    /// secret-bearing call, for a clear early error. An impostor could lie
    /// here; the authoritative check is on the key inside the OPAQUE
    /// messages (registration response, login envelope).
    async fn verify_vault(&self) -> Result<(), VaultError> {
        let public_key = self
            .call("GetVaultInfo", |mut inner| async move {
                let info = inner
                    .get_vault_info(GetVaultInfoRequest {})
                    .await?
                    .into_inner();
                Ok(Ok(info.server_public_key))
            })
            .await?;
        self.check_pin(&public_key)
    }
}

/// A call that failed for good.
struct Failed {
    error: VaultError,
    /// Some attempt may have reached a vault and taken effect.
    maybe_delivered: bool,
}

/// Whether `error` is the refusal a repeated write gets when its lost
/// first attempt used up the proof or created the record.
fn proof_used_up(error: &VaultError) -> bool {
    matches!(error, VaultError::ProofRequired | VaultError::ProofRejected)
}
