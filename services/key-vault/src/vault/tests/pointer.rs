//! The backup pointer: signed updates, confirmation, rotation to a new key.

use super::*;
use crate::vault::row::{BackupRef, PendingBackup};

fn digest(n: u8) -> [u8; 32] {
    [n; 32]
}

async fn set_pending(
    vault: &Vault,
    signer: &SigningKey,
    generation: u64,
    digest: [u8; 32],
    successor: &SigningKey,
) -> Result<(), VaultError> {
    let pk = public(successor);
    let proof = signed(
        vault,
        &alice(),
        signer,
        ProofOperation::SetPending {
            generation,
            digest: &digest,
            auth_public_key: &pk,
        },
    )
    .await;
    vault
        .set_pending(&alice(), generation, &digest, &pk, proof)
        .await
}

async fn confirm(
    vault: &Vault,
    signer: &SigningKey,
    generation: u64,
    digest: [u8; 32],
) -> Result<(), VaultError> {
    let proof = signed(
        vault,
        &alice(),
        signer,
        ProofOperation::Confirm {
            generation,
            digest: &digest,
        },
    )
    .await;
    vault.confirm(&alice(), generation, &digest, proof).await
}

async fn enable_key(vault: &Vault, key: &SigningKey) {
    vault
        .enable_key_backup(&alice(), &public(key), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_user_announces_and_confirms_each_generation() {
    let (vault, _) = vault(10).await;
    let key = auth_key(1);
    enable_key(&vault, &key).await;
    let pointer = vault.pointer(&alice()).await.unwrap();
    assert_eq!((pointer.committed, pointer.pending), (None, None));
    assert!(!pointer.has_password);

    set_pending(&vault, &key, 1, digest(1), &key).await.unwrap();
    let pointer = vault.pointer(&alice()).await.unwrap();
    assert_eq!(
        pointer.pending,
        Some(PendingBackup {
            generation: 1,
            manifest_digest: digest(1),
            auth_public_key: public(&key),
        })
    );
    confirm(&vault, &key, 1, digest(1)).await.unwrap();
    // A retry whose answer was lost succeeds again.
    confirm(&vault, &key, 1, digest(1)).await.unwrap();
    let pointer = vault.pointer(&alice()).await.unwrap();
    let first = BackupRef {
        generation: 1,
        manifest_digest: digest(1),
    };
    assert_eq!((pointer.committed, pointer.pending), (Some(first), None));

    set_pending(&vault, &key, 2, digest(2), &key).await.unwrap();
    assert!(matches!(
        confirm(&vault, &key, 2, digest(9)).await,
        Err(VaultError::PointerStale(_))
    ));
    assert_eq!(
        vault.pointer(&alice()).await.unwrap().committed,
        Some(first)
    );
}

#[tokio::test]
async fn only_the_backup_key_moves_the_pointer() {
    let (vault, _) = vault(10).await;
    enable_key(&vault, &auth_key(1)).await;
    let stranger = auth_key(7);
    assert!(matches!(
        set_pending(&vault, &stranger, 1, digest(1), &stranger).await,
        Err(VaultError::BadKeySignature)
    ));
    assert_eq!(vault.pointer(&alice()).await.unwrap().pending, None);
    set_pending(&vault, &auth_key(1), 1, digest(1), &auth_key(1))
        .await
        .unwrap();
    assert!(matches!(
        confirm(&vault, &stranger, 1, digest(1)).await,
        Err(VaultError::BadKeySignature)
    ));
    assert_eq!(vault.pointer(&alice()).await.unwrap().committed, None);
}

#[tokio::test]
async fn a_rotation_hands_the_pointer_to_the_new_key() {
    let (vault, _) = vault(10).await;
    let (old, new) = (auth_key(1), auth_key(2));
    enable_key(&vault, &old).await;
    set_pending(&vault, &old, 1, digest(1), &old).await.unwrap();
    confirm(&vault, &old, 1, digest(1)).await.unwrap();

    // The old key announces a generation under the new key; the commit's
    // answer is lost. The device now holds only the new key: it may
    // announce again (the first commit never landed) and confirm.
    set_pending(&vault, &old, 2, digest(2), &new).await.unwrap();
    set_pending(&vault, &new, 2, digest(3), &new).await.unwrap();
    confirm(&vault, &new, 2, digest(3)).await.unwrap();
    let pointer = vault.pointer(&alice()).await.unwrap();
    assert_eq!(pointer.auth_public_key, public(&new));
    // The old key has no say any more.
    assert!(matches!(
        set_pending(&vault, &old, 3, digest(4), &old).await,
        Err(VaultError::BadKeySignature)
    ));
    set_pending(&vault, &new, 3, digest(4), &new).await.unwrap();
}

#[tokio::test]
async fn a_password_change_keeps_the_pointer_and_switching_to_a_key_needs_proof() {
    let (vault, _) = vault(10).await;
    register(&vault, &alice(), b"pw").await;
    let key = auth_key(1);
    set_pending(&vault, &key, 1, digest(1), &key).await.unwrap();
    confirm(&vault, &key, 1, digest(1)).await.unwrap();

    // Change the password with a key signature.
    let start = ClientRegistration::<Suite>::start(&mut OsRng, b"new pw").unwrap();
    let started = vault
        .register_start(&alice(), &start.message.serialize())
        .await
        .unwrap();
    let ksf = vault_suite::argon2_insecure_fast_for_tests();
    let finish = start
        .state
        .finish(
            &mut OsRng,
            b"new pw",
            RegistrationResponse::deserialize(&started.registration_response).unwrap(),
            ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
        )
        .unwrap();
    let pk = public(&key);
    let proof = signed(
        &vault,
        &alice(),
        &key,
        ProofOperation::Register {
            registration_id: &started.registration_id,
            auth_public_key: &pk,
        },
    )
    .await;
    vault
        .register_finish(
            &alice(),
            RegisterFinish {
                registration_upload: finish.message.serialize().to_vec(),
                sealed_key: b"sealed again".to_vec(),
                auth_public_key: pk.to_vec(),
                registration_id: started.registration_id.to_vec(),
                authorization: Some(proof),
            },
        )
        .await
        .unwrap();
    let pointer = vault.pointer(&alice()).await.unwrap();
    assert_eq!(pointer.committed.map(|c| c.generation), Some(1));
    assert!(pointer.has_password);

    // Switching to a key-only record: refused without proof, then done.
    assert!(matches!(
        vault.enable_key_backup(&alice(), &pk, None).await,
        Err(VaultError::ProofRequired)
    ));
    let proof = signed(
        &vault,
        &alice(),
        &key,
        ProofOperation::EnableKey {
            auth_public_key: &pk,
        },
    )
    .await;
    vault
        .enable_key_backup(&alice(), &pk, Some(proof))
        .await
        .unwrap();
    let pointer = vault.pointer(&alice()).await.unwrap();
    assert!(!pointer.has_password);
    assert_eq!(pointer.committed.map(|c| c.generation), Some(1));
    let request = ClientLogin::<Suite>::start(&mut OsRng, b"new pw")
        .unwrap()
        .message
        .serialize();
    assert!(matches!(
        vault.login_start(&alice(), &request).await,
        Err(VaultError::NoPassword)
    ));
}
