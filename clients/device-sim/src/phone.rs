//! Deterministic generator of a simulated phone's chat data: a real SQLite chat database
//! (`msgstore.db`) plus media files laid out like WhatsApp's `Media/` folders.
//!
//! Everything is derived from a `u64` seed with ChaCha8, so the same seed and profile give
//! byte-identical trees (no wall clock, no randomness from the OS). Also provides helpers
//! the tests and the simulator use to inspect trees: [`list_files`], [`diff_trees`] and
//! [`sample_texts`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, ensure};
use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{Connection, OpenFlags, params};

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
pub fn list_files(root: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("non-UTF-8 file name under {}", dir.display()),
            )
        })?;
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if file_type.is_file() {
            out.push((rel, entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// Compares two directory trees byte for byte (regular files only, as [`list_files`] sees
/// them) and returns, sorted, the relative paths whose contents differ, that are missing
/// from `b`, or that are extra in `b`. Files are streamed, never loaded whole.
pub fn diff_trees(a: &Path, b: &Path) -> io::Result<Vec<String>> {
    let left = list_files(a)?;
    let right = list_files(b)?;
    let mut diffs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some((pa, sa)), Some((pb, sb))) if pa == pb => {
                if sa != sb || !same_contents(&a.join(pa), &b.join(pb))? {
                    diffs.push(pa.clone());
                }
                i += 1;
                j += 1;
            }
            (Some((pa, _)), Some((pb, _))) if pa < pb => {
                diffs.push(pa.clone());
                i += 1;
            }
            (Some(_), Some((pb, _))) | (None, Some((pb, _))) => {
                diffs.push(pb.clone());
                j += 1;
            }
            (Some((pa, _)), None) => {
                diffs.push(pa.clone());
                i += 1;
            }
            (None, None) => unreachable!("loop condition guarantees one side remains"),
        }
    }
    diffs.sort();
    Ok(diffs)
}

fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    const BUF: usize = 64 * 1024;
    let mut fa = File::open(a)?;
    let mut fb = File::open(b)?;
    let mut ba = vec![0u8; BUF];
    let mut bb = vec![0u8; BUF];
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

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

const GROUP_SUBJECTS: &[&str] = &[
    "Family 🏡",
    "Football Sunday ⚽",
    "Book club 📚",
    "Flat 3B",
    "Trip to Lisbon ✈️",
    "Work – platform team",
    "School parents",
    "Climbing crew 🧗",
    "Mum's 60th 🎂",
    "Neighbours",
    "Café Größe",
    "Δ study group",
];

const COUNTRY_CODES: &[&str] = &["44", "1", "49", "33", "34", "351", "91", "55", "81", "48"];

