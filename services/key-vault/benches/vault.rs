//! What the vault costs, printed as a table (no harness):
//!
//! 1. opaque-ke alone, in this process: `ServerRegistration::start` +
//!    `finish` and `ServerLogin::start` + `finish` on precomputed client
//!    messages.
//! 2. The vault through gRPC on loopback (in-process server, real SQLite
//!    file with fsync on every commit): the time of the RPCs of one
//!    registration and one login, the client's own work (blinding, Argon2,
//!    envelope) excluded by timing only the RPC round trips.
//! 3. Logins per second with 8 and 32 concurrent clients (separate
//!    accounts): the vault's side alone (LoginStart + verdict-only
//!    LoginFinish with precomputed requests), then full logins including the
//!    clients' work on the same two cores, with p50 / p99 per login, side by
//!    side for three setups in one run: SQLite with TLS (the default),
//!    SQLite in plaintext (what TLS costs), and three vault replicas on a
//!    three-member etcd cluster (the fleet; Debian's `etcd-server`).
//!
//! `cargo bench -p key-vault --bench vault` (release), or the dev-profile
//! binary that `cargo build --workspace --all-targets` leaves in
//! `target/debug/deps/vault-*` (dependencies at opt-level 2).
//! `VAULT_BENCH_ITERATIONS` (default 300) and `VAULT_BENCH_SECONDS`
//! (default 3) bound the run.
//!
//! Measured (release, 2 CPUs, ext4 on a virtio disk, SQLite fsync on every
//! commit; means of 300):
//!
//! | what | mean |
//! |---|---|
//! | opaque-ke `ServerRegistration::start` + `finish` | 66 µs |
//! | opaque-ke `ServerLogin::start` + `finish` | 220 µs |
//! | gRPC `GetVaultInfo` round trip (baseline) | 157 µs |
//! | vault RegisterStart + RegisterFinish RPCs (1 commit) | 0.99 ms |
//! | vault LoginStart RPC (2 commits: guess, session) | 0.89 ms |
//! | vault LoginFinish RPC (2 commits: take session, reset + ticket) | 0.66 ms |
//! | vault login, both RPCs | 1.55 ms |
//! | full logins/s, 8 / 32 concurrent clients (client work on the same CPUs) | 1029 / 1196 |
//! | vault-side logins/s, 8 / 32 concurrent clients | 1572 / 1732 |
//!
//! The difference to opaque-ke alone is two loopback round trips and four
//! fsynced commits per login, serialised through the store's one writer.
//!
//! The side-by-side table (dev profile, 2 CPUs, 3 s per cell, 2026-11-28):
//!
//! | setup | clients | full logins/s | p50 | p99 |
//! |---|---|---|---|---|
//! | SQLite, 1 vault, TLS | 8 / 32 | 318 / 448 | 22 / 68 ms | 56 / 120 ms |
//! | SQLite, 1 vault, plaintext | 8 / 32 | 435 / 453 | 18 / 68 ms | 33 / 115 ms |
//! | etcd x3, 3 vault replicas, TLS | 8 / 32 | 95 / 143 | 79 / 206 ms | 192 / 326 ms |
//!
//! Everything (etcd members, replicas, clients) shares the same two cores and
//! disk; each login is about four etcd writes committed by a majority.

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use e2eb_proto::vault::v2 as pb;
use rand::rngs::OsRng;
use support::*;
use vault_suite::Suite;
use vault_suite::opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialFinalization, CredentialRequest,
    CredentialResponse, Identifiers, RegistrationRequest, RegistrationResponse, RegistrationUpload,
    ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
};

const PASSWORD: &[u8] = b"bench password";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats(Vec<Duration>);

