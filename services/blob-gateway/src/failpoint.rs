//! Crash failpoints, for tests only: `BLOB_GATEWAY_FAILPOINT=<name>` (or the
//! hidden `--failpoint`) makes the process call [`std::process::abort`] — as
//! abrupt as `kill -9` — when it reaches the named step, so the end-to-end
//! crash test can prove that every step leaves a restorable backup.
//!
//! | name | fires |
//! |---|---|
//! | `put-chunk:after-store` | a chunk is stored whole; its response is not sent |
//! | `put-pack:after-store` | a v3 pack is stored whole; its response is not sent |
//! | `commit:after-manifest` | the new manifest is PUT; the commit record is not |
//! | `commit:after-record` | the commit record is PUT (committed); no garbage deleted yet |
//! | `commit:mid-gc` | the first garbage object of a commit is deleted; the rest are not |
//! | `get-chunk:after-5` | 5 chunk downloads were served; the 6th aborts (an interrupted restore) |
//!
//! The `commit:*` failpoints fire in the v2 and the v3 commit alike.
//!
//! Unset (the default) every [`hit`] is one load of an unset `OnceLock`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every failpoint the gateway has.
pub const NAMES: [&str; 6] = [
    "put-chunk:after-store",
    "put-pack:after-store",
    "commit:after-manifest",
    "commit:after-record",
    "commit:mid-gc",
    "get-chunk:after-5",
];

/// How many times a counted failpoint lets the step pass before aborting.
const COUNTED_PASSES: u32 = 5;
static PASSES: AtomicU32 = AtomicU32::new(0);

static ARMED: OnceLock<&'static str> = OnceLock::new();

/// Parses a failpoint name; the clap value parser of `--failpoint`, so a
/// misspelt name stops the gateway at start instead of never firing.
pub fn parse(name: &str) -> Result<&'static str, String> {
    NAMES
        .iter()
        .copied()
        .find(|known| *known == name)
        .ok_or_else(|| format!("unknown failpoint {name:?}; known: {}", NAMES.join(", ")))
}

/// Arms `name` for the rest of the process. Only the first call counts.
pub fn arm(name: &'static str) {
    if ARMED.set(name).is_ok() {
        tracing::warn!(
            failpoint = name,
            "failpoint armed: the gateway will abort there"
        );
    }
}

/// Aborts the process if `name` is the armed failpoint.
pub fn hit(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unknown failpoint {name}");
    if ARMED.get() == Some(&name) {
        tracing::warn!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// Aborts the process the 6th time `name` is reached, if it is armed.
pub fn hit_after_passes(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unknown failpoint {name}");
    if ARMED.get() == Some(&name) && PASSES.fetch_add(1, Ordering::SeqCst) >= COUNTED_PASSES {
        tracing::warn!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_accepts_exactly_the_known_names() {
        for name in [
            "put-chunk:after-store",
            "commit:after-manifest",
            "commit:after-record",
            "commit:mid-gc",
            "get-chunk:after-5",
        ] {
            assert_eq!(parse(name), Ok(name));
        }
        for bad in [
            "",
            "commit",
            "commit:mid-GC",
            " commit:mid-gc",
            "commit:after-record ",
            "put-chunk",
            "commit:before-manifest",
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains("commit:mid-gc"), "{error}");
        }
    }

    #[test]
    fn an_unarmed_failpoint_does_nothing() {
        for name in NAMES {
            hit(name);
        }
    }
}
