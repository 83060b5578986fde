//! An operator who edits the vault's store is detected: rows and short-lived
//! items carry MACs under the sealed row key.

use super::*;
use sha2::Digest;

use crate::store::{Ephemeral, EphemeralKind, StoredRow};

#[tokio::test]
async fn an_edited_guess_counter_is_refused_and_start_over_clears_it() {
    let (vault, _) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    login(&vault, &alice(), b"wrong").await;
    let (stored, revision) = vault.store.get_row("alice").await.unwrap().unwrap();
    let text = String::from_utf8(stored.body.clone()).unwrap();
    assert!(text.contains("\"guesses\":1"), "{text}");
    // The operator resets the counter, keeping the old MAC.
    let edited = StoredRow {
        body: text.replace("\"guesses\":1", "\"guesses\":0").into_bytes(),
        mac: stored.mac,
    };
    assert!(
        vault
            .store
            .put_row("alice", edited, Some(revision), false)
            .await
            .unwrap()
    );
    let request = ClientLogin::<Suite>::start(&mut OsRng, b"pw")
        .unwrap()
        .message
        .serialize();
    assert!(matches!(
        vault.login_start(&alice(), &request).await,
        Err(VaultError::TamperedRecord)
    ));
    assert!(matches!(
        vault.pointer(&alice()).await,
        Err(VaultError::TamperedRecord)
    ));
    // Starting over is how the account recovers; then it works again.
    vault.delete(&alice(), None, true).await.unwrap();
    register(&vault, &alice(), b"pw").await;
    assert!(matches!(
        login(&vault, &alice(), b"pw").await.0,
        LoginOutcome::Success { .. }
    ));
}

#[tokio::test]
async fn a_row_copied_from_another_account_is_refused() {
    let (vault, _) = vault(10).await;
    let bob = AccountId::new("bob").unwrap();
    register(&vault, &alice(), b"pw").await;
    register(&vault, &bob, b"other").await;
    let (bobs, _) = vault.store.get_row("bob").await.unwrap().unwrap();
    let (_, revision) = vault.store.get_row("alice").await.unwrap().unwrap();
    assert!(
        vault
            .store
            .put_row("alice", bobs, Some(revision), false)
            .await
            .unwrap()
    );
    assert!(matches!(
        vault.pointer(&alice()).await,
        Err(VaultError::TamperedRecord)
    ));
    vault.pointer(&bob).await.unwrap();
}

#[tokio::test]
async fn a_planted_login_ticket_is_refused() {
    let (vault, _) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    let record = account_of(&vault, &alice()).await;
    // The operator knows a ticket of their own making and plants its hash
    // for the current registration, with a made-up MAC.
    let ticket = [9u8; 32];
    let hash: [u8; 32] = sha2::Sha256::digest(ticket).into();
    let planted = Ephemeral {
        account: "alice".into(),
        payload: record.registration.as_ref().unwrap().version.to_vec(),
        expires_at_ms: u64::MAX,
        mac: [0; 32],
    };
    vault
        .store
        .put_ephemeral(EphemeralKind::LoginTicket, &hash, planted, 0)
        .await
        .unwrap();
    let result = vault
        .authorize(
            &alice(),
            &record,
            Some(Proof::LoginTicket(ticket.to_vec())),
            ProofOperation::Delete,
            proof::Signers::Registered,
        )
        .await;
    assert!(
        matches!(result, Err(VaultError::TamperedRecord)),
        "{result:?}"
    );
}

/// Two replicas over one etcd cluster: one fleet identity (the secrets are
/// created once, sealed, and unsealed by each), and every guess counted
/// once across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_etcd_share_secrets_and_count_guesses_exactly() {
    use crate::store::etcd::EtcdStore;
    use crate::store::etcd::tests::start_etcd;
    let etcd = start_etcd().await;
    let sealing = FileSealingKey::from_bytes(Path::new("fleet"), &[3; 32]);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/fleet")
            .await
            .unwrap();
        let secrets = VaultSecrets::load_or_create(&store, &sealing)
            .await
            .unwrap();
        let policy = Policy {
            max_guesses: 4,
            ..Policy::default()
        };
        replicas.push(Vault::new(
            Arc::new(store),
            Arc::new(secrets),
            policy,
            Arc::new(ManualClock::new()),
        ));
    }
    assert_eq!(replicas[0].info(), replicas[1].info());
    register(&replicas[0], &alice(), b"pw").await;
    let starts = (0..20).map(|i| {
        let vault = replicas[i % 2].clone();
        tokio::spawn(async move {
            let request = ClientLogin::<Suite>::start(&mut OsRng, b"guess")
                .unwrap()
                .message
                .serialize();
            vault.login_start(&alice(), &request).await
        })
    });
    let mut counted = 0;
    for start in starts.collect::<Vec<_>>() {
        match start.await.unwrap() {
            Ok(_) => counted += 1,
            Err(VaultError::KeyErased) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(counted, 4);
}
