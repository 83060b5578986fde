//! Deterministic generator of a simulated phone's chat data: a real SQLite chat database
//! (`msgstore.db`) plus media files laid out like WhatsApp's `Media/` folders.
//!
//! Everything is derived from a `u64` seed with ChaCha8, so the same seed and profile give
//! byte-identical trees (no wall clock, no randomness from the OS). Also provides helpers
//! the tests and the simulator use to inspect trees: [`list_files`], [`diff_trees`] and
//! [`sample_texts`].

//!
//! One module per part: [`tree`] lists and compares trees, `plan` decides everything about a
//! phone but its bytes (conversations, messages, media, dates), `write` writes the database
//! and media files, `text` makes message texts.

mod plan;
#[cfg(test)]
mod tests;
mod text;
mod tree;
mod write;

use std::collections::HashSet;
use std::fs::{self};
use std::io;
use std::path::Path;

use anyhow::{Context, ensure};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rusqlite::{Connection, OpenFlags};

use plan::plan_phone;
pub(crate) use text::message_text;
pub use tree::{diff_trees, list_files};
use write::{write_db, write_media_file};

/// Name of the chat database inside a phone root.
pub const DB_FILE: &str = "msgstore.db";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// How much data a simulated phone holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneProfile {
    /// Number of chats (individual and group).
    pub conversations: u32,
    /// Number of messages over all chats.
    pub messages: u32,
    /// Number of media files; each belongs to a distinct message, so at most `messages`.
    pub media_files: u32,
    /// Total size of all media files, split over the files with a realistic spread.
    pub media_bytes: u64,
}

impl PhoneProfile {
    /// A realistic phone: 40 chats, 20 000 messages, 60 media files totalling 24 MiB.
    pub fn demo() -> Self {
        Self {
            conversations: 40,
            messages: 20_000,
            media_files: 60,
            media_bytes: 24 * MIB,
        }
    }

    /// A heavy user, about 100 MiB: 80 chats, 80 000 messages, 200 media
    /// files totalling 90 MiB. For benchmarks.
    pub fn large() -> Self {
        Self {
            conversations: 80,
            messages: 80_000,
            media_files: 200,
            media_bytes: 90 * MIB,
        }
    }

    /// A tiny phone for tests: 5 chats, 200 messages, 5 media files totalling 512 KiB.
    pub fn small() -> Self {
        Self {
            conversations: 5,
            messages: 200,
            media_files: 5,
            media_bytes: 512 * KIB,
        }
    }
}

/// What [`create_phone`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneStats {
    /// Regular files written (the database plus the media files).
    pub files: u32,
    /// Total bytes of all files (`db_bytes + media_bytes`).
    pub bytes: u64,
    /// Messages in the database.
    pub messages: u32,
    /// Size of `msgstore.db`.
    pub db_bytes: u64,
    /// Total size of the media files.
    pub media_bytes: u64,
}

/// Creates a simulated phone under `root` (which must be empty or absent).
///
/// Writes `root/msgstore.db`, a SQLite database with tables
/// `conversations(id, jid, subject, created_at)`,
/// `messages(id, conversation_id, from_me, timestamp_ms, text, media_path)` and
/// `media(id, message_id, path, mime, size)` (times are Unix milliseconds, paths are
/// relative to `root`), and media files under `root/Media/<kind>/...`. The same `seed`
/// and `profile` give byte-identical files.
pub fn create_phone(root: &Path, seed: u64, profile: &PhoneProfile) -> anyhow::Result<PhoneStats> {
    ensure!(
        profile.messages == 0 || profile.conversations > 0,
        "a phone with messages needs at least one conversation"
    );
    ensure!(
        profile.media_files <= profile.messages,
        "each media file belongs to a distinct message: media_files ({}) > messages ({})",
        profile.media_files,
        profile.messages
    );
    prepare_root(root)?;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = plan_phone(&mut rng, profile);

    let db_path = root.join(DB_FILE);
    write_db(&db_path, &plan, &mut rng)
        .with_context(|| format!("writing {}", db_path.display()))?;

    let mut media_bytes = 0u64;
    for (index, media) in plan.media.iter().enumerate() {
        let path = root.join(&media.path);
        write_media_file(&path, seed, index as u64, media)
            .with_context(|| format!("writing {}", path.display()))?;
        media_bytes += media.size;
    }

    let db_bytes = fs::metadata(&db_path)
        .with_context(|| format!("reading size of {}", db_path.display()))?
        .len();
    Ok(PhoneStats {
        files: 1 + profile.media_files,
        bytes: db_bytes + media_bytes,
        messages: profile.messages,
        db_bytes,
        media_bytes,
    })
}

