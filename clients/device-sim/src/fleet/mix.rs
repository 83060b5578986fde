//! What the fleet is made of: phone sizes ([`ProfileKind`]), what happens
//! to a phone ([`Scenario`]), and the weighted mixes of both that the
//! command line takes, allocated over the phones by share.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::day::DayActivity;
use crate::phone::PhoneProfile;

const KIB: u64 = 1024;

/// How much chat a phone holds and makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// About 60 KiB: a phone that is barely used.
    Tiny,
    /// About 300 KiB.
    Light,
    /// About 3 MiB: the few heavy users.
    Heavy,
}

impl ProfileKind {
    pub const ALL: [ProfileKind; 3] = [ProfileKind::Tiny, ProfileKind::Light, ProfileKind::Heavy];

    /// The phone's data on day 0. Scaled down from real phones so that a
    /// thousand of them fit on a laptop's disk and in a demo's time.
    pub fn phone(self) -> PhoneProfile {
        match self {
            ProfileKind::Tiny => PhoneProfile {
                conversations: 3,
                messages: 60,
                media_files: 2,
                media_bytes: 24 * KIB,
            },
            ProfileKind::Light => PhoneProfile {
                conversations: 8,
                messages: 600,
                media_files: 6,
                media_bytes: 192 * KIB,
            },
            ProfileKind::Heavy => PhoneProfile {
                conversations: 20,
                messages: 6_000,
                media_files: 30,
                media_bytes: 2560 * KIB,
            },
        }
    }

    /// What one active day adds.
    pub fn activity(self) -> DayActivity {
        match self {
            ProfileKind::Tiny => DayActivity {
                messages: 10,
                photos: 1,
                photo_bytes: 4 * KIB,
            },
            ProfileKind::Light => DayActivity {
                messages: 40,
                photos: 1,
                photo_bytes: 16 * KIB,
            },
            ProfileKind::Heavy => DayActivity {
                messages: 200,
                photos: 2,
                photo_bytes: 64 * KIB,
            },
        }
    }

    /// The chance that a given day has chat activity (and a backup).
    pub fn active_share(self) -> f64 {
        match self {
            ProfileKind::Tiny => 0.5,
            ProfileKind::Light => 0.7,
            ProfileKind::Heavy => 0.9,
        }
    }
}

/// The one thing that happens to a phone besides its daily backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Daily backups only.
    Steady,
    /// Enables backups, makes the full backup, then does nothing.
    Idle,
    /// Enables backups and waits (for Wi-Fi, say) the whole run: its data
    /// waits on disk, it never backs up.
    Dormant,
    /// Changes the password (password phones only).
    ChangePassword,
    RotateKey,
    /// Loses the phone and restores on a new one.
    LosePhone,
    /// Forgets the password: lockout, then start over (password phones only).
    ForgetPassword,
    Disable,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Steady,
        Scenario::Idle,
        Scenario::Dormant,
        Scenario::ChangePassword,
        Scenario::RotateKey,
        Scenario::LosePhone,
        Scenario::ForgetPassword,
        Scenario::Disable,
    ];

    pub(super) fn needs_password(self) -> bool {
        matches!(self, Scenario::ChangePassword | Scenario::ForgetPassword)
    }
}

/// Something with a name on the command line.
pub trait Named: Copy + Ord + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

impl Named for ProfileKind {
    const ALL: &'static [Self] = &ProfileKind::ALL;
    fn name(self) -> &'static str {
        match self {
            ProfileKind::Tiny => "tiny",
            ProfileKind::Light => "light",
            ProfileKind::Heavy => "heavy",
        }
    }
}

impl Named for Scenario {
    const ALL: &'static [Self] = &Scenario::ALL;
    fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Idle => "idle",
            Scenario::Dormant => "dormant",
            Scenario::ChangePassword => "change-password",
            Scenario::RotateKey => "rotate-key",
            Scenario::LosePhone => "lose-phone",
            Scenario::ForgetPassword => "forget-password",
            Scenario::Disable => "disable",
        }
    }
}

/// Weights over profiles or scenarios: `tiny=70,light=25,heavy=5`, a bare
/// name (`tiny` = all tiny), or a preset name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix<T>(pub Vec<(T, u32)>);

pub type ProfileMix = Mix<ProfileKind>;
pub type ScenarioMix = Mix<Scenario>;

