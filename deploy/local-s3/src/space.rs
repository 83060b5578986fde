//! A full disk is its own error: 507 `XMinioStorageFull`, logged once per episode.
//!
//! `s3s-fs` answers every I/O error with 500 `InternalError`, and a client cannot tell
//! "the disk is full" (stop writing, free space) from "the server broke" (retry). When
//! a write fails with `ENOSPC` or `EDQUOT` (`ErrorKind::StorageFull` /
//! `QuotaExceeded`), `local-s3` answers HTTP 507 Insufficient Storage with the S3 error
//! code `XMinioStorageFull` — the code MinIO, the production store, uses for the same
//! condition — so the gateway handles both stores with one rule. `aws-sdk-s3` does not
//! retry a 507. The first such failure logs one warning with the path; the rest log at
//! debug until a write succeeds again, which logs that the disk has room.
//!
//! The disk is the outside world here, behind [`Space`]: [`Disk`] lets the filesystem
//! decide, and [`SimulatedCapacity`] (the hidden `--test-capacity-bytes`) makes writes
//! fail with `StorageFull` once the data directory would hold more than N bytes, so
//! the tests run without mount privileges. The simulation applies to the writes
//! `local-s3` makes itself (PutObject and its sidecars); the writes left to `s3s-fs`
//! (UploadPart, CopyObject, ...) meet only the real disk, whose `ENOSPC` they report
//! as 507 all the same.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use s3s::{S3Error, S3ErrorCode};
use tracing::{debug, info, warn};

/// The S3 error code of a full disk, as MinIO spells it.
pub const STORAGE_FULL_CODE: &str = "XMinioStorageFull";
/// The HTTP status of a full disk (507 Insufficient Storage).
pub const STORAGE_FULL_STATUS: u16 = 507;

/// How much more the data directory may take.
#[async_trait::async_trait]
pub(crate) trait Space: Send + Sync + Debug {
    /// Bytes that may still be written, or `None` when only the filesystem knows (it
    /// then fails the write itself).
    async fn room(&self) -> io::Result<Option<u64>>;
}

/// The real disk: the filesystem reports `ENOSPC` / `EDQUOT` on its own.
#[derive(Debug)]
pub(crate) struct Disk;

#[async_trait::async_trait]
impl Space for Disk {
    async fn room(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// Behaves as if the data directory were a filesystem of `capacity` bytes: the room
/// left is the capacity less the size of every file under the root. For tests only
/// (it walks the directory for each write).
#[derive(Debug)]
pub(crate) struct SimulatedCapacity {
    pub root: PathBuf,
    pub capacity: u64,
}

#[async_trait::async_trait]
impl Space for SimulatedCapacity {
    async fn room(&self) -> io::Result<Option<u64>> {
        let root = self.root.clone();
        let used = tokio::task::spawn_blocking(move || bytes_under(&root))
            .await
            .map_err(io::Error::other)??;
        Ok(Some(self.capacity.saturating_sub(used)))
    }
}

fn bytes_under(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Removed while we walked.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// The error a write reports when [`Space::room`] is used up, the same kind the OS
/// reports for `ENOSPC`.
pub(crate) fn no_room() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "no space left in the data directory (simulated capacity)",
    )
}

/// Whether an I/O error means the disk or the quota is full.
pub(crate) fn is_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Whether an error from `s3s-fs` (an `InternalError` with the I/O error as its source)
/// is a full disk.
pub(crate) fn is_full_s3(error: &S3Error) -> bool {
    *error.code() == S3ErrorCode::InternalError
        && error
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .is_some_and(is_full)
}

/// The S3 error a client gets for a full disk.
pub fn storage_full() -> S3Error {
    let code = STORAGE_FULL_CODE
        .parse::<S3ErrorCode>()
        .expect("parsing an error code is infallible");
    let mut error = S3Error::with_message(
        code,
        "local-s3: no space left in the data directory (ENOSPC/EDQUOT). The object was not \
         stored and the previous version is unchanged; delete objects or free disk space, \
         then retry.",
    );
    error.set_status_code(
        hyper::StatusCode::from_u16(STORAGE_FULL_STATUS).expect("507 is a valid status"),
    );
    error
}

/// Remembers whether the disk is full, so the condition is logged once per episode.
#[derive(Debug, Default)]
pub(crate) struct FullDiskLog {
    full: AtomicBool,
}

impl FullDiskLog {
    /// A write to `path` failed because the disk is full; returns the client's error.
    pub(crate) fn full(&self, path: &Path, error: &io::Error) -> S3Error {
        if self.full.swap(true, Ordering::Relaxed) {
            debug!(path = %path.display(), %error, "write refused: data directory still full");
        } else {
            warn!(
                path = %path.display(),
                %error,
                "data directory is full: writes answer 507 {STORAGE_FULL_CODE} until space is freed"
            );
        }
        storage_full()
    }