impl Stats {
    fn line(mut self, what: &str) {
        self.0.sort_unstable();
        let n = self.0.len();
        let mean = self.0.iter().sum::<Duration>() / n as u32;
        let p50 = self.0[n / 2];
        let p99 = self.0[(n * 99 / 100).min(n - 1)];
        println!(
            "{what:<58} mean {:>9.1} µs  p50 {:>9.1} µs  p99 {:>9.1} µs  (n = {n})",
            us(mean),
            us(p50),
            us(p99)
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn client_params<'h>(
    ksf: &'h argon2::Argon2<'static>,
) -> ClientLoginFinishParameters<'static, 'static, 'h, Suite> {
    ClientLoginFinishParameters::new(None, Identifiers::default(), Some(ksf))
}

use vault_suite::argon2;

/// opaque-ke's server operations alone, on precomputed client messages.
fn opaque_ke_alone(iterations: usize) {
    let ksf = vault_suite::argon2_insecure_fast_for_tests();
    let setup = ServerSetup::<Suite>::new(&mut OsRng);
    let id = b"bench-account";

    let mut registration = Vec::new();
    for _ in 0..iterations {
        let start = ClientRegistration::<Suite>::start(&mut OsRng, PASSWORD).unwrap();
        let request = start.message.serialize();
        let response = ServerRegistration::start(
            &setup,
            RegistrationRequest::deserialize(&request).unwrap(),
            id,
        )
        .unwrap()
        .message
        .serialize();
        let upload = start
            .state
            .finish(
                &mut OsRng,
                PASSWORD,
                RegistrationResponse::deserialize(&response).unwrap(),
                ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
            )
            .unwrap()
            .message
            .serialize();
        let began = Instant::now();
        let started = ServerRegistration::start(
            &setup,
            RegistrationRequest::deserialize(&request).unwrap(),
            id,
        )
        .unwrap();
        std::hint::black_box(started.message.serialize());
        let record =
            ServerRegistration::<Suite>::finish(RegistrationUpload::deserialize(&upload).unwrap());
        std::hint::black_box(record.serialize());
        registration.push(began.elapsed());
    }
    Stats(registration).line("opaque-ke ServerRegistration::start + finish");

    let password_file = {
        let start = ClientRegistration::<Suite>::start(&mut OsRng, PASSWORD).unwrap();
        let response = ServerRegistration::start(&setup, start.message.clone(), id)
            .unwrap()
            .message;
        let upload = start
            .state
            .finish(
                &mut OsRng,
                PASSWORD,
                response,
                ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
            )
            .unwrap()
            .message;
        ServerRegistration::<Suite>::finish(upload).serialize()
    };
    let mut login = Vec::new();
    for _ in 0..iterations {
        let start = ClientLogin::<Suite>::start(&mut OsRng, PASSWORD).unwrap();
        let request = start.message.serialize();
        let began = Instant::now();
        let server = ServerLogin::start(
            &mut OsRng,
            &setup,
            Some(ServerRegistration::deserialize(&password_file).unwrap()),
            CredentialRequest::deserialize(&request).unwrap(),
            id,
            ServerLoginParameters::default(),
        )
        .unwrap();
        let response = server.message.serialize();
        let state = server.state.serialize();
        let first = began.elapsed();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                PASSWORD,
                CredentialResponse::deserialize(&response).unwrap(),
                client_params(&ksf),
            )
            .unwrap()
            .message
            .serialize();
        let began = Instant::now();
        let finished = ServerLogin::<Suite>::deserialize(&state)
            .unwrap()
            .finish(
                CredentialFinalization::deserialize(&finish).unwrap(),
                ServerLoginParameters::default(),
            )
            .unwrap();
        std::hint::black_box(finished.session_key);
        login.push(first + began.elapsed());
    }
    Stats(login).line("opaque-ke ServerLogin::start + finish");
}

