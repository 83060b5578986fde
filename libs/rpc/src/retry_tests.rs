//! The retry loop on a fake clock: scripted attempts per endpoint, every
//! pause and deadline recorded instead of slept.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// Records every sleep and returns at once.
#[derive(Default)]
struct FakeClock {
    slept: Mutex<Vec<Duration>>,
}

impl Sleeper for FakeClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.slept.lock().unwrap().push(duration);
        Box::pin(std::future::ready(()))
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        call_timeout: TIMEOUT,
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(1000),
    }
}

/// Endpoints "a", "b", "c" on a fake clock with the cap as the pause.
fn endpoints(max_attempts: u32) -> (Endpoints<&'static str>, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::default());
    let retry = Retry {
        policy: policy(max_attempts),
        sleeper: clock.clone(),
        jitter: |cap| cap,
        stats: Arc::default(),
    };
    let clients = ["a", "b", "c"].map(|name| (format!("https://{name}:1"), name));
    (Endpoints::new(clients.to_vec(), retry), clock)
}

/// The pauses between attempts (the deadlines are the 30 s sleeps).
fn pauses(clock: &FakeClock) -> Vec<Duration> {
    let slept = clock.slept.lock().unwrap();
    slept.iter().copied().filter(|d| *d != TIMEOUT).collect()
}

enum Step {
    Answer(u32),
    Fail(Status),
    Hang,
}

/// An attempt closure that plays `steps` in order and logs which endpoint
/// each attempt went to.
struct Script {
    steps: Mutex<VecDeque<Step>>,
    visited: Mutex<Vec<&'static str>>,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Mutex::new(steps.into()),
            visited: Mutex::default(),
        }
    }

    async fn attempt(&self, endpoint: &'static str) -> Result<u32, Status> {
        self.visited.lock().unwrap().push(endpoint);
        let step = self.steps.lock().unwrap().pop_front().expect("scripted");
        match step {
            Step::Answer(value) => Ok(value),
            Step::Fail(status) => Err(status),
            Step::Hang => std::future::pending().await,
        }
    }

    fn visited(&self) -> Vec<&'static str> {
        self.visited.lock().unwrap().clone()
    }
}

fn refused() -> Status {
    let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    Status::from_error(Box::new(tonic::ConnectError(Box::new(io))))
}

fn unavailable() -> Status {
    Status::unavailable("storage is down")
}

#[test]
fn the_backoff_cap_doubles_up_to_the_maximum_and_jitter_stays_under_it() {
    let policy = policy(10);
    let caps: Vec<u64> = (1..=6)
        .map(|n| policy.backoff_cap(n).as_millis() as u64)
        .collect();
    assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(policy.backoff_cap(u32::MAX), Duration::from_millis(1000));
    let cap = Duration::from_millis(50);
    let draws: Vec<Duration> = (0..200).map(|_| full_jitter(cap)).collect();
    assert!(draws.iter().all(|d| *d <= cap));
    assert!(
        draws.iter().any(|d| *d < cap / 2) && draws.iter().any(|d| *d > cap / 2),
        "spread over the whole range"
    );
}