    /// A write succeeded: if the disk was full, say once that it has room again.
    pub(crate) fn wrote(&self) {
        if self.full.load(Ordering::Relaxed) && self.full.swap(false, Ordering::Relaxed) {
            info!("data directory has room again: writes succeed");
        }
    }

    /// Maps a full-disk error from `s3s-fs` to [`storage_full`]; other results pass.
    pub(crate) fn map<T>(&self, path: &Path, result: Result<T, S3Error>) -> Result<T, S3Error> {
        match result {
            Err(e) if is_full_s3(&e) => {
                let io = e
                    .source()
                    .and_then(|s| s.downcast_ref::<io::Error>())
                    .map_or_else(
                        || io::Error::from(io::ErrorKind::StorageFull),
                        |io| io::Error::new(io.kind(), io.to_string()),
                    );
                Err(self.full(path, &io))
            }
            Err(e) => Err(e),
            Ok(value) => {
                self.wrote();
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_full_and_others_are_not() {
        assert!(is_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(is_full(&io::Error::from(io::ErrorKind::QuotaExceeded)));
        assert!(is_full(&no_room()));
        #[cfg(target_os = "linux")]
        {
            assert!(is_full(&io::Error::from_raw_os_error(28)), "ENOSPC");
            assert!(is_full(&io::Error::from_raw_os_error(122)), "EDQUOT");
        }
        assert!(!is_full(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }

    #[test]
    fn an_s3s_fs_internal_error_from_enospc_becomes_507() {
        let log = FullDiskLog::default();
        let inner = S3Error::internal_error(io::Error::from(io::ErrorKind::StorageFull));
        let err = log
            .map::<()>(Path::new("/data/b/k"), Err(inner))
            .expect_err("still an error");
        assert_eq!(err.code().as_str(), STORAGE_FULL_CODE);
        assert_eq!(err.status_code().map(|s| s.as_u16()), Some(507));
        assert!(log.full.load(Ordering::Relaxed));

        // Any other internal error stays what it was.
        let other = S3Error::internal_error(io::Error::from(io::ErrorKind::PermissionDenied));
        let err = log
            .map::<()>(Path::new("/x"), Err(other))
            .expect_err("error");
        assert_eq!(*err.code(), S3ErrorCode::InternalError);

        // A success ends the episode.
        log.map(Path::new("/x"), Ok(())).expect("ok");
        assert!(!log.full.load(Ordering::Relaxed));
    }

    /// A test writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_logged_once_with_the_path_until_a_write_succeeds() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = FullDiskLog::default();
            let enospc = io::Error::from(io::ErrorKind::StorageFull);
            log.full(Path::new("/data/.tmp.first"), &enospc);
            log.full(Path::new("/data/.tmp.second"), &enospc);
            log.wrote();
            log.wrote();
            log.full(Path::new("/data/.tmp.third"), &enospc);
        });
        let text = String::from_utf8(captured.0.lock().expect("capture").clone()).expect("utf-8");
        assert_eq!(text.matches("WARN").count(), 2, "{text}");
        assert!(text.contains("/data/.tmp.first"), "{text}");
        assert!(!text.contains("/data/.tmp.second"), "{text}");
        assert!(text.contains("/data/.tmp.third"), "{text}");
        assert_eq!(text.matches("room again").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn simulated_capacity_counts_every_file_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("b/x")).expect("dirs");
        std::fs::write(dir.path().join("b/x/obj"), vec![0u8; 300]).expect("obj");
        std::fs::write(dir.path().join(".sidecar.json"), vec![0u8; 20]).expect("sidecar");
        let space = SimulatedCapacity {
            root: dir.path().to_path_buf(),
            capacity: 1000,
        };
        assert_eq!(space.room().await.expect("room"), Some(680));
        let full = SimulatedCapacity {
            root: dir.path().to_path_buf(),
            capacity: 100,
        };
        assert_eq!(full.room().await.expect("room"), Some(0));
        assert_eq!(Disk.room().await.expect("room"), None);
    }
}
