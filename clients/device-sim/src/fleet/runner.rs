//! Runs a fleet day by day: on each simulated day, every phone with events
//! that day gets one turn; at most `concurrency` turns run at once (a
//! semaphore permit is taken *before* a task is spawned, so waiting phones
//! are not tasks, only their small [`PhoneState`] in a vector).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_token::AccountId;
use anyhow::{Context, ensure};
use backup_client::vault::KsfStrength;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::schedule::{FleetSpec, Method, PhonePlan, schedule};
use super::turn::{self, PhoneState, Sample, Shared};
use crate::services::Services;

/// Everything a fleet run needs.
pub struct FleetRun {
    pub spec: FleetSpec,
    /// Phones in flight at once.
    pub concurrency: usize,
    pub services: Services,
    pub vault_fingerprint: String,
    pub ksf: KsfStrength,
    /// The phones live in `<work_dir>/fleet-<seed>`, emptied first.
    pub work_dir: PathBuf,
    /// Show a progress bar (only ever on a terminal).
    pub progress: bool,
}

/// What a run produced, before it is summarised.
pub struct FleetOutcome {
    pub plans: Vec<PhonePlan>,
    pub samples: Vec<Sample>,
    pub wall_secs: f64,
    pub max_guesses: u32,
    /// Events not run because their phone had stopped on an error.
    pub skipped_events: u64,
    /// Seconds from the start at which each simulated day began.
    pub day_starts_secs: Vec<f64>,
    /// Call attempts repeated after a failed one (outages ridden out).
    pub retries: u64,
    /// Calls that gave up after transient failures.
    pub calls_given_up: u64,
}

impl FleetRun {
    pub async fn run(self) -> anyhow::Result<FleetOutcome> {
        ensure!(self.concurrency > 0, "the concurrency must be at least 1");
        let plans = Arc::new(schedule(&self.spec));
        let phones_dir = self.work_dir.join(format!("fleet-{}", self.spec.seed));
        if phones_dir.exists() {
            std::fs::remove_dir_all(&phones_dir)
                .with_context(|| format!("empty {}", phones_dir.display()))?;
        }
        std::fs::create_dir_all(&phones_dir)
            .with_context(|| format!("create {}", phones_dir.display()))?;
        let max_guesses = if plans.iter().any(|p| p.method == Method::Password) {
            self.vault_guess_limit().await?
        } else {
            0
        };
        let retry_stats = self.services.retry.stats.clone();
        let shared = Arc::new(Shared {
            services: self.services,
            vault_fingerprint: self.vault_fingerprint,
            ksf: self.ksf,
            phones_dir,
            max_guesses,
            started: Instant::now(),
        });

        let total_events: u64 = plans.iter().map(|p| p.events.len() as u64).sum();
        let bar = progress_bar(self.progress, total_events);
        let limit = Arc::new(Semaphore::new(self.concurrency));
        let mut states: Vec<Option<PhoneState>> =
            plans.iter().map(|_| Some(PhoneState::default())).collect();
        let mut samples = Vec::new();
        let mut skipped_events = 0;
        let mut day_starts_secs = Vec::new();
        for day in 0..=self.spec.days {
            day_starts_secs.push(shared.started.elapsed().as_secs_f64());
            bar.set_message(format!("day {day}/{}", self.spec.days));
            let mut turns = JoinSet::new();
            for plan in plans.iter() {
                let events = plan.events_on(day).count() as u64;
                if events == 0 {
                    continue;
                }
                let index = plan.index as usize;
                let state = states[index].as_ref().expect("no turn in flight");
                if state.finished {
                    skipped_events += events;
                    bar.inc(events);
                    continue;
                }
                let permit = limit
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let mut state = states[index].take().expect("no turn in flight");
                let (shared, plans) = (shared.clone(), plans.clone());
                turns.spawn(async move {
                    let plan = &plans[index];
                    let samples = turn::run_turn(&shared, plan, day, &mut state).await;
                    drop(permit);
                    (index, state, samples, events)
                });
                // Collect what finished meanwhile, so results do not pile up.
                while let Some(done) = turns.try_join_next() {
                    collect(done, &mut states, &mut samples, &bar)?;
                }
            }
            while let Some(done) = turns.join_next().await {
                collect(done, &mut states, &mut samples, &bar)?;
            }
        }
        bar.finish_and_clear();
        let wall_secs = shared.started.elapsed().as_secs_f64();
        Ok(FleetOutcome {
            plans: Arc::try_unwrap(plans).unwrap_or_else(|plans| (*plans).clone()),
            samples,
            wall_secs,
            max_guesses,
            skipped_events,
            day_starts_secs,
            retries: retry_stats.retries(),
            calls_given_up: retry_stats.gave_up(),
        })
    }

    /// Asks the vault its guess limit, and checks it is the pinned vault.
    async fn vault_guess_limit(&self) -> anyhow::Result<u32> {
        let account = AccountId::new(format!("fleet-{}-probe", self.spec.seed))?;
        let vault = self
            .services
            .vault(&account, &self.vault_fingerprint, self.ksf)?;
        let endpoint = &self.services.vault_endpoint;
        let (fingerprint, max_guesses) = vault
            .info()
            .await
            .with_context(|| format!("ask the key vault at {endpoint}"))?;
        ensure!(
            fingerprint.eq_ignore_ascii_case(self.vault_fingerprint.trim()),
            "the vault at {endpoint} advertises fingerprint {fingerprint}, not the pinned {}",
            self.vault_fingerprint.trim()
        );
        Ok(max_guesses)
    }
}

type TurnResult = (usize, PhoneState, Vec<Sample>, u64);

fn collect(
    done: Result<TurnResult, tokio::task::JoinError>,
    states: &mut [Option<PhoneState>],
    samples: &mut Vec<Sample>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let (index, state, turn_samples, events) = done.context("a phone's turn panicked")?;
    states[index] = Some(state);
    samples.extend(turn_samples);
    bar.inc(events);
    Ok(())
}

/// A bar on stderr when asked for and stderr is a terminal; hidden otherwise.
fn progress_bar(wanted: bool, events: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(events), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} events, eta {eta}",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