impl ProfileMix {
    /// Many light users, a few heavy ones.
    pub fn default_mix() -> Self {
        Mix(vec![
            (ProfileKind::Tiny, 70),
            (ProfileKind::Light, 25),
            (ProfileKind::Heavy, 5),
        ])
    }
}

impl ScenarioMix {
    /// Every lifecycle event, often enough that 50 phones see each.
    pub fn lifecycle() -> Self {
        Mix(vec![
            (Scenario::Steady, 20),
            (Scenario::Idle, 5),
            (Scenario::ChangePassword, 15),
            (Scenario::RotateKey, 15),
            (Scenario::LosePhone, 20),
            (Scenario::ForgetPassword, 10),
            (Scenario::Disable, 15),
        ])
    }

    /// Nine in ten phones enabled but dormant, most of the rest idle after
    /// their first backup, a few living through everything.
    pub fn idle_heavy() -> Self {
        Mix(vec![
            (Scenario::Dormant, 900),
            (Scenario::Idle, 40),
            (Scenario::Steady, 20),
            (Scenario::ChangePassword, 8),
            (Scenario::RotateKey, 8),
            (Scenario::LosePhone, 12),
            (Scenario::ForgetPassword, 6),
            (Scenario::Disable, 6),
        ])
    }
}

impl<T: Named> FromStr for Mix<T>
where
    Mix<T>: Preset,
{
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(preset) = Self::preset(text) {
            return Ok(preset);
        }
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let item = T::ALL
                .iter()
                .copied()
                .find(|t| t.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = T::ALL.iter().map(|t| t.name()).collect();
                    format!(
                        "unknown name {name:?}; expected one of {}",
                        names.join(", ")
                    )
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} of {name} is not a whole number"))?;
            weights.push((item, weight));
        }
        if weights.iter().map(|(_, w)| *w as u64).sum::<u64>() == 0 {
            return Err(format!("the mix {text:?} has no positive weight"));
        }
        Ok(Mix(weights))
    }
}

impl<T: Named> fmt::Display for Mix<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(t, w)| format!("{}={w}", t.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Named mixes.
pub trait Preset: Sized {
    fn preset(name: &str) -> Option<Self>;
}

impl Preset for ProfileMix {
    fn preset(name: &str) -> Option<Self> {
        (name == "default").then(Self::default_mix)
    }
}

impl Preset for ScenarioMix {
    fn preset(name: &str) -> Option<Self> {
        match name {
            "lifecycle" => Some(Self::lifecycle()),
            "idle-heavy" => Some(Self::idle_heavy()),
            _ => None,
        }
    }
}

/// `n` items with the mix's proportions (largest remainder), shuffled.
pub(super) fn allocate<T: Named>(mix: &Mix<T>, n: u32, rng: &mut ChaCha8Rng) -> Vec<T> {
    let total: u64 = mix.0.iter().map(|(_, w)| *w as u64).sum::<u64>().max(1);
    let mut counts: Vec<(T, u64, u64)> = mix
        .0
        .iter()
        .map(|&(t, w)| {
            let exact = n as u64 * w as u64;
            (t, exact / total, exact % total)
        })
        .collect();
    let assigned: u64 = counts.iter().map(|c| c.1).sum();
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(counts[i].2));
    for &i in by_remainder.iter().take((n as u64 - assigned) as usize) {
        counts[i].1 += 1;
    }
    let mut items: Vec<T> = counts
        .iter()
        .flat_map(|&(t, count, _)| std::iter::repeat_n(t, count as usize))
        .collect();
    items.shuffle(rng);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_from_presets_names_and_weights() {
        assert_eq!(
            "default".parse::<ProfileMix>().unwrap(),
            ProfileMix::default_mix()
        );
        assert_eq!(
            "tiny".parse::<ProfileMix>().unwrap(),
            Mix(vec![(ProfileKind::Tiny, 1)])
        );
        let mix: ScenarioMix = "idle=9, lose-phone=1".parse().unwrap();
        assert_eq!(mix.to_string(), "idle=9,lose-phone=1");
        assert!("huge".parse::<ProfileMix>().unwrap_err().contains("tiny"));
        assert!("tiny=0".parse::<ProfileMix>().is_err());
        assert!("tiny=x".parse::<ProfileMix>().is_err());
    }
}