fn plan_phone(rng: &mut ChaCha8Rng, profile: &PhoneProfile) -> PhonePlan {
    let start_ms = EPOCH_BASE_MS + rng.gen_range(0..120 * DAY_MS);

    // Conversations: about one in five is a group.
    let mut jids = HashSet::new();
    let mut conversations = Vec::with_capacity(profile.conversations as usize);
    for _ in 0..profile.conversations {
        let group = rng.gen_bool(0.2);
        let jid = loop {
            let jid = if group {
                format!("120363{:012}@g.us", rng.gen_range(0..1_000_000_000_000u64))
            } else {
                let cc = COUNTRY_CODES
                    .choose(rng)
                    .expect("country codes are non-empty");
                format!(
                    "{cc}{:09}@s.whatsapp.net",
                    rng.gen_range(100_000_000..1_000_000_000u64)
                )
            };
            if jids.insert(jid.clone()) {
                break jid;
            }
        };
        let subject = group.then(|| {
            GROUP_SUBJECTS
                .choose(rng)
                .expect("subjects are non-empty")
                .to_string()
        });
        let created_at_ms = start_ms - rng.gen_range(DAY_MS..3 * 365 * DAY_MS);
        conversations.push(Conversation {
            jid,
            subject,
            created_at_ms,
        });
    }

    // Messages: a few chats are very busy (Zipf-like weights, shuffled over the chats);
    // messages come in bursts within one chat, separated by longer quiet gaps.
    let mut messages = Vec::with_capacity(profile.messages as usize);
    if profile.messages > 0 {
        let mut weights: Vec<u32> = (0..profile.conversations)
            .map(|r| 10_000 / (r + 1))
            .collect();
        weights.shuffle(rng);
        let pick = WeightedIndex::new(&weights).expect("weights are positive");
        let mean_gap = (HISTORY_MS / i64::from(profile.messages)).max(2_000);
        let mut now = start_ms;
        let mut conversation = pick.sample(rng);
        for i in 0..profile.messages {
            if i > 0 {
                if rng.gen_bool(0.6) {
                    // Burst: a reply in the same chat within a minute or so.
                    now += rng.gen_range(1_000..90_000);
                } else {
                    // 40% of gaps carry the whole history: mean 2.5 × the overall mean.
                    now += rng.gen_range(1_000..5 * mean_gap);
                    conversation = pick.sample(rng);
                }
            }
            messages.push(MessagePlan {
                conversation,
                from_me: rng.gen_bool(0.45),
                timestamp_ms: now,
                media: None,
            });
        }
    }

    // Media: distinct messages; every kind present when there are at least four files.
    let n_media = profile.media_files as usize;
    let mut kinds: Vec<MediaKind> = Vec::with_capacity(n_media);
    let kind_pick = WeightedIndex::new(MediaKind::WEIGHTS).expect("weights are positive");
    for i in 0..n_media {
        if n_media >= MediaKind::ALL.len() && i < MediaKind::ALL.len() {
            kinds.push(MediaKind::ALL[i]);
        } else {
            kinds.push(MediaKind::ALL[kind_pick.sample(rng)]);
        }
    }
    kinds.shuffle(rng);
    let mut carriers = rand::seq::index::sample(rng, messages.len(), n_media).into_vec();
    carriers.sort_unstable();
    let raw_sizes: Vec<u64> = kinds
        .iter()
        .map(|k| {
            let (lo, hi) = k.size_range();
            rng.gen_range(lo..=hi)
        })
        .collect();
    let sizes = scale_sizes(&raw_sizes, profile.media_bytes);

    let mut counters = [0u32; 4];
    let mut media = Vec::with_capacity(n_media);
    for (i, ((&message, &kind), &size)) in carriers.iter().zip(&kinds).zip(&sizes).enumerate() {
        let counter = &mut counters[MediaKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("kind is in ALL")];
        *counter += 1;
        let path = media_path(kind, messages[message].timestamp_ms, *counter);
        messages[message].media = Some(i);
        media.push(MediaPlan {
            message,
            kind,
            path,
            size,
        });
    }

    PhonePlan {
        conversations,
        messages,
        media,
    }
}

/// Scales `raw` proportionally so it sums to exactly `total` (rounding remainder goes to
/// the largest file).
fn scale_sizes(raw: &[u64], total: u64) -> Vec<u64> {
    let sum: u128 = raw.iter().map(|&s| u128::from(s)).sum();
    if raw.is_empty() || sum == 0 {
        return vec![0; raw.len()];
    }
    let mut sizes: Vec<u64> = raw
        .iter()
        .map(|&s| u64::try_from(u128::from(s) * u128::from(total) / sum).expect("share <= total"))
        .collect();
    let assigned: u64 = sizes.iter().sum();
    let largest = (0..raw.len())
        .max_by_key(|&i| (raw[i], std::cmp::Reverse(i)))
        .expect("raw is non-empty");
    sizes[largest] += total - assigned;
    sizes
}