/// Registration and login RPCs, client work excluded.
async fn through_grpc(vault: &TestVault, iterations: usize) {
    let ksf = vault_suite::argon2_insecure_fast_for_tests();
    let base = vault.client("bench-info").await;

    let mut info = Vec::new();
    for _ in 0..iterations {
        let mut client = base.with_token(vault.token("bench-info"));
        let began = Instant::now();
        client
            .grpc
            .get_vault_info(client.request(pb::GetVaultInfoRequest {}))
            .await
            .unwrap();
        info.push(began.elapsed());
    }
    Stats(info).line("gRPC GetVaultInfo (baseline: loopback + token check)");

    let mut registration = Vec::new();
    for i in 0..iterations {
        let account = format!("bench-reg-{i}");
        let mut client = base.with_token(vault.token(&account));
        client.account = account;
        let start = ClientRegistration::<Suite>::start(&mut OsRng, PASSWORD).unwrap();
        let request = client.request(pb::RegisterStartRequest {
            registration_request: start.message.serialize().to_vec(),
        });
        let began = Instant::now();
        let started = client
            .grpc
            .register_start(request)
            .await
            .unwrap()
            .into_inner();
        let first = began.elapsed();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                PASSWORD,
                RegistrationResponse::deserialize(&started.registration_response).unwrap(),
                ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
            )
            .unwrap();
        let request = client.request(pb::RegisterFinishRequest {
            registration_upload: finish.message.serialize().to_vec(),
            sealed_key: vec![7; 60],
            auth_public_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes()
                .to_vec(),
            authorization: None,
            registration_id: started.registration_id,
        });
        let began = Instant::now();
        client.grpc.register_finish(request).await.unwrap();
        registration.push(first + began.elapsed());
    }
    Stats(registration).line("vault RegisterStart + RegisterFinish RPCs");

    let mut client = base.with_token(vault.token("bench-login"));
    client.account = "bench-login".into();
    client
        .register(PASSWORD, &random_key(), &[1; 32], None)
        .await
        .unwrap();
    let (mut login, mut starts, mut finishes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let start = ClientLogin::<Suite>::start(&mut OsRng, PASSWORD).unwrap();
        let request = client.request(pb::LoginStartRequest {
            credential_request: start.message.serialize().to_vec(),
        });
        let began = Instant::now();
        let started = client.grpc.login_start(request).await.unwrap().into_inner();
        let first = began.elapsed();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                PASSWORD,
                CredentialResponse::deserialize(&started.credential_response).unwrap(),
                client_params(&ksf),
            )
            .unwrap();
        let request = client.request(pb::LoginFinishRequest {
            session_id: started.session_id,
            credential_finalization: finish.message.serialize().to_vec(),
        });
        let began = Instant::now();
        let finished = client
            .grpc
            .login_finish(request)
            .await
            .unwrap()
            .into_inner();
        let second = began.elapsed();
        assert!(matches!(
            finished.outcome,
            Some(pb::login_finish_response::Outcome::Success(_))
        ));
        starts.push(first);
        finishes.push(second);
        login.push(first + second);
    }
    Stats(starts).line("vault LoginStart RPC (count guess, OPRF, keep state)");
    Stats(finishes).line("vault LoginFinish RPC (MAC, reset, ticket)");
    Stats(login).line("vault LoginStart + LoginFinish RPCs");
}