/// Returns up to `n` message texts stored in the phone's database, chosen deterministically
/// and spread evenly over the history. Only distinctive texts (at least 24 characters) are
/// chosen, so a test can search storage for them as plaintext. The database is opened
/// read-only and is not modified.
pub fn sample_texts(root: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    let db_path = root.join(DB_FILE);
    let conn = Connection::open_with_flags(
        &db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db_path.display()))?;
    let texts: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT text FROM messages WHERE text IS NOT NULL AND length(text) >= 24 ORDER BY id",
        )?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut seen = HashSet::new();
        let mut texts = Vec::new();
        for text in rows {
            let text = text?;
            if seen.insert(text.clone()) {
                texts.push(text);
            }
        }
        texts
    };
    conn.close()
        .map_err(|(_, e)| e)
        .with_context(|| format!("closing {}", db_path.display()))?;
    if n >= texts.len() {
        return Ok(texts);
    }
    Ok((0..n).map(|i| texts[i * texts.len() / n].clone()).collect())
}

/// Lists every regular file under `root` as (relative path with `/` separators, size),
/// sorted by path. Symlinks and other non-regular files are skipped; a path that is not
/// valid UTF-8 is an error.
fn prepare_root(root: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(root) {
        Ok(meta) => {
            ensure!(
                meta.is_dir(),
                "{} exists and is not a directory",
                root.display()
            );
            let mut entries =
                fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
            ensure!(
                entries.next().is_none(),
                "{} is not empty; a phone is only created in an empty or absent directory",
                root.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))
        }
        Err(e) => Err(e).with_context(|| format!("inspecting {}", root.display())),
    }
}

// ---------------------------------------------------------------------------------------
// Planning: everything about the phone except message texts and media contents.

/// 2025-03-01T00:00:00Z in Unix milliseconds; the history starts up to 120 days later.
pub(crate) const EPOCH_BASE_MS: i64 = 1_740_787_200_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
/// The message history spans about a year whatever the message count.
pub(crate) const HISTORY_MS: i64 = 365 * DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaKind {
    Image,
    Voice,
    Video,
    Document,
}

impl MediaKind {
    const ALL: [MediaKind; 4] = [Self::Image, Self::Voice, Self::Video, Self::Document];
    /// Relative frequency of each kind, in the order of [`MediaKind::ALL`].
    const WEIGHTS: [u32; 4] = [60, 20, 5, 15];

    /// Realistic size range before scaling to the profile's total.
    fn size_range(self) -> (u64, u64) {
        match self {
            Self::Image => (50 * KIB, 400 * KIB),
            Self::Voice => (10 * KIB, 200 * KIB),
            Self::Video => (MIB, 8 * MIB),
            Self::Document => (20 * KIB, 2 * MIB),
        }
    }

    fn mime(self) -> &'static str {
        match self {
            Self::Image => "image/jpeg",
            Self::Voice => "audio/ogg; codecs=opus",
            Self::Video => "video/mp4",
            Self::Document => "application/pdf",
        }
    }

    fn header(self) -> &'static [u8] {
        match self {
            // SOI + JFIF APP0 segment.
            Self::Image => b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
            // Ogg page with an OpusHead packet.
            Self::Voice => {
                b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x2a\x4e\x1d\x07\x00\x00\x00\x00\
                  \x00\x00\x00\x00\x01\x13OpusHead\x01\x01\x38\x01\x80\xBB\x00\x00\x00\x00\x00"
            }
            // ftyp box (isom).
            Self::Video => b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
            Self::Document => b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n",
        }
    }

    fn trailer(self) -> &'static [u8] {
        match self {
            Self::Image => b"\xFF\xD9",
            Self::Document => b"\n%%EOF\n",
            Self::Voice | Self::Video => b"",
        }
    }
}

#[derive(Debug, Clone)]
struct Conversation {
    jid: String,
    subject: Option<String>,
    created_at_ms: i64,
}

#[derive(Debug, Clone)]
struct MessagePlan {
    /// Index into `PhonePlan::conversations`.
    conversation: usize,
    from_me: bool,
    timestamp_ms: i64,
    /// Index into `PhonePlan::media`.
    media: Option<usize>,
}

#[derive(Debug, Clone)]
struct MediaPlan {
    /// Index into `PhonePlan::messages`.
    message: usize,
    kind: MediaKind,
    /// Relative to the phone root, `/`-separated.
    path: String,
    size: u64,
}

#[derive(Debug, Clone)]
struct PhonePlan {
    conversations: Vec<Conversation>,
    messages: Vec<MessagePlan>,
    media: Vec<MediaPlan>,
}
