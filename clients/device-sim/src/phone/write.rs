//! Writing the planned phone: the chat database and the media files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, ensure};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{Connection, params};

use super::*;

pub(super) fn write_db(path: &Path, plan: &PhonePlan, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
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
pub(super) fn write_media_file(
    path: &Path,
    seed: u64,
    index: u64,
    media: &MediaPlan,
) -> io::Result<()> {
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
