//! One retry policy for every client call of the workspace: several
//! endpoints per service, a deadline on every attempt, retries with
//! exponential backoff and full jitter on UNAVAILABLE, DEADLINE_EXCEEDED and
//! broken connections, moving to the next endpoint after each failure.
//!
//! Whether a failed call may be retried depends on the call: an
//! [`Idempotency::Idempotent`] call is retried on any transient failure; an
//! [`Idempotency::AtMostOnce`] call (one that spends something, such as a
//! vault guess) only when the request provably never reached a server (the
//! connection could not be opened, or the server refused the stream). A
//! [`CallError`] says whether an attempt may have reached a server, so the
//! caller can tell the user what may have happened.
//!
//! Time is injected ([`Sleeper`]): the backoff pauses and the per-attempt
//! deadline both go through it, so tests run on a fake clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use rand::Rng;
use tonic::{Code, Status};
use tracing::{debug, warn};

/// How a client retries; the clap block every client flattens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct RetryPolicy {
    /// Deadline of every call attempt (a whole streamed chunk included).
    #[arg(
        long = "call-timeout",
        env = "E2EB_CALL_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub call_timeout: Duration,
    /// Attempts per call, the first included (1: never retry).
    #[arg(
        long = "retry-attempts",
        env = "E2EB_RETRY_ATTEMPTS",
        default_value_t = 12,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub max_attempts: u32,
    /// First backoff cap; each retry doubles it, up to --retry-max-backoff.
    #[arg(
        long = "retry-initial-backoff",
        env = "E2EB_RETRY_INITIAL_BACKOFF",
        default_value = "100ms",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub initial_backoff: Duration,
    #[arg(
        long = "retry-max-backoff",
        env = "E2EB_RETRY_MAX_BACKOFF",
        default_value = "2s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            max_attempts: 12,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt per call (still with its deadline).
    pub fn once(self) -> Self {
        Self {
            max_attempts: 1,
            ..self
        }
    }

    /// The most the pause after failed attempt number `failed` (1-based)
    /// may last: the initial backoff doubled per earlier failure, capped.
    pub fn backoff_cap(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// "Full jitter": a pause drawn uniformly from zero to the cap, so clients
/// that failed together do not come back together.
pub fn full_jitter(cap: Duration) -> Duration {
    let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
}

/// Where the retry loop waits: the real clock, or a fake one in tests.
pub trait Sleeper: Send + Sync + 'static {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Counts over every call made with one [`Retry`] (a whole fleet run).
#[derive(Debug, Default)]
pub struct RetryStats {
    retries: AtomicU64,
    gave_up: AtomicU64,
}

impl RetryStats {
    /// Attempts made after a failed one.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Calls that failed after a transient failure and were not retried
    /// (attempts exhausted, or a call not safe to repeat).
    pub fn gave_up(&self) -> u64 {
        self.gave_up.load(Ordering::Relaxed)
    }
}

/// The policy, the clock, the jitter and the counters that clients share.
#[derive(Clone)]
pub struct Retry {
    pub policy: RetryPolicy,
    pub sleeper: Arc<dyn Sleeper>,
    pub jitter: fn(Duration) -> Duration,
    pub stats: Arc<RetryStats>,
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl Retry {
    /// `policy` on the real clock with full jitter and fresh counters.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            sleeper: Arc::new(TokioSleeper),
            jitter: full_jitter,
            stats: Arc::default(),
        }
    }
}

/// Whether a call may be repeated after it may have reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it changes nothing (reads, content-addressed writes,
    /// conditional writes): retried on every transient failure.
    Idempotent,
    /// It spends something: retried only when it never reached a server.
    AtMostOnce,
}

/// What a failed attempt means for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request never reached a server: any call may be sent again.
    NotSent,
    /// It may or may not have reached a server, and trying again (here or
    /// elsewhere) may succeed.
    Transient,
    /// The server answered, or the failure is one retrying cannot fix.
    Permanent,
}

/// Errors the retry loop can classify, and make a deadline error of.
pub trait Retryable: From<Status> {
    fn failure(&self) -> Failure;
}

impl Retryable for Status {
    fn failure(&self) -> Failure {
        classify(self)
    }
}