/// WhatsApp-style relative path, e.g. `Media/WhatsApp Images/IMG-20260101-WA0001.jpg`.
/// Voice notes live in per-week subfolders as on Android (`.../202601/PTT-...opus`).
fn media_path(kind: MediaKind, timestamp_ms: i64, counter: u32) -> String {
    let days = timestamp_ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    match kind {
        MediaKind::Image => format!("Media/WhatsApp Images/IMG-{date}-WA{counter:04}.jpg"),
        MediaKind::Video => format!("Media/WhatsApp Video/VID-{date}-WA{counter:04}.mp4"),
        MediaKind::Document => {
            format!("Media/WhatsApp Documents/DOC-{date}-WA{counter:04}.pdf")
        }
        MediaKind::Voice => {
            let week = (days - days_from_civil(y, 1, 1)) / 7 + 1;
            format!("Media/WhatsApp Voice Notes/{y:04}{week:02}/PTT-{date}-WA{counter:04}.opus")
        }
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day count since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------
// Writing.

fn write_db(path: &Path, plan: &PhonePlan, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
    let mut conn = Connection::open(path)?;
    // Fixed layout settings so the file is the same on every run; DELETE journal mode
    // leaves a single file behind once the connection is closed.
    conn.execute_batch(
        "PRAGMA page_size = 4096;
         PRAGMA auto_vacuum = NONE;
         PRAGMA encoding = 'UTF-8';",
    )?;
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))?;
    ensure!(
        mode.eq_ignore_ascii_case("delete"),
        "journal_mode is {mode}"
    );

    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE conversations (
             id          INTEGER PRIMARY KEY,
             jid         TEXT NOT NULL UNIQUE,
             subject     TEXT,
             created_at  INTEGER NOT NULL
         );
         CREATE TABLE messages (
             id               INTEGER PRIMARY KEY,
             conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
             from_me          INTEGER NOT NULL,
             timestamp_ms     INTEGER NOT NULL,
             text             TEXT,
             media_path       TEXT
         );
         CREATE TABLE media (
             id          INTEGER PRIMARY KEY,
             message_id  INTEGER NOT NULL REFERENCES messages(id),
             path        TEXT NOT NULL,
             mime        TEXT NOT NULL,
             size        INTEGER NOT NULL
         );",
    )?;
    {
        let mut insert_conversation = tx.prepare(
            "INSERT INTO conversations (id, jid, subject, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (i, c) in plan.conversations.iter().enumerate() {
            insert_conversation.execute(params![
                i as i64 + 1,
                c.jid,
                c.subject,
                c.created_at_ms
            ])?;
        }

        let mut insert_message = tx.prepare(
            "INSERT INTO messages (id, conversation_id, from_me, timestamp_ms, text, media_path)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (i, m) in plan.messages.iter().enumerate() {
            let media_path = m.media.map(|k| plan.media[k].path.as_str());
            // Media messages carry a caption only sometimes.
            let text = if media_path.is_none() || rng.gen_bool(0.3) {
                Some(message_text(rng))
            } else {
                None
            };
            insert_message.execute(params![
                i as i64 + 1,
                m.conversation as i64 + 1,
                m.from_me,
                m.timestamp_ms,
                text,
                media_path
            ])?;
        }

        let mut insert_media = tx.prepare(
            "INSERT INTO media (id, message_id, path, mime, size) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (i, m) in plan.media.iter().enumerate() {
            insert_media.execute(params![
                i as i64 + 1,
                m.message as i64 + 1,
                m.path,
                m.kind.mime(),
                i64::try_from(m.size).context("media size exceeds i64")?
            ])?;
        }
    }
    tx.execute_batch(
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, timestamp_ms);
         CREATE INDEX media_by_message ON media (message_id);",
    )?;
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// Writes a media file: magic header, ChaCha8 bytes (incompressible), optional trailer.
/// Each file's contents come from its own ChaCha8 stream so they don't depend on how
/// many random numbers the planning used.
fn write_media_file(path: &Path, seed: u64, index: u64, media: &MediaPlan) -> io::Result<()> {
    const CHUNK: usize = 256 * 1024;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index + 1);
    let header = media.kind.header();
    let trailer = media.kind.trailer();
    let size = usize::try_from(media.size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "media file too large"))?;
    let mut file = File::create(path)?;
    if size < header.len() + trailer.len() {
        file.write_all(&header[..size.min(header.len())])?;
        let rest = size.saturating_sub(header.len());
        let mut buf = vec![0u8; rest];
        rng.fill_bytes(&mut buf);
        file.write_all(&buf)?;
    } else {
        file.write_all(header)?;
        let mut remaining = size - header.len() - trailer.len();
        let mut buf = vec![0u8; CHUNK.min(remaining)];
        while remaining > 0 {
            let n = remaining.min(buf.len());
            rng.fill_bytes(&mut buf[..n]);
            file.write_all(&buf[..n])?;
            remaining -= n;
        }
        file.write_all(trailer)?;
    }
    file.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Message texts.

