//! A day in a simulated phone's life: new messages in the chat database and
//! a few new photos, deterministic from the seed and the day number; and how
//! many bytes that changed, for the report's uploaded-against-changed column.

use std::fs;
use std::io::Read;
use std::path::Path;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::params;
use serde::Serialize;

use crate::phone::{self, DAY_MS, EPOCH_BASE_MS, HISTORY_MS};

/// How much a day adds.
#[derive(Debug, Clone, Copy)]
pub struct DayActivity {
    pub messages: u32,
    pub photos: u32,
    pub photo_bytes: u64,
}

impl DayActivity {
    /// About 1 % of the demo phone: 200 messages and two 120 KiB photos.
    pub fn typical() -> Self {
        Self {
            messages: 200,
            photos: 2,
            photo_bytes: 120 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DayStats {
    pub day: u32,
    pub new_messages: u32,
    pub new_media_bytes: u64,
    /// Bytes of the chat database that differ from yesterday's (4 KiB pages).
    pub db_changed_bytes: u64,
    /// New media plus changed database bytes.
    pub changed_bytes: u64,
}

const PAGE: usize = 4096;

/// Adds one day of activity to the phone at `root`.
pub fn live_one_day(
    root: &Path,
    seed: u64,
    day: u32,
    activity: DayActivity,
) -> anyhow::Result<DayStats> {
    let db_path = root.join(phone::DB_FILE);
    let before = fs::read(&db_path)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xDA1);
    rng.set_stream(day as u64);
    let day_start = EPOCH_BASE_MS + HISTORY_MS + day as i64 * DAY_MS;

    let mut db = rusqlite::Connection::open(&db_path)?;
    let tx = db.transaction()?;
    let conversations: i64 =
        tx.query_row("SELECT COUNT(*) FROM conversations", [], |r| r.get(0))?;
    let mut next_id: i64 =
        tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM messages", [], |r| {
            r.get(0)
        })?;
    let mut next_media: i64 =
        tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM media", [], |r| {
            r.get(0)
        })?;
    let mut new_media_bytes = 0;
    {
        let mut message = tx.prepare(
            "INSERT INTO messages (id, conversation_id, from_me, timestamp_ms, text, media_path)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut media = tx.prepare(
            "INSERT INTO media (id, message_id, path, mime, size) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for i in 0..activity.messages {
            let conversation = rng.gen_range(1..=conversations.max(1));
            let at = day_start + i as i64 * (DAY_MS / activity.messages.max(1) as i64);
            let photo = (i < activity.photos)
                .then(|| format!("Media/WhatsApp Images/IMG-day{day:04}-WA{i:04}.jpg"));
            message.execute(params![
                next_id,
                conversation,
                rng.gen_bool(0.5),
                at,
                phone::message_text(&mut rng),
                photo
            ])?;
            if let Some(path) = photo {
                let mut bytes = vec![0u8; activity.photo_bytes as usize];
                rng.fill_bytes(&mut bytes);
                bytes[..4].copy_from_slice(b"\xFF\xD8\xFF\xE0");
                let full = root.join(&path);
                fs::create_dir_all(full.parent().expect("media paths have a folder"))?;
                fs::write(&full, &bytes)?;
                media.execute(params![
                    next_media,
                    next_id,
                    path,
                    "image/jpeg",
                    bytes.len() as i64
                ])?;
                new_media_bytes += bytes.len() as u64;
                next_media += 1;
            }
            next_id += 1;
        }
    }
    tx.commit()?;
    db.close().map_err(|(_, e)| e)?;

    let db_changed_bytes = changed_pages(&before, &db_path)? * PAGE as u64;
    Ok(DayStats {
        day,
        new_messages: activity.messages,
        new_media_bytes,
        db_changed_bytes,
        changed_bytes: new_media_bytes + db_changed_bytes,
    })
}

/// Pages of `after` that differ from `before` or are new.
fn changed_pages(before: &[u8], after: &Path) -> std::io::Result<u64> {
    let mut file = fs::File::open(after)?;
    let mut page = vec![0u8; PAGE];
    let mut changed = 0;
    let mut index = 0;
    loop {
        let n = file.read(&mut page)?;
        if n == 0 {
            return Ok(changed);
        }
        let old = before.get(index * PAGE..(index * PAGE + n).min(before.len()));
        if old != Some(&page[..n]) {
            changed += 1;
        }
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::{PhoneProfile, create_phone};

    #[test]
    fn a_day_adds_messages_and_photos_deterministically() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut stats = Vec::new();
        for dir in &dirs {
            let root = dir.path().join("p");
            create_phone(&root, 5, &PhoneProfile::small()).unwrap();
            stats.push(live_one_day(&root, 5, 1, DayActivity::typical()).unwrap());
        }
        let (a, b) = (dirs[0].path().join("p"), dirs[1].path().join("p"));
        assert!(phone::diff_trees(&a, &b).unwrap().is_empty());
        assert_eq!(stats[0].new_media_bytes, 2 * 120 * 1024);
        assert!(stats[0].db_changed_bytes > 0);
        let db = rusqlite::Connection::open(a.join(phone::DB_FILE)).unwrap();
        let count: i64 = db
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 200 + 200);
    }
}
