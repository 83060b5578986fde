//! Record storage: the vault's only outside world besides the sealing key.
//! One small async trait, [`RecordStore`], with the embedded SQLite store
//! ([`sqlite::SqliteStore`]) behind it; a consensus store for several
//! replicas implements the same trait.
//!
//! The store knows nothing of what it keeps. An account has one row: bytes
//! the vault encoded and MACed (see `vault::row`), written only by
//! compare-and-swap on the row's revision, so concurrent writers (threads
//! or replicas) can never both spend the same guess. Short-lived items —
//! login sessions, login tickets, challenges — are [`Ephemeral`]s, taken
//! exactly once. Every method is durable when it returns.
//!
//! The store keeps bytes it cannot use: OPAQUE records (useless without the
//! sealed OPRF seed), key blobs sealed by the client, login state sealed by
//! the vault, hashes of login tickets, and MACs it cannot forge.

pub mod etcd;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use async_trait::async_trait;

/// The store's version of a row: changes on every write of it.
pub type Revision = u64;

/// An account's row as stored: the vault's encoding and its MAC.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub body: Vec<u8>,
    pub mac: [u8; 32],
}

impl std::fmt::Debug for StoredRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredRow({} bytes)", self.body.len())
    }
}

/// What kind of short-lived item an [`Ephemeral`] is; ids of different
/// kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EphemeralKind {
    LoginSession,
    LoginTicket,
    Challenge,
}

impl EphemeralKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSession => "login-session",
            Self::LoginTicket => "login-ticket",
            Self::Challenge => "challenge",
        }
    }
}

/// A short-lived item: taken at most once, gone after `expires_at_ms`.
#[derive(Clone, PartialEq, Eq)]
pub struct Ephemeral {
    pub account: String,
    pub payload: Vec<u8>,
    pub expires_at_ms: u64,
    /// The vault's MAC over kind, id, account, payload and expiry.
    pub mac: [u8; 32],
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral")
            .field("account", &self.account)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the vault's record store is busy; retry later")]
    Busy,
    /// A write sent now may still be committed once the majority is back
    /// (Raft keeps the proposal): a login attempted now may count as a guess.
    #[error(
        "the vault's record store cannot reach a majority of its members; retry later (a login \
         attempted now may still count as one guess once the majority is back)"
    )]
    NoQuorum,
    #[error("the vault's record store failed: {0}")]
    Database(String),
    #[error("the vault's record store holds a malformed {0}")]
    Corrupt(&'static str),
}

impl StoreError {
    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy | Self::NoQuorum)
    }
}

#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Names the store in logs and errors (never a secret).
    fn describe(&self) -> String;

    /// The sealed vault secrets, if any were stored.
    async fn load_secrets(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `sealed` unless secrets exist already; returns what is stored
    /// (ours, or those of a replica that started at the same moment).
    async fn store_secrets_once(&self, sealed: Vec<u8>) -> Result<Vec<u8>, StoreError>;

    /// The account's row and its revision.
    async fn get_row(&self, account: &str) -> Result<Option<(StoredRow, Revision)>, StoreError>;
    /// Writes `row` if the account's row is still at revision `expected`
    /// (`None`: only if the account has no row). False when another write
    /// came first; nothing is written then. With `scrub`, the replaced
    /// bytes must not linger in the store's files (an erased key).
    async fn put_row(
        &self,
        account: &str,
        row: StoredRow,
        expected: Option<Revision>,
        scrub: bool,
    ) -> Result<bool, StoreError>;
    /// Deletes the account's row if it is still at revision `expected`,
    /// with its ephemerals, scrubbing the bytes. False when it changed.
    async fn delete_row(&self, account: &str, expected: Revision) -> Result<bool, StoreError>;

    /// Keeps a short-lived item under (`kind`, `id`); drops expired items
    /// on the way (`now_ms`).
    async fn put_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        item: Ephemeral,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Removes and returns the item (`kind`, `id`) if it belongs to
    /// `account`; an item of another account is left alone.
    async fn take_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &str,
    ) -> Result<Option<Ephemeral>, StoreError>;
}