#[test]
fn statuses_are_classified_by_what_retrying_can_do() {
    assert_eq!(classify(&refused()), Failure::NotSent);
    assert_eq!(refused().code(), Code::Unavailable);
    assert_eq!(classify(&unavailable()), Failure::Transient);
    assert_eq!(
        classify(&Status::deadline_exceeded("slow")),
        Failure::Transient
    );
    let broken = Status::from_error(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    assert_eq!(broken.code(), Code::Unknown);
    assert_eq!(classify(&broken), Failure::Transient);
    for permanent in [
        Status::invalid_argument("bad"),
        Status::unauthenticated("token"),
        Status::failed_precondition("stale"),
        Status::unknown("a server's own unknown"),
    ] {
        assert_eq!(classify(&permanent), Failure::Permanent, "{permanent:?}");
    }
}

#[tokio::test]
async fn an_idempotent_call_moves_through_the_endpoints_with_growing_pauses() {
    let (endpoints, clock) = endpoints(10);
    let script = Script::new(vec![
        Step::Fail(unavailable()),
        Step::Fail(refused()),
        Step::Fail(Status::deadline_exceeded("slow")),
        Step::Answer(7),
    ]);
    let value = endpoints
        .call("get", Idempotency::Idempotent, |e| script.attempt(e))
        .await
        .unwrap();
    assert_eq!(value, 7);
    assert_eq!(script.visited(), ["a", "b", "c", "a"]);
    assert_eq!(
        pauses(&clock),
        [100, 200, 400].map(Duration::from_millis).to_vec()
    );
    assert_eq!(endpoints.retry().stats.retries(), 3);
    assert_eq!(endpoints.retry().stats.gave_up(), 0);
    // The next call starts where the last one succeeded.
    let script = Script::new(vec![Step::Answer(8)]);
    let clone = endpoints.clone();
    clone
        .call("get", Idempotency::Idempotent, |e| script.attempt(e))
        .await
        .unwrap();
    assert_eq!(script.visited(), ["a"]);
}

#[tokio::test]
async fn an_at_most_once_call_is_retried_only_when_it_was_never_sent() {
    let (endpoints, _clock) = endpoints(10);
    let script = Script::new(vec![Step::Fail(refused()), Step::Answer(1)]);
    let value = endpoints
        .call("spend", Idempotency::AtMostOnce, |e| script.attempt(e))
        .await
        .unwrap();
    assert_eq!(value, 1);
    assert_eq!(script.visited(), ["a", "b"]);

    let script = Script::new(vec![Step::Fail(unavailable()), Step::Answer(2)]);
    let error = endpoints
        .call("spend", Idempotency::AtMostOnce, |e| script.attempt(e))
        .await
        .unwrap_err();
    assert_eq!(error.attempts, 1);
    assert!(
        error.maybe_delivered,
        "the answer was lost, not the request"
    );
    assert_eq!(error.error.code(), Code::Unavailable);
    assert_eq!(script.visited(), ["b"]);
    assert_eq!(endpoints.retry().stats.gave_up(), 1);
}

#[tokio::test]
async fn permanent_errors_end_the_call_at_once() {
    let (endpoints, clock) = endpoints(10);
    let script = Script::new(vec![
        Step::Fail(refused()),
        Step::Fail(Status::permission_denied("no")),
    ]);
    let error = endpoints
        .call("get", Idempotency::Idempotent, |e| script.attempt(e))
        .await
        .unwrap_err();
    assert_eq!(error.error.code(), Code::PermissionDenied);
    assert_eq!(error.attempts, 2);
    assert!(!error.maybe_delivered, "only a refused connection before");
    assert_eq!(pauses(&clock).len(), 1);
    assert_eq!(endpoints.retry().stats.gave_up(), 0);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let (endpoints, clock) = endpoints(4);
    let script = Script::new((0..4).map(|_| Step::Fail(unavailable())).collect());
    let error = endpoints
        .call("get", Idempotency::Idempotent, |e| script.attempt(e))
        .await
        .unwrap_err();
    assert_eq!(error.attempts, 4);
    assert_eq!(script.visited(), ["a", "b", "c", "a"]);
    assert_eq!(pauses(&clock).len(), 3);
    assert_eq!(endpoints.retry().stats.retries(), 3);
    assert_eq!(endpoints.retry().stats.gave_up(), 1);
}

#[tokio::test]
async fn an_attempt_without_an_answer_ends_at_its_deadline() {
    let (endpoints, clock) = endpoints(10);
    let script = Script::new(vec![Step::Hang, Step::Answer(3)]);
    let value = endpoints
        .call("get", Idempotency::Idempotent, |e| script.attempt(e))
        .await
        .unwrap();
    assert_eq!(value, 3);
    assert_eq!(script.visited(), ["a", "b"]);
    let slept = clock.slept.lock().unwrap().clone();
    assert_eq!(slept.iter().filter(|d| **d == TIMEOUT).count(), 2);

    let script = Script::new(vec![Step::Hang]);
    let error = endpoints
        .call("spend", Idempotency::AtMostOnce, |e| script.attempt(e))
        .await
        .unwrap_err();
    assert_eq!(error.error.code(), Code::DeadlineExceeded);
    assert!(error.maybe_delivered);
    assert!(
        error.error.message().contains("https://b:1"),
        "{}",
        error.error
    );
}

#[test]
fn url_lists_split_on_commas() {
    assert_eq!(
        split_urls(" https://a:1, https://b:2,,"),
        ["https://a:1", "https://b:2"]
    );
    assert!(split_urls(" , ").is_empty());
}
