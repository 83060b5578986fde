//! The directory beside the target where a restore is assembled. Its marker
//! names the exact backup it holds (generation and manifest digest), so a
//! resumed restore never mixes two backups, even two of the same generation;
//! and what an earlier attempt wrote is re-verified chunk by chunk against
//! the manifest's chunk ids before it is kept.

use std::path::{Path, PathBuf};

use e2eb_proto::backup::v2::FileEntry;
use tokio::io::AsyncReadExt;

use super::{RestoreError, RestoreReport};
use crate::chunking::{ChunkId, ChunkIds};

const MARKER: &str = ".e2eb-restoring";

pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
}

impl Staging {
    /// Opens the staging directory for the backup `generation` whose sealed
    /// manifest has `digest`; a leftover of any other backup is wiped.
    pub(crate) fn open(
        target: &Path,
        generation: u64,
        digest: &[u8; 32],
    ) -> Result<Self, RestoreError> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "restore".into());
        let dir = target.with_file_name(format!(".{name}.restoring"));
        let marker = dir.join(MARKER);
        let error = |source| RestoreError::WriteDevice {
            path: dir.display().to_string(),
            source,
        };
        let identity = format!("{generation} {}", hex::encode(digest));
        let resumable = std::fs::read_to_string(&marker).ok() == Some(identity.clone());
        if !resumable {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(error)?;
            std::fs::write(&marker, identity).map_err(error)?;
        }
        Ok(Self { dir })
    }

    pub(crate) fn commit(self, target: &Path) -> Result<(), RestoreError> {
        let error = |source| RestoreError::WriteDevice {
            path: target.display().to_string(),
            source,
        };
        std::fs::remove_file(self.dir.join(MARKER)).map_err(error)?;
        if target.exists() {
            std::fs::remove_dir(target).map_err(error)?;
        }
        std::fs::rename(&self.dir, target).map_err(error)?;
        Ok(())
    }

    pub(crate) fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Ends a restore whose files were written here: on success the
    /// staging directory becomes `target`; when the gateway could not be
    /// reached it stays for the next attempt; any other failure discards it.
    pub(crate) fn finish(
        self,
        target: &Path,
        outcome: Result<(), RestoreError>,
        report: RestoreReport,
    ) -> Result<RestoreReport, RestoreError> {
        match outcome {
            Ok(()) => {
                self.commit(target)?;
                tracing::info!(
                    generation = report.generation,
                    files = report.files,
                    bytes = report.bytes,
                    "restore verified"
                );
                Ok(report)
            }
            Err(RestoreError::Gateway(error)) if error.is_retryable() => Err(error.into()),
            Err(other) => {
                self.discard();
                Err(other)
            }
        }
    }
}

/// How many leading chunks of `entry` the staged file at `path` already holds,
/// each read back and checked against its id, and the byte length they
/// cover. Anything after the first chunk that fails is to be rewritten.
pub(crate) async fn verified_prefix(
    path: &Path,
    entry: &FileEntry,
    ids: &ChunkIds,
) -> std::io::Result<(usize, u64)> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let existing = file.metadata().await?.len();
    let mut offset = 0u64;
    let mut buffer = Vec::new();
    for (done, chunk) in entry.chunks.iter().enumerate() {
        let size = chunk.size as u64;
        let Ok(id) = <[u8; 32]>::try_from(chunk.id.as_slice()).map(ChunkId) else {
            return Ok((done, offset));
        };
        if offset + size > existing {
            return Ok((done, offset));
        }
        buffer.resize(size as usize, 0);
        file.read_exact(&mut buffer).await?;
        if !ids.verify(&id, &buffer) {
            return Ok((done, offset));
        }
        offset += size;
    }
    Ok((entry.chunks.len(), offset))
}
