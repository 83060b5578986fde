//! The account row: everything the vault keeps for one account, as JSON
//! text an operator can read, with a MAC under the vault's row key (see
//! `secrets.rs`) over the account and every byte of it. The row's own
//! `version` counts its writes and is inside the MAC, so editing a guess
//! counter, a pointer or a key in the database is detected and refused.
//! Putting back an older, genuine row is not detected by the MAC alone (a
//! known limit; the consensus store narrows it).

use serde::{Deserialize, Serialize};
use vault_suite::proof::{AUTH_PUBLIC_KEY_LEN, MANIFEST_DIGEST_LEN};

/// What the store holds for an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    /// Writes of this row so far (covered by the MAC).
    pub version: u64,
    #[serde(flatten)]
    pub state: RowState,
}

// A row lives for one request; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RowState {
    Active(Account),
    /// Erased after too many wrong guesses: only a start-over clears it.
    Erased,
}

/// An account with backups enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The registered backup auth key (Ed25519, derived from `K`).
    #[serde(with = "hex_array")]
    pub auth_public_key: [u8; AUTH_PUBLIC_KEY_LEN],
    /// The password registration, for password users.
    pub registration: Option<Registration>,
    /// The last generation the device confirmed.
    pub committed: Option<BackupRef>,
    /// The generation the device announced and has not confirmed.
    pub pending: Option<PendingBackup>,
}

/// An OPAQUE registration and the key blob it protects.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Random, new for every registration: login sessions and tickets are
    /// bound to it, so they die with the registration.
    #[serde(with = "hex_array")]
    pub version: [u8; 16],
    /// Names the registration's OPRF key (with the account id).
    #[serde(with = "hex_array")]
    pub registration_id: [u8; 16],
    /// opaque-ke's serialized `ServerRegistration` (the password file).
    #[serde(with = "base64_bytes")]
    pub opaque_record: Vec<u8>,
    /// The client's sealed backup key; the vault cannot open it.
    #[serde(with = "base64_bytes")]
    pub sealed_key: Vec<u8>,
    /// Logins started since the last successful one.
    pub guesses: u32,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("version", &hex::encode(self.version))
            .field("guesses", &self.guesses)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRef {
    pub generation: u64,
    #[serde(with = "hex_array")]
    pub manifest_digest: [u8; MANIFEST_DIGEST_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBackup {
    pub generation: u64,
    #[serde(with = "hex_array")]
    pub manifest_digest: [u8; MANIFEST_DIGEST_LEN],
    /// The auth key of the key the pending generation is sealed under.
    #[serde(with = "hex_array")]
    pub auth_public_key: [u8; AUTH_PUBLIC_KEY_LEN],
}

impl PendingBackup {
    pub fn backup(&self) -> BackupRef {
        BackupRef {
            generation: self.generation,
            manifest_digest: self.manifest_digest,
        }
    }
}

impl AccountRow {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a row always serializes")
    }

    pub fn decode(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// The row that follows this one with `state`.
    pub fn next(&self, state: RowState) -> Self {
        Self {
            version: self.version + 1,
            state,
        }
    }
}

mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_readable_json() {
        let row = AccountRow {
            version: 3,
            state: RowState::Active(Account {
                auth_public_key: [1; 32],
                registration: Some(Registration {
                    version: [2; 16],
                    registration_id: [3; 16],
                    opaque_record: vec![4; 192],
                    sealed_key: vec![5; 60],
                    guesses: 2,
                }),
                committed: Some(BackupRef {
                    generation: 7,
                    manifest_digest: [6; 32],
                }),
                pending: None,
            }),
        };
        let text = String::from_utf8(row.encode()).unwrap();
        assert!(text.contains("\"guesses\":2"), "{text}");
        assert!(text.contains("\"state\":\"active\""), "{text}");
        assert_eq!(AccountRow::decode(text.as_bytes()), Some(row.clone()));
        let erased = row.next(RowState::Erased);
        assert_eq!(erased.version, 4);
        assert_eq!(AccountRow::decode(&erased.encode()), Some(erased));
        assert_eq!(AccountRow::decode(b"{\"version\":1}"), None);
    }
}
