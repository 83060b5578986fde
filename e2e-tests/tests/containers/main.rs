//! End-to-end in containers: the stack from our own images (`make images`)
//! on a private Docker network, driven through `testcontainers`, a fleet of
//! simulated phones against it, then faults on real hosts (a vault replica
//! stopped, an etcd member stopped, the gateway stopped and started again,
//! S3 paused, the gateway cut off the network), each test checking what
//! must hold afterwards. Without a Docker Engine every test skips with one
//! line; the process-based e2e tests (`tests/e2e`) still cover the system.

/// Skips the test (one line on stderr) where no Docker Engine answers.
macro_rules! docker_or_skip {
    () => {
        if let Err(why) = crate::docker::available() {
            eprintln!(
                "skipped: {why}; the process-based e2e tests (tests/e2e) still cover the system"
            );
            return;
        }
    };
}

mod docker;
mod faults;
mod fleet;
mod stack;
