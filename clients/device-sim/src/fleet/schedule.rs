//! The fleet's schedule, computed up front from the seed: which phones
//! exist, how much data each holds, how each protects its key, and what
//! happens to each on which day. The same seed and sizes give the same
//! schedule, so a test can compute what a run must have done and compare.
//!
//! Rules:
//! - profiles (tiny / light / heavy) and scenarios are *allocated*, not
//!   drawn: each gets its weight's share of the phones (largest remainder),
//!   shuffled over the indices; so a mix with a 2 % weight still shows up
//!   in a fleet of 50;
//! - day 0: every phone enables backups (with a 64-digit key or a password)
//!   and, unless dormant, makes its full backup;
//! - days 1..=D: a phone has chat activity and an incremental backup with
//!   its profile's daily chance (idle phones never do);
//! - the scenario's one special event (password change, key rotation, lost
//!   phone, forgotten password, disable) comes on a day drawn from 1..=D
//!   (day 0 when D = 0), after that day's backup; nothing follows a disable.

use std::collections::BTreeMap;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::mix::allocate;
pub use super::mix::{Mix, Named, ProfileKind, ProfileMix, Scenario, ScenarioMix};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The user keeps the 64-digit key.
    Key,
    /// The key is kept by the vault behind a password.
    Password,
}

/// How a password change proves the right to replace the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeProof {
    /// A fresh login with the old password.
    OldPassword,
    /// Proof derived from the 64-digit key the phone holds.
    Key,
}

/// One step of a phone's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    Enable {
        method: Method,
    },
    BackupFull,
    /// A day of chat activity, then an incremental backup.
    Live,
    /// `typo`: the user first types a wrong old password (one wrong guess).
    ChangePassword {
        proof: ChangeProof,
        typo: bool,
    },
    RotateKey,
    /// Restore on a new phone; `typo`: one wrong password first.
    LosePhone {
        typo: bool,
    },
    /// Wrong guesses until the vault erases the key; then start over.
    ForgetPassword,
    Disable,
}

impl Action {
    /// The flows (report rows) this action produces, in order.
    pub fn flows(self) -> &'static [Flow] {
        match self {
            Action::Enable { .. } => &[Flow::Enable],
            Action::BackupFull => &[Flow::BackupFull],
            Action::Live => &[Flow::BackupIncremental],
            Action::ChangePassword { .. } => &[Flow::PasswordChange],
            Action::RotateKey => &[Flow::KeyRotation],
            Action::LosePhone { .. } => &[Flow::Restore],
            Action::ForgetPassword => &[Flow::Lockout, Flow::StartOver],
            Action::Disable => &[Flow::Disable],
        }
    }
}

/// A row of the report: one kind of operation against the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    Enable,
    BackupFull,
    BackupIncremental,
    PasswordChange,
    KeyRotation,
    Restore,
    Lockout,
    StartOver,
    Disable,
}

impl Flow {
    pub const ALL: [Flow; 9] = [
        Flow::Enable,
        Flow::BackupFull,
        Flow::BackupIncremental,
        Flow::PasswordChange,
        Flow::KeyRotation,
        Flow::Restore,
        Flow::Lockout,
        Flow::StartOver,
        Flow::Disable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::Enable => "enable",
            Flow::BackupFull => "backup_full",
            Flow::BackupIncremental => "backup_incremental",
            Flow::PasswordChange => "password_change",
            Flow::KeyRotation => "key_rotation",
            Flow::Restore => "restore",
            Flow::Lockout => "lockout",
            Flow::StartOver => "start_over",
            Flow::Disable => "disable",
        }
    }

    /// Whether the flow commits a new backup generation.
    pub fn commits(self) -> bool {
        matches!(
            self,
            Flow::BackupFull | Flow::BackupIncremental | Flow::KeyRotation | Flow::StartOver
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub day: u32,
    #[serde(flatten)]
    pub action: Action,
}

/// One phone's whole life, decided before the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhonePlan {
    pub index: u32,
    pub account: String,
    /// Seeds the phone's chat data and daily activity.
    pub data_seed: u64,
    pub profile: ProfileKind,
    pub method: Method,
    pub scenario: Scenario,
    /// In order of day, then of occurrence.
    pub events: Vec<Event>,
}

impl PhonePlan {
    pub fn events_on(&self, day: u32) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.day == day)
    }
}

/// What decides a fleet's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    pub seed: u64,
    pub devices: u32,
    pub days: u32,
    pub profile_mix: ProfileMix,
    pub scenario_mix: ScenarioMix,
}

