//! Message texts: words, emoji and short replies in sentences.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

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
