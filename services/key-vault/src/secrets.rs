//! The vault secrets: opaque-ke's `ServerSetup` (OPRF seed and server key
//! pair), a key that seals login state in the database, and the row key
//! that MACs every stored row and short-lived item (an operator who edits
//! the database is detected). Created on first start, stored in the database sealed under the [`SealingKeySource`], and
//! never stored or logged in the clear. A sealing key that does not open
//! them stops the vault: silently making new secrets would change the public
//! key every client pinned and turn every record into garbage.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use vault_suite::opaque_ke::ServerSetup;
use vault_suite::{Suite, blob};
use zeroize::Zeroizing;

use crate::sealing::{SealingError, SealingKeySource};
use crate::store::{EphemeralKind, RecordStore, StoreError};

/// Associated data of the sealed secrets; names what they are.
const SECRETS_AAD: &[u8] = b"e2ebackup/vault/v2/secrets";
/// Associated data prefix of sealed login state.
const LOGIN_STATE_AAD: &[u8] = b"e2ebackup/vault/v2/login-state";
/// Domain of a row MAC.
const ROW_MAC_DOMAIN: &[u8] = b"e2ebackup/vault/v2/row";
/// Domain of a short-lived item's MAC.
const EPHEMERAL_MAC_DOMAIN: &[u8] = b"e2ebackup/vault/v2/ephemeral";
/// Format 2: state key (32) || row key (32) || opaque-ke `ServerSetup`.
const FORMAT: u8 = 2;

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
    row_mac: Hmac<Sha256>,
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
                let mut plain = Zeroizing::new(vec![FORMAT]);
                let mut keys = Zeroizing::new([0u8; 64]);
                OsRng.fill_bytes(keys.as_mut());
                plain.extend_from_slice(keys.as_ref());
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
        let Some((&FORMAT, rest)) = plain.split_first() else {
            return Err(SecretsError::Malformed("unknown format"));
        };
        if rest.len() < 64 {
            return Err(SecretsError::Malformed("too short"));
        }
        let (state_key, rest) = rest.split_at(32);
        let (row_key, setup) = rest.split_at(32);
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
            row_mac: <Hmac<Sha256> as Mac>::new_from_slice(row_key)
                .expect("HMAC takes any key length"),
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
        version: &[u8; 16],
        state: &[u8],
    ) -> Vec<u8> {
        let aad = login_state_aad(session, account, version);
        blob::seal(&self.state_cipher, &aad, state)
    }

    /// Reverses [`Self::seal_login_state`]; `None` if anything differs.
    pub fn open_login_state(
        &self,
        session: &[u8; 16],
        account: &str,
        version: &[u8; 16],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        let aad = login_state_aad(session, account, version);
        blob::open(&self.state_cipher, &aad, sealed).ok()
    }
}

impl VaultSecrets {
    /// The MAC of an account's row body.
    pub fn row_mac(&self, account: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = self.row_mac.clone();
        for field in [ROW_MAC_DOMAIN, account.as_bytes(), body] {
            mac_field(&mut mac, field);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of the row (constant time).
    pub fn row_mac_matches(&self, account: &str, body: &[u8], tag: &[u8; 32]) -> bool {
        let mut mac = self.row_mac.clone();
        for field in [ROW_MAC_DOMAIN, account.as_bytes(), body] {
            mac_field(&mut mac, field);
        }
        mac.verify_slice(tag).is_ok()
    }

    /// The MAC of a short-lived item.
    pub fn ephemeral_mac(
        &self,
        kind: EphemeralKind,
        id: &[u8],
        account: &str,
        payload: &[u8],
        expires_at_ms: u64,
    ) -> [u8; 32] {
        let mut mac = self.row_mac.clone();
        for field in [
            EPHEMERAL_MAC_DOMAIN,
            kind.as_str().as_bytes(),
            id,
            account.as_bytes(),
            payload,
            &expires_at_ms.to_be_bytes(),
        ] {
            mac_field(&mut mac, field);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Feeds one length-prefixed field, so no two field lists share bytes.
fn mac_field(mac: &mut Hmac<Sha256>, field: &[u8]) {
    mac.update(&(field.len() as u64).to_be_bytes());
    mac.update(field);
}

fn login_state_aad(session: &[u8; 16], account: &str, version: &[u8; 16]) -> Vec<u8> {
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

        // Rows MACed by one start verify after a restart (one identity for
        // every replica), and only for their account and bytes.
        let tag = first.row_mac("alice", b"{\"guesses\":3}");
        assert!(second.row_mac_matches("alice", b"{\"guesses\":3}", &tag));
        assert!(!second.row_mac_matches("alice", b"{\"guesses\":0}", &tag));
        assert!(!second.row_mac_matches("bob", b"{\"guesses\":3}", &tag));
        let kind = EphemeralKind::LoginTicket;
        assert_ne!(
            first.ephemeral_mac(kind, b"id", "alice", b"p", 10),
            first.ephemeral_mac(kind, b"id", "alice", b"p", 11)
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
