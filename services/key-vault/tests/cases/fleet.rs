//! The vault fleet on a real three-member etcd cluster (Debian's
//! `etcd-server`): three replicas sharing it count guesses exactly across
//! replicas, losing a minority of etcd changes nothing, and losing the
//! majority makes every store-backed call answer UNAVAILABLE without
//! spending a guess; once the majority is back the count is where it was.

use std::sync::Arc;

use tonic::Code;

use crate::etcd::EtcdCluster;
use crate::support::*;
use crate::{KEY_PROOF, PASSWORD, WRONG};

/// Runs a vault call again while it answers UNAVAILABLE, as a device does
/// while the store regains its majority.
macro_rules! until_available {
    ($call:expr) => {
        loop {
            match $call {
                Err(status) if status.code() == Code::Unavailable => continue,
                other => break other,
            }
        }
    };
}

/// Three replicas of one fleet over `cluster`, with the files of `dir`
/// (one sealing key, one identity created by the first to start).
async fn replicas(
    dir: &std::path::Path,
    cluster: &EtcdCluster,
    max_guesses: u32,
) -> Vec<TestVault> {
    let mut vaults = Vec::new();
    for _ in 0..3 {
        let mut config = config(dir, policy(max_guesses));
        config.store = key_vault::config::StoreKind::Etcd;
        config.etcd_endpoints = cluster.endpoints.clone();
        let clock = key_vault::clock::ManualClock::new();
        vaults.push(
            TestVault::start_with_config(dir, config, clock)
                .await
                .unwrap(),
        );
    }
    let fingerprints: Vec<&str> = vaults.iter().map(|v| v.fingerprint.as_str()).collect();
    assert!(
        fingerprints.windows(2).all(|w| w[0] == w[1]),
        "one fleet identity"
    );
    vaults
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_logins_over_three_replicas_spend_exactly_n_while_an_etcd_member_dies() {
    const LOGINS: usize = 100;
    const N: u32 = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    let vaults = replicas(dir.path(), &cluster, N).await;
    vaults[0]
        .client("alice")
        .await
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(LOGINS + 1));
    let mut tasks = Vec::new();
    for i in 0..LOGINS {
        let mut client = vaults[i % vaults.len()].client("alice").await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            // Answered, whichever member dies: the replica's store moves
            // to a live member and rides out the election.
            client
                .login_start(WRONG)
                .await
                .map(|pending| pending.guesses_remaining)
        }));
    }
    barrier.wait().await;
    cluster.kill(1);

    let mut served = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(remaining) => served.push(remaining),
            Err(status) => {
                assert_reason::<()>(Err(status), "key-erased");
                refused += 1;
            }
        }
    }
    served.sort_unstable();
    // Every guess was answered with its own count: no replica spent a guess
    // another had spent, none was lost with the dead member, and exactly N
    // were evaluated.
    assert_eq!(served, (0..N).collect::<Vec<_>>());
    assert_eq!(served.len() + refused, LOGINS);
    // The record is gone for good, on every replica.
    for vault in &vaults {
        let mut client = vault.client("alice").await;
        let answer = client.login_start(PASSWORD).await;
        assert_reason(answer.map(drop), "key-erased");
    }
    for vault in vaults {
        vault.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_etcd_majority_every_call_is_unavailable_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    let vaults = replicas(dir.path(), &cluster, 10).await;
    let mut alice = vaults[0].client("alice").await;
    alice
        .register(PASSWORD, &random_key(), KEY_PROOF, None)
        .await
        .unwrap();
    for expected in [9, 8, 7] {
        assert_eq!(
            alice.login_start(WRONG).await.unwrap().guesses_remaining,
            expected
        );
    }

    cluster.kill(0);
    cluster.kill(2);
    let attempts = vaults.len() as u32;
    for vault in &vaults {
        let mut client = vault.client("alice").await;
        let status = client.login_start(WRONG).await.map(drop).unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("majority"), "{status:?}");
        assert!(status.message().contains("may still count"), "{status:?}");
    }

    cluster.restart(0).unwrap();
    cluster.restart(2).unwrap();
    cluster.wait_for_quorum().await.unwrap();
    // No guess was evaluated while the majority was away; a refused
    // attempt's write may still have been committed when it came back
    // (Raft keeps the lone member's proposal), never more than one per
    // attempt.
    let mut alice = vaults[1].client("alice").await;
    let remaining = until_available!(alice.login_start(WRONG).await)
        .unwrap()
        .guesses_remaining;
    assert!((6 - attempts..=6).contains(&remaining), "{remaining}");
    // The record is consistent: the right password resets the count.
    until_available!(alice.login(PASSWORD).await)
        .unwrap()
        .success();
    let remaining = until_available!(alice.login_start(WRONG).await)
        .unwrap()
        .guesses_remaining;
    assert_eq!(remaining, 9);
    for vault in vaults {
        vault.stop().await;
    }
}