const WORDS: &[&str] = &[
    "we",
    "you",
    "they",
    "it",
    "this",
    "that",
    "the",
    "a",
    "my",
    "your",
    "our",
    "tomorrow",
    "today",
    "tonight",
    "later",
    "maybe",
    "really",
    "just",
    "still",
    "already",
    "never",
    "always",
    "soon",
    "meet",
    "call",
    "send",
    "bring",
    "buy",
    "check",
    "book",
    "cook",
    "drive",
    "walk",
    "finish",
    "start",
    "forget",
    "remember",
    "pick up",
    "leave",
    "need",
    "want",
    "think",
    "know",
    "see",
    "love",
    "like",
    "try",
    "dinner",
    "lunch",
    "coffee",
    "train",
    "bus",
    "flight",
    "meeting",
    "party",
    "weekend",
    "photos",
    "tickets",
    "keys",
    "groceries",
    "kids",
    "dog",
    "cat",
    "garden",
    "office",
    "school",
    "beach",
    "movie",
    "game",
    "concert",
    "birthday",
    "present",
    "recipe",
    "doctor",
    "appointment",
    "plan",
    "idea",
    "question",
    "news",
    "weather",
    "rain",
    "sun",
    "at",
    "with",
    "for",
    "after",
    "before",
    "around",
    "near",
    "from",
    "to",
    "about",
    "and",
    "but",
    "because",
    "so",
    "if",
    "great",
    "late",
    "early",
    "nice",
    "busy",
    "tired",
    "happy",
    "ready",
    "sorry",
    "sure",
    "quick",
    "long",
    "cold",
    "warm",
    "new",
    "old",
    "café",
    "naïve",
    "über",
    "Straße",
    "jalapeño",
    "crème brûlée",
    "façade",
    "São Paulo",
    "Zürich",
    "Kraków",
    "日本",
    "東京",
    "привет",
    "ça va",
    "piñata",
    "smörgåsbord",
    "fiancée",
    "résumé",
    "Ελλάδα",
    "mañana",
];

const EMOJI: &[&str] = &[
    "😂", "❤️", "👍", "🎉", "🙏", "😅", "🔥", "🤔", "👀", "☕", "🍕", "✈️", "😍", "🙈", "💪", "🥳",
];

const SHORT_REPLIES: &[&str] = &[
    "ok",
    "Ok 👍",
    "haha",
    "😂😂😂",
    "on my way",
    "thanks!",
    "❤️",
    "lol",
    "sure",
    "yes",
    "no",
    "no worries",
    "see you soon",
    "👍",
    "brb",
    "call me",
    "Wait what?!",
    "😴",
    "Done ✅",
];

const PUNCTUATION: &[&str] = &[".", ".", ".", "!", "?", "…", "!!", "?!"];

