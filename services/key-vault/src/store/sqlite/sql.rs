//! The SQL of the SQLite store: schema, the guess counter, erasure, and the
//! helpers that turn rows into records. Every helper that takes a
//! transaction runs inside the caller's.

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};

use crate::store::{Record, StoreError, Ticket};

pub(super) const SCHEMA_VERSION: i64 = 1;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vault_secrets (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS records (
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('active', 'erased')),
    version BLOB,
    registration_id BLOB,
    opaque_record BLOB,
    sealed_key BLOB,
    key_proof_verifier BLOB,
    guesses INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    CHECK (state = 'erased' OR (version IS NOT NULL AND registration_id IS NOT NULL
        AND opaque_record IS NOT NULL AND sealed_key IS NOT NULL
        AND key_proof_verifier IS NOT NULL))
) STRICT;
CREATE TABLE IF NOT EXISTS login_sessions (
    id BLOB PRIMARY KEY,
    account TEXT NOT NULL,
    version BLOB NOT NULL,
    sealed_state BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS login_sessions_by_expiry ON login_sessions (expires_at_ms);
CREATE TABLE IF NOT EXISTS login_tickets (
    hash BLOB PRIMARY KEY,
    account TEXT NOT NULL,
    version BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS login_tickets_by_expiry ON login_tickets (expires_at_ms);
";

/// The guess counter: increments only while below the limit, and says so
/// by returning the new count (and the record the login runs against).
pub const COUNT_GUESS_SQL: &str = "UPDATE records SET guesses = guesses + 1, updated_at_ms = ?3 \
     WHERE account = ?1 AND state = 'active' AND guesses < ?2 \
     RETURNING guesses, version, registration_id, opaque_record, sealed_key, key_proof_verifier";

pub(super) const ERASE_SQL: &str = "UPDATE records SET state = 'erased', version = NULL, registration_id = NULL, \
     opaque_record = NULL, sealed_key = NULL, key_proof_verifier = NULL, updated_at_ms = ?2 \
     WHERE account = ?1 AND state = 'active'";

pub(super) fn db(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Database(error.to_string()),
    }
}

pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn array<const N: usize>(
    bytes: Vec<u8>,
    what: &'static str,
) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt(what))
}

pub(super) fn count(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt("guess count"))
}

/// Reads a record from columns `guesses, version, registration_id,
/// opaque_record, sealed_key, key_proof_verifier` starting at `first`.
pub(super) type RawRecord = (i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

pub(super) fn raw_record(row: &Row<'_>, first: usize) -> rusqlite::Result<RawRecord> {
    Ok((
        row.get(first)?,
        row.get(first + 1)?,
        row.get(first + 2)?,
        row.get(first + 3)?,
        row.get(first + 4)?,
        row.get(first + 5)?,
    ))
}

pub(super) fn record(
    (guesses, version, registration_id, opaque_record, sealed_key, verifier): RawRecord,
) -> Result<Record, StoreError> {
    Ok(Record {
        version: array(version, "record version")?,
        registration_id: array(registration_id, "registration id")?,
        opaque_record,
        sealed_key,
        key_proof_verifier: array(verifier, "key proof verifier")?,
        guesses: count(guesses)?,
    })
}

/// Erases the account's record, keeping a tombstone, and drops its login
/// state. Runs inside the caller's transaction.
pub(super) fn erase(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    tx.execute(ERASE_SQL, params![account, ms(now_ms)])
        .map_err(db)?;
    forget_login_state(tx, account)
}

pub(super) fn forget_login_state(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM login_sessions WHERE account = ?1", [account])
        .map_err(db)?;
    tx.execute("DELETE FROM login_tickets WHERE account = ?1", [account])
        .map_err(db)?;
    Ok(())
}

/// Moves the log into the database file and empties it, so erased bytes
/// do not linger in old log frames. Best effort: another process reading
/// the file may hold frames back until its next checkpoint.
pub(super) fn truncate_log(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

pub(super) fn insert_ticket(
    tx: &rusqlite::Transaction<'_>,
    hash: [u8; 32],
    ticket: &Ticket,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO login_tickets (hash, account, version, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            hash,
            ticket.account,
            ticket.version,
            ms(ticket.expires_at_ms)
        ],
    )
    .map_err(db)?;
    Ok(())
}

pub(super) fn state_of(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
) -> Result<Option<(String, u32)>, StoreError> {
    tx.query_row(
        "SELECT state, guesses FROM records WHERE account = ?1",
        [account],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
    )
    .optional()
    .map_err(db)?
    .map(|(state, guesses)| Ok((state, count(guesses)?)))
    .transpose()
}