/// Full logins (client work included) by `clients` concurrent devices,
/// spread round-robin over `vaults` (replicas of one fleet): logins per
/// second and the p50 / p99 latency of one login.
async fn full_logins(
    vaults: &[TestVault],
    clients: usize,
    seconds: u64,
) -> (f64, Duration, Duration) {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let began = Instant::now();
    for i in 0..clients {
        let account = format!("bench-conc-{i}");
        let mut client = vaults[i % vaults.len()].client(&account).await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && latencies.len() < 100_000 {
                let started = Instant::now();
                client.login(PASSWORD).await.unwrap().success();
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let rate = all.len() as f64 / began.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (rate, at(0.50), at(0.99))
}

/// The vault's side of a login only: precomputed credential requests,
/// LoginStart, then a verdict-only LoginFinish (no client crypto in the loop).
async fn server_logins_per_second(vault: &TestVault, clients: usize, seconds: u64) -> f64 {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let began = Instant::now();
    for i in 0..clients {
        let account = format!("bench-conc-{i}");
        let mut client = vault.client(&account).await;
        let requests: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                ClientLogin::<Suite>::start(&mut OsRng, PASSWORD)
                    .unwrap()
                    .message
                    .serialize()
                    .to_vec()
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline && done < 100_000 {
                let credential_request = requests[done as usize % requests.len()].clone();
                let request = client.request(pb::LoginStartRequest { credential_request });
                let started = client.grpc.login_start(request).await.unwrap().into_inner();
                client
                    .finish_raw(&started.session_id, Vec::new())
                    .await
                    .unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / began.elapsed().as_secs_f64()
}

/// One vault setup of the comparison.
#[derive(Clone, Copy)]
enum Setup {
    /// One vault, SQLite, TLS: the embedded default.
    SqliteTls,
    /// The same without TLS: what TLS costs.
    SqlitePlaintext,
    /// Three replicas sharing a three-member etcd cluster, TLS: the fleet.
    EtcdFleet,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::SqliteTls => "SQLite, 1 vault, TLS",
            Setup::SqlitePlaintext => "SQLite, 1 vault, plaintext",
            Setup::EtcdFleet => "etcd x3, 3 vault replicas, TLS",
        }
    }

    /// Starts the setup's vaults (and the etcd cluster they share).
    async fn start(
        self,
        dir: &std::path::Path,
    ) -> anyhow::Result<(Vec<TestVault>, Option<etcd::EtcdCluster>)> {
        // A guess limit no benchmark reaches: the verdict-only loop counts
        // every login as a wrong guess.
        let mut config = config(dir, policy(u32::MAX));
        let clock = key_vault::clock::ManualClock::new();
        match self {
            Setup::SqliteTls => Ok((
                vec![TestVault::start_with_config(dir, config, clock).await?],
                None,
            )),
            Setup::SqlitePlaintext => {
                config.tls = rpc::ServerTls {
                    cert: None,
                    key: None,
                    insecure_plaintext: true,
                };
                Ok((
                    vec![TestVault::start_with_config(dir, config, clock).await?],
                    None,
                ))
            }
            Setup::EtcdFleet => {
                let cluster = etcd::EtcdCluster::start(3).await?;
                let mut vaults = Vec::new();
                for _ in 0..3 {
                    let mut replica = config.clone();
                    replica.store = key_vault::config::StoreKind::Etcd;
                    replica.etcd_endpoints = cluster.endpoints.clone();
                    vaults.push(TestVault::start_with_config(dir, replica, clock.clone()).await?);
                }
                Ok((vaults, Some(cluster)))
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let iterations = env_number("VAULT_BENCH_ITERATIONS", 300) as usize;
    let seconds = env_number("VAULT_BENCH_SECONDS", 3);
    let profile = if cfg!(debug_assertions) {
        "dev profile (our crates opt-level 1, dependencies opt-level 2, debug assertions on)"
    } else {
        "release profile"
    };
    println!(
        "key-vault benchmark, {profile}, {} CPUs",
        std::thread::available_parallelism()?
    );
    opaque_ke_alone(iterations);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let vault = TestVault::start(dir.path(), policy(u32::MAX)).await?;
        through_grpc(&vault, iterations).await;
        for i in 0..32 {
            let mut client = vault.client(&format!("bench-conc-{i}")).await;
            client.register(PASSWORD, &random_key(), &[1; 32], None).await.unwrap();
        }
        for clients in [8, 32] {
            let server = server_logins_per_second(&vault, clients, seconds).await;
            println!(
                "{clients:>2} concurrent clients: {server:>7.0} vault-side logins/s (SQLite, TLS; precomputed requests, verdict-only finish)"
            );
        }
        vault.stop().await;

        println!();
        println!("full logins (client work included, same CPUs), {seconds} s per cell:");
        println!("| setup | clients | logins/s | p50 | p99 |");
        println!("|---|---|---|---|---|");
        for setup in [Setup::SqliteTls, Setup::SqlitePlaintext, Setup::EtcdFleet] {
            let dir = tempfile::tempdir()?;
            let (vaults, cluster) = setup.start(dir.path()).await?;
            for i in 0..32 {
                let mut client = vaults[i % vaults.len()].client(&format!("bench-conc-{i}")).await;
                client.register(PASSWORD, &random_key(), &[1; 32], None).await.unwrap();
            }
            for clients in [8, 32] {
                let (rate, p50, p99) = full_logins(&vaults, clients, seconds).await;
                println!(
                    "| {} | {clients} | {rate:.0} | {:.1} ms | {:.1} ms |",
                    setup.name(),
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                );
            }
            for vault in vaults {
                vault.stop().await;
            }
            drop(cluster);
        }
        anyhow::Ok(())
    })
}