pub(crate) fn message_text(rng: &mut ChaCha8Rng) -> String {
    if rng.gen_bool(0.15) {
        return SHORT_REPLIES
            .choose(rng)
            .expect("replies are non-empty")
            .to_string();
    }
    let sentences = if rng.gen_bool(0.05) {
        rng.gen_range(4..=8)
    } else {
        rng.gen_range(1..=3)
    };
    let mut text = String::new();
    for s in 0..sentences {
        if s > 0 {
            text.push(' ');
        }
        sentence(rng, &mut text);
    }
    if rng.gen_bool(0.25) {
        text.push(' ');
        text.push_str(EMOJI.choose(rng).expect("emoji are non-empty"));
    }
    text
}

fn sentence(rng: &mut ChaCha8Rng, out: &mut String) {
    let words = rng.gen_range(3..=14);
    for w in 0..words {
        let word = if rng.gen_bool(0.04) {
            EMOJI.choose(rng).expect("emoji are non-empty").to_string()
        } else if rng.gen_bool(0.03) {
            match rng.gen_range(0..3) {
                0 => format!("{}:{:02}", rng.gen_range(6..23), rng.gen_range(0..4) * 15),
                1 => format!("€{}", rng.gen_range(2..200)),
                _ => format!("{}", rng.gen_range(2..60)),
            }
        } else {
            WORDS.choose(rng).expect("words are non-empty").to_string()
        };
        if w == 0 {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(&word);
        }
        if w + 1 < words && rng.gen_bool(0.08) {
            out.push(',');
        }
    }
    out.push_str(PUNCTUATION.choose(rng).expect("punctuation is non-empty"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn db(root: &Path) -> Connection {
        Connection::open_with_flags(root.join(DB_FILE), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn copy_tree(from: &Path, to: &Path) {
        for (rel, _) in list_files(from).unwrap() {
            let dst = to.join(&rel);
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(from.join(&rel), dst).unwrap();
        }
    }

    #[test]
    fn same_seed_gives_identical_trees() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let sa = create_phone(&a, 7, &PhoneProfile::small()).unwrap();
        let sb = create_phone(&b, 7, &PhoneProfile::small()).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(diff_trees(&a, &b).unwrap(), Vec::<String>::new());
        assert_eq!(list_files(&a).unwrap(), list_files(&b).unwrap());
    }

    #[test]
    fn different_seeds_differ() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        create_phone(&a, 1, &PhoneProfile::small()).unwrap();
        create_phone(&b, 2, &PhoneProfile::small()).unwrap();
        let diffs = diff_trees(&a, &b).unwrap();
        assert!(diffs.contains(&DB_FILE.to_string()), "{diffs:?}");
        assert!(diffs.len() > 1, "media should differ too: {diffs:?}");
        assert_ne!(sample_texts(&a, 5).unwrap(), sample_texts(&b, 5).unwrap());
    }

    #[test]
    fn stats_match_list_files() {
        let dir = tempfile::tempdir().unwrap();
        let profile = PhoneProfile::small();
        let stats = create_phone(dir.path(), 3, &profile).unwrap();
        let files = list_files(dir.path()).unwrap();
        assert_eq!(stats.files as usize, files.len());
        assert_eq!(stats.bytes, files.iter().map(|(_, s)| s).sum::<u64>());
        assert_eq!(stats.messages, profile.messages);
        assert_eq!(stats.media_bytes, profile.media_bytes);
        assert_eq!(stats.bytes, stats.db_bytes + stats.media_bytes);
        let db_size = files.iter().find(|(p, _)| p == DB_FILE).unwrap().1;
        assert_eq!(stats.db_bytes, db_size);
        // No journal/WAL/SHM left over; everything else is media.
        for (path, _) in &files {
            assert!(
                path == DB_FILE || path.starts_with("Media/WhatsApp "),
                "{path}"
            );
        }
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(files, sorted);
    }

    #[test]
    fn database_has_expected_contents() {
        let dir = tempfile::tempdir().unwrap();
        let profile = PhoneProfile::small();
        create_phone(dir.path(), 11, &profile).unwrap();
        let conn = db(dir.path());
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        assert_eq!(
            count(&conn, "SELECT count(*) FROM conversations"),
            i64::from(profile.conversations)
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM messages"),
            i64::from(profile.messages)
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM media"),
            i64::from(profile.media_files)
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM messages WHERE media_path IS NOT NULL"
            ),
            i64::from(profile.media_files)
        );
        assert_eq!(
            count(&conn, "SELECT sum(size) FROM media"),
            profile.media_bytes as i64
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM media JOIN messages ON messages.id = media.message_id
                 WHERE messages.media_path = media.path"
            ),
            i64::from(profile.media_files)
        );
        // Timestamps are increasing and fixed (no wall clock): within 2025-2027.
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM messages a JOIN messages b ON b.id = a.id + 1
                 WHERE b.timestamp_ms < a.timestamp_ms"
            ),
            0
        );
        let (min, max): (i64, i64) = conn
            .query_row(
                "SELECT min(timestamp_ms), max(timestamp_ms) FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(min >= EPOCH_BASE_MS && max < EPOCH_BASE_MS + 2 * 365 * DAY_MS);
        // Unicode and emoji appear somewhere in the texts.
        assert!(
            count(
                &conn,
                "SELECT count(*) FROM messages WHERE length(text) < length(CAST(text AS BLOB))"
            ) > 0
        );
        // Every media row points at a file of that size with the right magic.
        let mut stmt = conn.prepare("SELECT path, mime, size FROM media").unwrap();
        let rows: Vec<(String, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut mimes = HashSet::new();
        for (path, mime, size) in rows {
            let bytes = fs::read(dir.path().join(&path)).unwrap();
            assert_eq!(bytes.len() as i64, size, "{path}");
            let magic: &[u8] = match mime.as_str() {
                "image/jpeg" => b"\xFF\xD8\xFF",
                "video/mp4" => b"\x00\x00\x00\x20ftyp",
                "audio/ogg; codecs=opus" => b"OggS",
                "application/pdf" => b"%PDF",
                other => panic!("unexpected mime {other}"),
            };
            assert!(bytes.starts_with(magic), "{path}");
            mimes.insert(mime);
        }
        assert_eq!(mimes.len(), 4, "all kinds present: {mimes:?}");
    }

    #[test]
    fn media_plan_is_realistic() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let profile = PhoneProfile::demo();
        let plan = plan_phone(&mut rng, &profile);
        assert_eq!(plan.media.len(), profile.media_files as usize);
        assert_eq!(
            plan.media.iter().map(|m| m.size).sum::<u64>(),
            profile.media_bytes
        );
        let paths: HashSet<_> = plan.media.iter().map(|m| &m.path).collect();
        assert_eq!(paths.len(), plan.media.len(), "paths are unique");
        let avg = |kind: MediaKind| {
            let sizes: Vec<u64> = plan
                .media
                .iter()
                .filter(|m| m.kind == kind)
                .map(|m| m.size)
                .collect();
            assert!(!sizes.is_empty(), "{kind:?} present");
            sizes.iter().sum::<u64>() / sizes.len() as u64
        };
        assert!(avg(MediaKind::Video) > avg(MediaKind::Image));
        assert!(avg(MediaKind::Image) > avg(MediaKind::Voice));
        assert!(plan.media.iter().all(|m| m.size > 0));
    }

    #[test]
    fn scale_sizes_sums_exactly() {
        assert_eq!(scale_sizes(&[1, 1, 1], 10), vec![4, 3, 3]);
        assert_eq!(scale_sizes(&[], 10), Vec::<u64>::new());
        assert_eq!(scale_sizes(&[5, 15], 0), vec![0, 0]);
        assert_eq!(scale_sizes(&[100, 300], 1000), vec![250, 750]);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(EPOCH_BASE_MS / DAY_MS), (2025, 3, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(
            media_path(MediaKind::Image, days_from_civil(2026, 1, 1) * DAY_MS, 1),
            "Media/WhatsApp Images/IMG-20260101-WA0001.jpg"
        );
        assert_eq!(
            media_path(
                MediaKind::Voice,
                days_from_civil(2026, 1, 9) * DAY_MS + 5,
                12
            ),
            "Media/WhatsApp Voice Notes/202602/PTT-20260109-WA0012.opus"
        );
    }

    #[test]
    fn diff_trees_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        create_phone(&a, 9, &PhoneProfile::small()).unwrap();
        copy_tree(&a, &b);
        assert!(diff_trees(&a, &b).unwrap().is_empty());

        let files = list_files(&a).unwrap();
        let media: Vec<&String> = files
            .iter()
            .map(|(p, _)| p)
            .filter(|p| *p != DB_FILE)
            .collect();
        // Flip one byte in the middle of a media file.
        let flipped = media[0].clone();
        let mut bytes = fs::read(b.join(&flipped)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        fs::write(b.join(&flipped), bytes).unwrap();
        // Remove one, add one (in a new directory).
        let missing = media[1].clone();
        fs::remove_file(b.join(&missing)).unwrap();
        let extra = "Media/Extra/new.bin".to_string();
        fs::create_dir_all(b.join("Media/Extra")).unwrap();
        fs::write(b.join(&extra), b"hello").unwrap();

        let mut expected = vec![flipped, missing, extra];
        expected.sort();
        assert_eq!(diff_trees(&a, &b).unwrap(), expected);
        // Symmetric: the same paths from the other side.
        assert_eq!(diff_trees(&b, &a).unwrap(), expected);
    }

    #[test]
    fn diff_trees_detects_same_size_change_in_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let mut data = vec![7u8; 200 * 1024 + 3];
        fs::write(a.join("big"), &data).unwrap();
        *data.last_mut().unwrap() = 8;
        fs::write(b.join("big"), &data).unwrap();
        fs::write(a.join("empty"), b"").unwrap();
        fs::write(b.join("empty"), b"").unwrap();
        assert_eq!(diff_trees(&a, &b).unwrap(), vec!["big".to_string()]);
    }

    #[test]
    fn sample_texts_are_in_the_db() {
        let dir = tempfile::tempdir().unwrap();
        create_phone(dir.path(), 4, &PhoneProfile::small()).unwrap();
        let before = list_files(dir.path()).unwrap();
        let texts = sample_texts(dir.path(), 10).unwrap();
        assert_eq!(texts.len(), 10);
        assert_eq!(
            texts,
            sample_texts(dir.path(), 10).unwrap(),
            "deterministic"
        );
        let unique: HashSet<_> = texts.iter().collect();
        assert_eq!(unique.len(), texts.len());
        let conn = db(dir.path());
        for text in &texts {
            assert!(text.chars().count() >= 24, "{text}");
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM messages WHERE text = ?1",
                    [text],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(n >= 1, "{text}");
        }
        drop(conn);
        // Reading does not touch the tree.
        assert_eq!(list_files(dir.path()).unwrap(), before);
    }

    #[test]
    fn refuses_non_empty_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x"), b"x").unwrap();
        assert!(create_phone(dir.path(), 1, &PhoneProfile::small()).is_err());
        let empty = tempfile::tempdir().unwrap();
        create_phone(empty.path(), 1, &PhoneProfile::small()).unwrap();
    }

    /// Run with `cargo nextest run -p device-sim --lib --run-ignored only demo`.
    #[test]
    #[ignore = "writes ~27 MiB; run by hand to measure"]
    fn demo_profile() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let stats = create_phone(dir.path(), 42, &PhoneProfile::demo()).unwrap();
        eprintln!("demo phone: {stats:?} in {:?}", started.elapsed());
        assert_eq!(stats.media_bytes, 24 * MIB);
        assert!(stats.db_bytes > MIB, "db is a few MiB: {}", stats.db_bytes);
    }
}