/// The account of phone `index` in a fleet seeded with `seed`.
pub fn account_name(seed: u64, index: u32) -> String {
    format!("fleet-{seed}-{index}")
}

/// Chance that a user first types a wrong password.
const TYPO_SHARE: f64 = 0.3;

/// Every phone's plan, deterministic in `spec`.
pub fn schedule(spec: &FleetSpec) -> Vec<PhonePlan> {
    let mut fleet_rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let profiles = allocate(&spec.profile_mix, spec.devices, &mut fleet_rng);
    let scenarios = allocate(&spec.scenario_mix, spec.devices, &mut fleet_rng);
    (0..spec.devices)
        .map(|index| {
            let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
            rng.set_stream(index as u64 + 1);
            plan_phone(
                spec,
                index,
                profiles[index as usize],
                scenarios[index as usize],
                &mut rng,
            )
        })
        .collect()
}

fn plan_phone(
    spec: &FleetSpec,
    index: u32,
    profile: ProfileKind,
    scenario: Scenario,
    rng: &mut ChaCha8Rng,
) -> PhonePlan {
    // Draw everything in a fixed order, used or not, so that one choice
    // never shifts another.
    let data_seed = rng.next_u64();
    let password_coin = rng.gen_bool(0.5);
    let special_day = if spec.days == 0 {
        0
    } else {
        rng.gen_range(1..=spec.days)
    };
    let variant_coin = rng.gen_bool(0.5);
    let typo = rng.gen_bool(TYPO_SHARE);
    let active: Vec<bool> = (1..=spec.days)
        .map(|_| rng.gen_bool(profile.active_share()))
        .collect();

    let method = if scenario.needs_password() || password_coin {
        Method::Password
    } else {
        Method::Key
    };
    let special = match scenario {
        Scenario::Steady | Scenario::Idle | Scenario::Dormant => None,
        Scenario::ChangePassword => Some(if variant_coin {
            Action::ChangePassword {
                proof: ChangeProof::OldPassword,
                typo,
            }
        } else {
            Action::ChangePassword {
                proof: ChangeProof::Key,
                typo: false,
            }
        }),
        Scenario::RotateKey => Some(Action::RotateKey),
        Scenario::LosePhone => Some(Action::LosePhone {
            typo: typo && method == Method::Password,
        }),
        Scenario::ForgetPassword => Some(Action::ForgetPassword),
        Scenario::Disable => Some(Action::Disable),
    };

    let mut events = vec![Event {
        day: 0,
        action: Action::Enable { method },
    }];
    if scenario == Scenario::Dormant {
        return PhonePlan {
            index,
            account: account_name(spec.seed, index),
            data_seed,
            profile,
            method,
            scenario,
            events,
        };
    }
    events.push(Event {
        day: 0,
        action: Action::BackupFull,
    });
    for day in 0..=spec.days {
        if day > 0 && scenario != Scenario::Idle && active[day as usize - 1] {
            events.push(Event {
                day,
                action: Action::Live,
            });
        }
        if day == special_day
            && let Some(action) = special
        {
            events.push(Event { day, action });
            if action == Action::Disable {
                break;
            }
        }
    }
    PhonePlan {
        index,
        account: account_name(spec.seed, index),
        data_seed,
        profile,
        method,
        scenario,
        events,
    }
}

/// What a schedule must produce, for the report's checks and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Operations per flow (by `Flow::name`).
    pub flows: BTreeMap<String, u64>,
    /// Wrong passwords typed before the right one (one guess each).
    pub typos: u64,
    pub lockouts: u64,
    pub restores: u64,
    pub events: u64,
    pub profiles: BTreeMap<String, u64>,
    pub scenarios: BTreeMap<String, u64>,
    pub password_phones: u64,
}

impl Expected {
    /// Wrong guesses the vault must have counted, with its guess limit.
    pub fn wrong_guesses(&self, max_guesses: u32) -> u64 {
        self.typos + self.lockouts * max_guesses as u64
    }
}

