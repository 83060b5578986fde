//! Tests of the phone generator: determinism, the database, the media plan, the calendar,
//! tree comparison.

use super::plan::*;
use super::tree::*;
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
