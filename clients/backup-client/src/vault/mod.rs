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

use e2eb_proto::vault::v2::key_vault_client::KeyVaultClient;
use e2eb_proto::vault::v2::{
    Authorization, GetChallengeRequest, GetVaultInfoRequest, KeySignature, authorization,
};
use ed25519_dalek::Signer;
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

/// A connection to the key vault on behalf of one account, pinned to one
/// vault public key.
#[derive(Clone)]
pub struct VaultClient {
    inner: Inner,
    account: String,
    pinned: String,
    ksf: KsfStrength,
}

impl VaultClient {
    /// Connects lazily over TLS to a server whose certificate `trust`
    /// accepts. `pinned_fingerprint` is the lowercase hex SHA-256 of the
    /// vault's OPAQUE public key that this device trusts.
    pub fn connect(
        endpoint: &str,
        trust: &rpc::Trust,
        token: BearerToken,
        account: &str,
        pinned_fingerprint: &str,
        ksf: KsfStrength,
    ) -> Result<Self, VaultError> {
        let channel =
            rpc::endpoint(endpoint, trust, &rpc::ChannelOptions::default())?.connect_lazy();
        Ok(Self {
            inner: KeyVaultClient::with_interceptor(channel, token),
            account: account.to_string(),
            pinned: pinned_fingerprint.trim().to_ascii_lowercase(),
            ksf,
        })
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
        let info = self
            .inner
            .clone()
            .get_vault_info(GetVaultInfoRequest {})
            .await?
            .into_inner();
        Ok((info.fingerprint, info.max_guesses))
    }

    /// A signature with `key`'s backup auth key for `operation`, over a
    /// challenge fetched for it, after checking the vault against the pin
    /// (a signature is bound to one challenge of one vault, but nothing of
    /// the key's goes to a vault the device does not trust).
    async fn sign(
        &self,
        key: &RootKey,
        operation: ProofOperation<'_>,
    ) -> Result<KeySignature, VaultError> {
        self.verify_vault().await?;
        let challenge = self
            .inner
            .clone()
            .get_challenge(GetChallengeRequest {})
            .await?
            .into_inner()
            .challenge;
        let challenge: [u8; CHALLENGE_LEN] = challenge
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Protocol("the vault's challenge has the wrong size".into()))?;
        let message = proof_message(&self.account, &challenge, &operation);
        Ok(KeySignature {
            challenge: challenge.to_vec(),
            signature: key.auth_key().sign(&message).to_bytes().to_vec(),
        })
    }

    /// `proof` on the wire, for `operation`.
    async fn authorization(
        &self,
        proof: Option<Proof<'_>>,
        operation: ProofOperation<'_>,
    ) -> Result<Option<Authorization>, VaultError> {
        let proof = match proof {
            None => return Ok(None),
            Some(Proof::LoginTicket(ticket)) => {
                authorization::Proof::LoginTicket(ticket.0.to_vec())
            }
            Some(Proof::BackupKey(key)) => {
                authorization::Proof::KeySignature(self.sign(key, operation).await?)
            }
        };
        Ok(Some(Authorization { proof: Some(proof) }))
    }

    /// Checks the key the vault advertises against the pin before any
    /// secret-bearing call, for a clear early error. An impostor could lie
    /// here; the authoritative check is on the key inside the OPAQUE
    /// messages (registration response, login envelope).
    async fn verify_vault(&self) -> Result<(), VaultError> {
        let info = self
            .inner
            .clone()
            .get_vault_info(GetVaultInfoRequest {})
            .await?
            .into_inner();
        self.check_pin(&info.server_public_key)
    }
}
