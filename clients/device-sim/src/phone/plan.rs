//! Planning: everything about the phone except message texts and media contents.

use std::collections::HashSet;

use rand::Rng;
use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::*;

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

pub(super) fn plan_phone(rng: &mut ChaCha8Rng, profile: &PhoneProfile) -> PhonePlan {
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
pub(super) fn scale_sizes(raw: &[u64], total: u64) -> Vec<u64> {
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
pub(super) fn media_path(kind: MediaKind, timestamp_ms: i64, counter: u32) -> String {
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
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
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
