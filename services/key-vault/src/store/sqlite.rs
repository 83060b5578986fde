//! The embedded record store: one SQLite file in WAL mode with
//! `synchronous = FULL`, so every write is fsynced before a call returns
//! and state survives a `kill -9` between any two RPCs. The file and its
//! log are private to the vault's user (mode 0600).
//!
//! One connection behind a mutex does all the work on tokio's blocking
//! pool: the vault's transactions are a few microseconds of SQL plus an
//! fsync, so a single writer is as fast as SQLite gets. Other processes
//! opening the same file are serialised by SQLite's own locking
//! (`BEGIN IMMEDIATE`, busy timeout). Revisions come from one counter for
//! the whole file, so a row deleted and created again never reuses a
//! revision a slow writer may still hold.
//!
//! Rows are stored as the vault's JSON text beside their MAC, readable by
//! an operator and detectably not editable. Deleting or scrubbing a row
//! overwrites its bytes (`secure_delete`) and truncates the write-ahead
//! log, so an erased key is gone from the files and not just unreachable.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use super::{Ephemeral, EphemeralKind, RecordStore, Revision, StoreError, StoredRow};

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vault_secrets (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS revision_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;
INSERT INTO revision_counter (id, last) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    mac BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS ephemerals (
    kind TEXT NOT NULL,
    id BLOB NOT NULL,
    account TEXT NOT NULL,
    payload BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    mac BLOB NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;
CREATE INDEX IF NOT EXISTS ephemerals_by_expiry ON ephemerals (expires_at_ms);
CREATE INDEX IF NOT EXISTS ephemerals_by_account ON ephemerals (account);
";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    name: String,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        make_private(path)?;
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
        Self::init(conn, format!("SQLite database {}", path.display()))
    }

    /// A private in-memory database, for unit tests of the vault core.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(
            Connection::open_in_memory().map_err(db)?,
            "in-memory SQLite database".into(),
        )
    }

    fn init(conn: Connection, name: String) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")
            .map_err(db)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(db)?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "{name} has schema version {version}; this vault reads only version \
                 {SCHEMA_VERSION} (an older vault's database cannot be upgraded: move it aside)"
            )));
        }
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(db)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            name,
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
    fn describe(&self) -> String {
        self.name.clone()
    }

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

    async fn get_row(&self, account: &str) -> Result<Option<(StoredRow, Revision)>, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "SELECT body, mac, revision FROM accounts WHERE account = ?1",
                    [&account],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            row.map(|(body, mac, revision)| {
                Ok((
                    StoredRow {
                        body: body.into_bytes(),
                        mac: mac.try_into().map_err(|_| StoreError::Corrupt("row MAC"))?,
                    },
                    revision_of(revision)?,
                ))
            })
            .transpose()
        })
        .await
    }

    async fn put_row(
        &self,
        account: &str,
        row: StoredRow,
        expected: Option<Revision>,
        scrub: bool,
    ) -> Result<bool, StoreError> {
        let account = account.to_owned();
        let body = String::from_utf8(row.body)
            .map_err(|_| StoreError::Database("a row body must be UTF-8 text".into()))?;
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT revision FROM accounts WHERE account = ?1",
                    [&account],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if current.map(revision_of).transpose()? != expected {
                return Ok(false);
            }
            let revision = next_revision(&tx)?;
            tx.execute(
                "INSERT INTO accounts (account, revision, body, mac) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (account) DO UPDATE SET revision = ?2, body = ?3, mac = ?4",
                params![account, revision, body, row.mac],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            if scrub {
                truncate_log(conn);
            }
            Ok(true)
        })
        .await
    }

    async fn delete_row(&self, account: &str, expected: Revision) -> Result<bool, StoreError> {
        let account = account.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let deleted = tx
                .execute(
                    "DELETE FROM accounts WHERE account = ?1 AND revision = ?2",
                    params![account, sql_revision(expected)],
                )
                .map_err(db)?;
            if deleted == 1 {
                tx.execute("DELETE FROM ephemerals WHERE account = ?1", [&account])
                    .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            if deleted == 1 {
                truncate_log(conn);
            }
            Ok(deleted == 1)
        })
        .await
    }

    async fn put_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        item: Ephemeral,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let id = id.to_vec();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            tx.execute(
                "DELETE FROM ephemerals WHERE expires_at_ms <= ?1",
                [ms(now_ms)],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO ephemerals (kind, id, account, payload, expires_at_ms, mac) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    kind.as_str(),
                    id,
                    item.account,
                    item.payload,
                    ms(item.expires_at_ms),
                    item.mac
                ],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn take_ephemeral(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &str,
    ) -> Result<Option<Ephemeral>, StoreError> {
        let (id, account) = (id.to_vec(), account.to_owned());
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "DELETE FROM ephemerals WHERE kind = ?1 AND id = ?2 AND account = ?3 \
                     RETURNING payload, expires_at_ms, mac",
                    params![kind.as_str(), id, account],
                    |row| {
                        Ok((
                            row.get::<_, Vec<u8>>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            row.map(|(payload, expires_at_ms, mac)| {
                Ok(Ephemeral {
                    account,
                    payload,
                    expires_at_ms: u64::try_from(expires_at_ms).unwrap_or(0),
                    mac: mac
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("ephemeral MAC"))?,
                })
            })
            .transpose()
        })
        .await
    }
}

/// Creates the database file with mode 0600 if missing, and narrows an
/// existing one to 0600 (SQLite gives its log files the same mode).
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let error = |e: std::io::Error| {
        StoreError::Database(format!("cannot make {} private: {e}", path.display()))
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)
}

fn next_revision(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
    tx.query_row(
        "UPDATE revision_counter SET last = last + 1 WHERE id = 1 RETURNING last",
        [],
        |row| row.get(0),
    )
    .map_err(db)
}

fn revision_of(value: i64) -> Result<Revision, StoreError> {
    Revision::try_from(value).map_err(|_| StoreError::Corrupt("row revision"))
}

fn sql_revision(value: Revision) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn db(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Database(error.to_string()),
    }
}

/// Moves the log into the database file and empties it, so scrubbed bytes
/// do not linger in old log frames. Best effort: another process reading
/// the file may hold frames back until its next checkpoint.
fn truncate_log(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite;

    #[tokio::test]
    async fn the_store_suite_passes() {
        suite::run(&SqliteStore::in_memory().unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_lose_no_update() {
        suite::concurrent_writers_lose_no_update(Arc::new(SqliteStore::in_memory().unwrap())).await;
    }

    #[tokio::test]
    async fn a_file_store_is_private_and_durable_across_reopen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault/vault.db");
        let store = SqliteStore::open(&path).unwrap();
        suite::run(&store).await;
        let row = StoredRow {
            body: b"{\"kept\":true}".to_vec(),
            mac: [5; 32],
        };
        assert!(
            store
                .put_row("kept", row.clone(), None, false)
                .await
                .unwrap()
        );
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.get_row("kept").await.unwrap().unwrap().0, row);
        for name in ["vault.db", "vault.db-wal", "vault.db-shm"] {
            let file = path.with_file_name(name);
            if let Ok(meta) = std::fs::metadata(&file) {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            }
        }
    }

    #[tokio::test]
    async fn an_older_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 1")
            .unwrap();
        let error = SqliteStore::open(&path).err().expect("schema 1 is refused");
        assert!(error.to_string().contains("schema version 1"), "{error}");
    }
}
