//! The embedded record store: one SQLite file in WAL mode with
//! `synchronous = FULL`, so every commit is fsynced before a call returns
//! and state survives a `kill -9` between any two RPCs.
//!
//! One connection behind a mutex does all the work on tokio's blocking
//! pool: the vault's transactions are a few microseconds of SQL plus an
//! fsync, so a single writer is as fast as SQLite gets and leaves no room
//! for lost updates. Other processes opening the same file are serialised by
//! SQLite's own locking (`BEGIN IMMEDIATE`, busy timeout).
//!
//! Erasing or deleting a record overwrites its bytes (`secure_delete`) and
//! truncates the write-ahead log, so an erased key is gone from the files
//! and not just unreachable.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The guess counter's one statement (see [`RecordStore::count_guess`]).
pub use self::sql::COUNT_GUESS_SQL;
use self::sql::*;

use super::{
    Failure, GuessCount, Record, RecordState, RecordStore, Reset, Session, StoreError, Ticket,
    Version,
};

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        Self::init(conn)
    }

    /// A private in-memory database, for unit tests of the vault core.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")
            .map_err(db)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(db)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "the database has schema version {version}; this vault knows up to {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(db)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the blocking pool with the connection.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back on unwind; the
            // connection itself is still sound.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("database task failed: {e}")))?
    }
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn load_secrets(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT sealed FROM vault_secrets WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn store_secrets_once(&self, sealed: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            tx.execute(
                "INSERT INTO vault_secrets (id, sealed) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                [&sealed],
            )
            .map_err(db)?;
            let stored = tx
                .query_row("SELECT sealed FROM vault_secrets WHERE id = 1", [], |row| {
                    row.get(0)
                })
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(stored)
        })
        .await
    }

    async fn get_record(&self, account: &str) -> Result<Option<RecordState>, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "SELECT state, guesses, version, registration_id, opaque_record, sealed_key, \
                     key_proof_verifier FROM records WHERE account = ?1",
                    [&account],
                    |row| {
                        let state: String = row.get(0)?;
                        if state == "erased" {
                            return Ok(None);
                        }
                        raw_record(row, 1).map(Some)
                    },
                )
                .optional()
                .map_err(db)?;
            match row {
                None => Ok(None),
                Some(None) => Ok(Some(RecordState::Erased)),
                Some(Some(raw)) => Ok(Some(RecordState::Active(record(raw)?))),
            }
        })
        .await
    }

    async fn create_record(
        &self,
        account: &str,
        record: Record,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let created = conn
                .execute(
                    "INSERT INTO records (account, state, version, registration_id, opaque_record, \
                     sealed_key, key_proof_verifier, guesses, updated_at_ms) \
                     VALUES (?1, 'active', ?2, ?3, ?4, ?5, ?6, 0, ?7) ON CONFLICT (account) DO NOTHING",
                    params![
                        account,
                        record.version,
                        record.registration_id,
                        record.opaque_record,
                        record.sealed_key,
                        record.key_proof_verifier,
                        ms(now_ms)
                    ],
                )
                .map_err(db)?;
            Ok(created == 1)
        })
        .await
    }

    async fn replace_record(
        &self,
        account: &str,
        expected: Version,
        record: Record,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let replaced = tx
                .execute(
                    "UPDATE records SET version = ?3, registration_id = ?4, opaque_record = ?5, \
                     sealed_key = ?6, key_proof_verifier = ?7, guesses = 0, updated_at_ms = ?8 \
                     WHERE account = ?1 AND state = 'active' AND version = ?2",
                    params![
                        account,
                        expected,
                        record.version,
                        record.registration_id,
                        record.opaque_record,
                        record.sealed_key,
                        record.key_proof_verifier,
                        ms(now_ms)
                    ],
                )
                .map_err(db)?;
            if replaced == 1 {
                forget_login_state(&tx, &account)?;
            }
            tx.commit().map_err(db)?;
            if replaced == 1 {
                truncate_log(conn);
            }
            Ok(replaced == 1)
        })
        .await
    }

    async fn count_guess(
        &self,
        account: &str,
        max_guesses: u32,
        now_ms: u64,
    ) -> Result<GuessCount, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let counted = tx
                .query_row(
                    COUNT_GUESS_SQL,
                    params![account, max_guesses, ms(now_ms)],
                    |row| raw_record(row, 0),
                )
                .optional()
                .map_err(db)?;
            let outcome = match counted {
                Some(raw) => GuessCount::Counted {
                    guesses: count(raw.0)?,
                    record: record(raw)?,
                },
                None => match state_of(&tx, &account)? {
                    None => GuessCount::NotFound,
                    Some((state, _)) if state == "erased" => GuessCount::Erased,
                    Some(_) => {
                        erase(&tx, &account, now_ms)?;
                        GuessCount::ErasedNow
                    }
                },
            };
            tx.commit().map_err(db)?;
            if outcome == GuessCount::ErasedNow {
                truncate_log(conn);
            }
            Ok(outcome)
        })
        .await
    }

    async fn reset_guesses(
        &self,
        account: &str,
        version: Version,
        ticket_hash: [u8; 32],
        ticket: Ticket,
        now_ms: u64,
    ) -> Result<Reset, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let sealed_key = tx
                .query_row(
                    "UPDATE records SET guesses = 0, updated_at_ms = ?3 \
                     WHERE account = ?1 AND state = 'active' AND version = ?2 RETURNING sealed_key",
                    params![account, version, ms(now_ms)],
                    |row| row.get(0),
                )
                .optional()
                .map_err(db)?;
            let outcome = match sealed_key {
                Some(sealed_key) => {
                    insert_ticket(&tx, ticket_hash, &ticket)?;
                    Reset::Reset { sealed_key }
                }
                None => match state_of(&tx, &account)? {
                    Some((state, _)) if state == "erased" => Reset::Erased,
                    _ => Reset::Changed,
                },
            };
            tx.commit().map_err(db)?;
            Ok(outcome)
        })
        .await
    }

    async fn record_failure(
        &self,
        account: &str,
        max_guesses: u32,
        now_ms: u64,
    ) -> Result<Failure, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let outcome = match state_of(&tx, &account)? {
                None => Failure::NotFound,
                Some((state, _)) if state == "erased" => Failure::Erased,
                Some((_, guesses)) if guesses >= max_guesses => {
                    erase(&tx, &account, now_ms)?;
                    Failure::ErasedNow
                }
                Some((_, guesses)) => Failure::Remaining(max_guesses - guesses),
            };
            tx.commit().map_err(db)?;
            if outcome == Failure::ErasedNow {
                truncate_log(conn);
            }
            Ok(outcome)
        })
        .await
    }

    async fn delete(&self, account: &str, expected: Option<Version>) -> Result<bool, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let deleted = match expected {
                Some(version) => tx.execute(
                    "DELETE FROM records WHERE account = ?1 AND state = 'active' AND version = ?2",
                    params![account, version],
                ),
                None => tx.execute("DELETE FROM records WHERE account = ?1", [&account]),
            }
            .map_err(db)?;
            if deleted == 1 {
                forget_login_state(&tx, &account)?;
            }
            tx.commit().map_err(db)?;
            if deleted == 1 {
                truncate_log(conn);
            }
            Ok(deleted == 1)
        })
        .await
    }

    async fn put_session(
        &self,
        id: [u8; 16],
        session: Session,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            tx.execute(
                "DELETE FROM login_sessions WHERE expires_at_ms <= ?1",
                [ms(now_ms)],
            )
            .map_err(db)?;
            tx.execute(
                "DELETE FROM login_tickets WHERE expires_at_ms <= ?1",
                [ms(now_ms)],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO login_sessions (id, account, version, sealed_state, expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id,
                    session.account,
                    session.version,
                    session.sealed_state,
                    ms(session.expires_at_ms)
                ],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn take_session(
        &self,
        id: [u8; 16],
        account: &str,
    ) -> Result<Option<Session>, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "DELETE FROM login_sessions WHERE id = ?1 AND account = ?2 \
                     RETURNING version, sealed_state, expires_at_ms",
                    params![id, account],
                    |row| {
                        Ok((
                            row.get::<_, Vec<u8>>(0)?,
                            row.get(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            row.map(|(version, sealed_state, expires_at_ms)| {
                Ok(Session {
                    account,
                    version: array(version, "session version")?,
                    sealed_state,
                    expires_at_ms: u64::try_from(expires_at_ms).unwrap_or(0),
                })
            })
            .transpose()
        })
        .await
    }

    async fn put_ticket(&self, hash: [u8; 32], ticket: Ticket) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            insert_ticket(&tx, hash, &ticket)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn take_ticket(
        &self,
        hash: [u8; 32],
        account: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "DELETE FROM login_tickets WHERE hash = ?1 AND account = ?2 \
                     RETURNING version, expires_at_ms",
                    params![hash, account],
                    |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(version, expires_at_ms)| {
                Ok(Ticket {
                    account,
                    version: array(version, "ticket version")?,
                    expires_at_ms: u64::try_from(expires_at_ms).unwrap_or(0),
                })
            })
            .transpose()
        })
        .await
    }
}

mod sql;
#[cfg(test)]
mod tests;
