//! Record storage: the vault's only outside world besides the sealing key.
//! One small async trait, [`RecordStore`], so the embedded SQLite store
//! ([`sqlite::SqliteStore`]) can be joined by a PostgreSQL one for several
//! replicas. Every method is one transaction that is durable when it returns;
//! the guess counter in particular is one atomic conditional update.
//!
//! The store keeps bytes it cannot use: OPAQUE records (useless without the
//! sealed OPRF seed), sealed key blobs (encrypted by the client), login state
//! sealed by the vault, and only hashes of login tickets.

pub mod sqlite;

use async_trait::async_trait;

/// Random 16 bytes the vault draws for every stored registration; login
/// sessions and tickets are bound to it, so they die with the registration.
pub type Version = [u8; 16];

/// One account's registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub version: Version,
    /// Names the registration's OPRF key (with the account id).
    pub registration_id: [u8; 16],
    /// opaque-ke's serialized `ServerRegistration` (the password file).
    pub opaque_record: Vec<u8>,
    /// The client's sealed backup key; the vault cannot open it.
    pub sealed_key: Vec<u8>,
    /// SHA-256 of the client's key proof.
    pub key_proof_verifier: [u8; 32],
    /// Logins started since the last successful one.
    pub guesses: u32,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("version", &hex::encode(self.version))
            .field("guesses", &self.guesses)
            .finish_non_exhaustive()
    }
}

/// What the store holds for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordState {
    Active(Record),
    /// Erased after too many guesses: only a start-over clears it.
    Erased,
}

/// The outcome of counting a guess at login start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuessCount {
    /// The guess is durably counted; `guesses` includes it.
    Counted {
        guesses: u32,
        record: Record,
    },
    /// The limit had been reached: the record was erased by this call.
    ErasedNow,
    /// The record had already been erased.
    Erased,
    NotFound,
}

/// The outcome of a login whose client MAC was wrong (or never sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The record stays; this many guesses are left.
    Remaining(u32),
    /// That was the last guess: the record was erased by this call.
    ErasedNow,
    /// The record had already been erased.
    Erased,
    NotFound,
}

/// The outcome of a successful login for the record it started against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    /// The count is back to zero; here is the sealed key.
    Reset {
        sealed_key: Vec<u8>,
    },
    Erased,
    /// The record was replaced or deleted since the login started.
    Changed,
}

/// Server login state kept between LoginStart and LoginFinish.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub account: String,
    pub version: Version,
    /// opaque-ke's `ServerLogin`, sealed under the vault's state key.
    pub sealed_state: Vec<u8>,
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.account)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A login ticket, stored under the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub account: String,
    pub version: Version,
    pub expires_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the vault database is busy; retry later")]
    Busy,
    #[error("the vault database failed: {0}")]
    Database(String),
    #[error("the vault database holds a malformed {0}")]
    Corrupt(&'static str),
}

impl StoreError {
    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy)
    }
}

#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// The sealed vault secrets, if any were stored.
    async fn load_secrets(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `sealed` unless secrets exist already; returns what is stored
    /// (ours, or those of a vault that started at the same moment).
    async fn store_secrets_once(&self, sealed: Vec<u8>) -> Result<Vec<u8>, StoreError>;

    async fn get_record(&self, account: &str) -> Result<Option<RecordState>, StoreError>;
    /// Creates the record if the account has no row at all; false otherwise.
    async fn create_record(
        &self,
        account: &str,
        record: Record,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Replaces the active record if its version is still `expected`
    /// (guesses reset); false if it changed, was erased or deleted.
    async fn replace_record(
        &self,
        account: &str,
        expected: Version,
        record: Record,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Counts a login guess: one atomic update that increments the count
    /// only while it is below `max_guesses`; at the limit, erases the record.
    async fn count_guess(
        &self,
        account: &str,
        max_guesses: u32,
        now_ms: u64,
    ) -> Result<GuessCount, StoreError>;
    /// A successful login against record `version`: the count goes to zero
    /// and, in the same transaction, `ticket` is stored under `ticket_hash`.
    async fn reset_guesses(
        &self,
        account: &str,
        version: Version,
        ticket_hash: [u8; 32],
        ticket: Ticket,
        now_ms: u64,
    ) -> Result<Reset, StoreError>;
    /// A failed login: reports the guesses left and erases the record if
    /// none are.
    async fn record_failure(
        &self,
        account: &str,
        max_guesses: u32,
        now_ms: u64,
    ) -> Result<Failure, StoreError>;
    /// Removes the account's row (record or tombstone), its sessions and
    /// tickets. With `expected`, only if the active record has that version.
    async fn delete(&self, account: &str, expected: Option<Version>) -> Result<bool, StoreError>;

    /// Keeps a login session; drops expired sessions and tickets on the way.
    async fn put_session(
        &self,
        id: [u8; 16],
        session: Session,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Removes and returns the session `id` if it belongs to `account`.
    async fn take_session(
        &self,
        id: [u8; 16],
        account: &str,
    ) -> Result<Option<Session>, StoreError>;
    async fn put_ticket(&self, hash: [u8; 32], ticket: Ticket) -> Result<(), StoreError>;
    /// Removes and returns the ticket whose SHA-256 is `hash` if it belongs to `account`.
    async fn take_ticket(
        &self,
        hash: [u8; 32],
        account: &str,
    ) -> Result<Option<Ticket>, StoreError>;
}