pub fn expected(plans: &[PhonePlan]) -> Expected {
    let mut expected = Expected::default();
    for flow in Flow::ALL {
        expected.flows.insert(flow.name().to_string(), 0);
    }
    for plan in plans {
        *expected
            .profiles
            .entry(plan.profile.name().to_string())
            .or_default() += 1;
        *expected
            .scenarios
            .entry(plan.scenario.name().to_string())
            .or_default() += 1;
        expected.password_phones += (plan.method == Method::Password) as u64;
        for event in &plan.events {
            expected.events += 1;
            for flow in event.action.flows() {
                *expected.flows.entry(flow.name().to_string()).or_default() += 1;
            }
            match event.action {
                Action::ChangePassword { typo: true, .. } | Action::LosePhone { typo: true } => {
                    expected.typos += 1
                }
                _ => {}
            }
            expected.lockouts += (event.action == Action::ForgetPassword) as u64;
            expected.restores += matches!(event.action, Action::LosePhone { .. }) as u64;
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, devices: u32, days: u32) -> FleetSpec {
        FleetSpec {
            seed,
            devices,
            days,
            profile_mix: ProfileMix::default_mix(),
            scenario_mix: ScenarioMix::lifecycle(),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(schedule(&spec(7, 200, 5)), schedule(&spec(7, 200, 5)));
        assert_ne!(schedule(&spec(7, 200, 5)), schedule(&spec(8, 200, 5)));
    }

    #[test]
    fn fifty_phones_cover_every_flow_and_variant() {
        let plans = schedule(&spec(1, 50, 4));
        let expected = expected(&plans);
        for flow in Flow::ALL {
            assert!(expected.flows[flow.name()] > 0, "{} missing", flow.name());
        }
        let has = |f: &dyn Fn(&PhonePlan, &Event) -> bool| {
            plans.iter().any(|p| p.events.iter().any(|e| f(p, e)))
        };
        assert!(has(
            &|p, e| p.method == Method::Key && matches!(e.action, Action::LosePhone { .. })
        ));
        assert!(has(
            &|p, e| p.method == Method::Password && matches!(e.action, Action::LosePhone { .. })
        ));
        assert!(has(
            &|p, e| p.method == Method::Password && e.action == Action::RotateKey
        ));
        assert!(has(&|_, e| matches!(
            e.action,
            Action::ChangePassword {
                proof: ChangeProof::Key,
                ..
            }
        )));
        assert!(has(&|_, e| matches!(
            e.action,
            Action::ChangePassword {
                proof: ChangeProof::OldPassword,
                ..
            }
        )));
        assert!(expected.typos > 0);
    }

    #[test]
    fn mixes_are_allocated_by_share_and_rules_hold() {
        let plans = schedule(&spec(3, 1000, 3));
        let expected = expected(&plans);
        assert_eq!(expected.profiles["tiny"], 700);
        assert_eq!(expected.profiles["heavy"], 50);
        assert_eq!(expected.scenarios["forget-password"], 100);
        assert_eq!(expected.flows["enable"], 1000);
        assert_eq!(expected.flows["backup_full"], 1000);
        for plan in &plans {
            assert_eq!(plan.events[0].day, 0);
            assert!(matches!(plan.events[0].action, Action::Enable { .. }));
            if plan.scenario == Scenario::Dormant {
                assert_eq!(plan.events.len(), 1);
                continue;
            }
            assert_eq!(plan.events[1].action, Action::BackupFull);
            assert!(plan.events.windows(2).all(|w| w[0].day <= w[1].day));
            if let Some(at) = plan.events.iter().position(|e| e.action == Action::Disable) {
                assert_eq!(at, plan.events.len() - 1, "nothing follows a disable");
            }
            if plan.scenario == Scenario::Idle {
                assert_eq!(plan.events.len(), 2);
            }
            if matches!(
                plan.scenario,
                Scenario::ChangePassword | Scenario::ForgetPassword
            ) {
                assert_eq!(plan.method, Method::Password);
            }
        }
    }

    #[test]
    fn an_idle_heavy_fleet_is_mostly_dormant() {
        let mut spec = spec(9, 10_000, 0);
        spec.scenario_mix = ScenarioMix::idle_heavy();
        let expected = expected(&schedule(&spec));
        assert_eq!(expected.scenarios["dormant"], 9000);
        assert_eq!(expected.flows["enable"], 10_000);
        assert_eq!(expected.flows["backup_full"], 1000);
    }

    #[test]
    fn no_days_puts_the_special_event_on_day_zero() {
        let plans = schedule(&spec(5, 100, 0));
        assert!(plans.iter().all(|p| p.events.iter().all(|e| e.day == 0)));
        assert!(expected(&plans).flows["restore"] > 0);
        assert_eq!(expected(&plans).flows["backup_incremental"], 0);
    }
}
