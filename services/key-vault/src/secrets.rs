//! The vault secrets: opaque-ke's `ServerSetup` (OPRF seed and server key
//! pair) and a key that seals login state in the database. Created on first
//! start, stored in the database sealed under the [`SealingKeySource`], and
//! never stored or logged in the clear. A sealing key that does not open
//! them stops the vault: silently making new secrets would change the public
//! key every client pinned and turn every record into garbage.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use vault_suite::Suite;
use vault_suite::opaque_ke::ServerSetup;
use zeroize::Zeroizing;

use crate::sealing::{SealingError, SealingKeySource};
use crate::store::{RecordStore, StoreError, Version};

/// Associated data of the sealed secrets; names what they are.
const SECRETS_AAD: &[u8] = b"e2ebackup/vault/v1/secrets";
/// Associated data prefix of sealed login state.
const LOGIN_STATE_AAD: &[u8] = b"e2ebackup/vault/v1/login-state";
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "the vault secrets in the database do not open with the sealing key from {source_name}: \
         it is not the key they were sealed with, or the database was altered. Refusing to start: \
         new secrets would change the vault's public key and make every registered record \
         unusable. Restore the original sealing key."
    )]
    WrongSealingKey { source_name: String },
    #[error(
        "the vault secrets opened but are malformed ({0}); the database was altered or is from an incompatible vault"
    )]
    Malformed(&'static str),
    #[error(transparent)]
    Sealing(#[from] SealingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The unsealed secrets, held in memory only.
pub struct VaultSecrets {
    setup: ServerSetup<Suite>,
    state_cipher: Aes256Gcm,
    public_key: [u8; 32],
}

impl fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VaultSecrets(public key {}, <redacted>)",
            self.fingerprint()
        )
    }
}

impl VaultSecrets {
    /// Loads the secrets from `store`, creating and storing them on first
    /// start. Two vaults starting at once on one database agree on one set.
    pub async fn load_or_create(
        store: &dyn RecordStore,
        sealing: &dyn SealingKeySource,
    ) -> Result<Self, SecretsError> {
        let sealed = match store.load_secrets().await? {
            Some(sealed) => sealed,
            None => {
                let mut plain = Zeroizing::new(vec![FORMAT_V1]);
                let mut state_key = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(state_key.as_mut());
                plain.extend_from_slice(state_key.as_ref());
                let setup = ServerSetup::<Suite>::new(&mut OsRng);
                plain.extend_from_slice(&Zeroizing::new(setup.serialize().to_vec()));
                store
                    .store_secrets_once(sealing.seal(&plain, SECRETS_AAD)?)
                    .await?
            }
        };
        let plain = sealing
            .open(&sealed, SECRETS_AAD)
            .map_err(|error| match error {
                SealingError::DoesNotOpen { source_name } => {
                    SecretsError::WrongSealingKey { source_name }
                }
                other => SecretsError::Sealing(other),
            })?;
        Self::parse(&plain)
    }

    fn parse(plain: &[u8]) -> Result<Self, SecretsError> {
        let Some((&FORMAT_V1, rest)) = plain.split_first() else {
            return Err(SecretsError::Malformed("unknown format"));
        };
        if rest.len() < 32 {
            return Err(SecretsError::Malformed("too short"));
        }
        let (state_key, setup) = rest.split_at(32);
        let setup = ServerSetup::<Suite>::deserialize(setup)
            .map_err(|_| SecretsError::Malformed("server setup"))?;
        let public_key = setup
            .keypair()
            .public()
            .serialize()
            .as_slice()
            .try_into()
            .map_err(|_| SecretsError::Malformed("public key length"))?;
        Ok(Self {
            setup,
            state_cipher: Aes256Gcm::new_from_slice(state_key).expect("the state key is 32 bytes"),
            public_key,
        })
    }

    pub fn setup(&self) -> &ServerSetup<Suite> {
        &self.setup
    }

    /// The OPAQUE server public key (ristretto255).
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// What clients pin: lowercase hex SHA-256 of the public key.
    pub fn fingerprint(&self) -> String {
        vault_suite::fingerprint(&self.public_key)
    }

    /// Seals opaque-ke's serialized `ServerLogin` for the database, bound to
    /// the session, the account and the record version. The state holds the
    /// session key and the expected client MAC: a database reader who could
    /// read it could finish logins it never guessed and reset the counter.
    pub fn seal_login_state(
        &self,
        session: &[u8; 16],
        account: &str,
        version: &Version,
        state: &[u8],
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = login_state_aad(session, account, version);
        let ciphertext = self
            .state_cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: state,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any short message");
        [nonce.as_slice(), &ciphertext].concat()
    }

    /// Reverses [`Self::seal_login_state`]; `None` if anything differs.
    pub fn open_login_state(
        &self,
        session: &[u8; 16],
        account: &str,
        version: &Version,
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = login_state_aad(session, account, version);
        self.state_cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

fn login_state_aad(session: &[u8; 16], account: &str, version: &Version) -> Vec<u8> {
    [LOGIN_STATE_AAD, session, version, account.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::sealing::FileSealingKey;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn secrets_are_created_once_and_reloaded() {
        let store = SqliteStore::in_memory().unwrap();
        let key = FileSealingKey::from_bytes(Path::new("test"), &[1; 32]);
        let first = VaultSecrets::load_or_create(&store, &key).await.unwrap();
        let second = VaultSecrets::load_or_create(&store, &key).await.unwrap();
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(first.fingerprint().len(), 64);
        assert!(!format!("{first:?}").contains("state_cipher"));

        let state = first.seal_login_state(&[1; 16], "alice", &[2; 16], b"ke2 state");
        let opened = second
            .open_login_state(&[1; 16], "alice", &[2; 16], &state)
            .unwrap();
        assert_eq!(opened.as_slice(), b"ke2 state");
        assert!(
            second
                .open_login_state(&[1; 16], "bob", &[2; 16], &state)
                .is_none()
        );
        assert!(
            second
                .open_login_state(&[3; 16], "alice", &[2; 16], &state)
                .is_none()
        );
        assert!(
            second
                .open_login_state(&[1; 16], "alice", &[3; 16], &state)
                .is_none()
        );
    }

    #[tokio::test]
    async fn another_sealing_key_refuses_to_start() {
        let store = SqliteStore::in_memory().unwrap();
        let key = FileSealingKey::from_bytes(Path::new("right.key"), &[1; 32]);
        VaultSecrets::load_or_create(&store, &key).await.unwrap();
        let wrong = FileSealingKey::from_bytes(Path::new("wrong.key"), &[2; 32]);
        let error = VaultSecrets::load_or_create(&store, &wrong)
            .await
            .unwrap_err();
        assert!(
            matches!(error, SecretsError::WrongSealingKey { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("wrong.key"), "{error}");
        // Nothing was replaced: the right key still opens the same secrets.
        VaultSecrets::load_or_create(&store, &key).await.unwrap();
    }
}