/// Classifies a call's status: locally made statuses carry the transport
/// error as their source (tonic's `ConnectError`, hyper's, h2's).
pub fn classify(status: &Status) -> Failure {
    if crate::client::untrusted_server(status).is_some() {
        return Failure::Permanent;
    }
    if never_sent(status) {
        return Failure::NotSent;
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Failure::Transient,
        // A connection that broke mid-call: tonic says Unknown, with the
        // transport error as the source.
        Code::Unknown if std::error::Error::source(status).is_some() => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// Whether the source chain proves the request was never processed: the
/// connection could not be made, hyper dropped the request before sending
/// it, or the server refused the stream (REFUSED_STREAM, also what a
/// GOAWAY'd stream gets).
fn never_sent(status: &Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A call that failed for good.
#[derive(Debug)]
pub struct CallError<E> {
    /// The last attempt's error.
    pub error: E,
    /// Attempts made.
    pub attempts: u32,
    /// Whether some attempt failed after it may have reached a server (a
    /// lost answer): the operation may have taken effect.
    pub maybe_delivered: bool,
}

/// Several endpoints of one service, each with its own client, tried in
/// turn: a failure moves every later call to the next endpoint.
/// Clones share the endpoint list and which endpoint is current.
#[derive(Clone)]
pub struct Endpoints<C> {
    clients: Arc<[(String, C)]>,
    current: Arc<AtomicUsize>,
    retry: Retry,
}

impl<C> fmt::Debug for Endpoints<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field(
                "urls",
                &self.clients.iter().map(|(url, _)| url).collect::<Vec<_>>(),
            )
            .field("current", &self.current.load(Ordering::Relaxed))
            .finish()
    }
}

/// A comma-separated list of service URLs, trimmed, empties dropped.
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect()
}

impl<C: Clone> Endpoints<C> {
    /// `clients` by URL, first preferred. Panics when empty: callers build
    /// it from [`split_urls`] and refuse an empty list first.
    pub fn new(clients: Vec<(String, C)>, retry: Retry) -> Self {
        assert!(!clients.is_empty(), "at least one endpoint");
        Self {
            clients: clients.into(),
            current: Arc::default(),
            retry,
        }
    }

    /// The same endpoints with another policy, clock or counters.
    pub fn with_retry(self, retry: Retry) -> Self {
        Self { retry, ..self }
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|(url, _)| url.as_str())
    }

    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// Runs `attempt` against the current endpoint until it succeeds, fails
    /// for good, or may not be repeated. Each attempt has the policy's
    /// deadline; between attempts the loop moves to the next endpoint and
    /// pauses for a jittered, exponentially growing time.
    pub async fn call<T, E, F, Fut>(
        &self,
        what: &'static str,
        idempotency: Idempotency,
        mut attempt: F,
    ) -> Result<T, CallError<E>>
    where
        E: Retryable + fmt::Display,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let policy = &self.retry.policy;
        let mut attempts = 0;
        let mut maybe_delivered = false;
        loop {
            let index = self.current.load(Ordering::Relaxed) % self.clients.len();
            let (url, client) = &self.clients[index];
            attempts += 1;
            let deadline = self.retry.sleeper.sleep(policy.call_timeout);
            let outcome = tokio::select! {
                biased;
                outcome = attempt(client.clone()) => outcome,
                () = deadline => Err(E::from(Status::deadline_exceeded(format!(
                    "no answer from {url} within {:?}", policy.call_timeout
                )))),
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let failure = error.failure();
            if failure == Failure::Transient {
                maybe_delivered = true;
            }
            let may_retry = match failure {
                Failure::NotSent => true,
                Failure::Transient => idempotency == Idempotency::Idempotent,
                Failure::Permanent => false,
            };
            if !may_retry || attempts >= policy.max_attempts {
                if failure != Failure::Permanent {
                    self.retry.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                    warn!(call = what, url, attempts, %error, "giving up on the call");
                }
                return Err(CallError {
                    error,
                    attempts,
                    maybe_delivered,
                });
            }
            let _ = self.current.compare_exchange(
                index,
                (index + 1) % self.clients.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            self.retry.stats.retries.fetch_add(1, Ordering::Relaxed);
            let pause = (self.retry.jitter)(policy.backoff_cap(attempts));
            debug!(call = what, url, attempts, ?failure, ?pause, %error, "retrying");
            self.retry.sleeper.sleep(pause).await;
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
