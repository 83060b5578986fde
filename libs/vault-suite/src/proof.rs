//! Proof of the backup key `K` without sending anything replayable.
//!
//! The device derives an Ed25519 key pair from `K` (the *backup auth key*,
//! its own HKDF label). The vault stores only the public half. To prove `K`
//! for one operation, the device asks the vault for a fresh challenge
//! (single use, short-lived) and signs [`proof_message`]: a domain label,
//! the account, the operation's name, the challenge and the operation's
//! arguments, each length-prefixed so no two inputs share an encoding. A
//! signature is good for that one operation on that one account once; a
//! stolen vault database (public keys only) proves nothing.

use ed25519_dalek::{Signature, VerifyingKey};

/// Bytes of a backup auth public key (Ed25519).
pub const AUTH_PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of a vault challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Bytes of a manifest digest (SHA-256 of the sealed manifest).
pub const MANIFEST_DIGEST_LEN: usize = 32;

const DOMAIN: &[u8] = b"e2ebackup/vault/v2/key-proof";

/// What a signature authorizes, with the arguments it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofOperation<'a> {
    /// Replace the password registration (a password change, a step of a
    /// key rotation), registering `auth_public_key`.
    Register {
        registration_id: &'a [u8; 16],
        auth_public_key: &'a [u8; AUTH_PUBLIC_KEY_LEN],
    },
    /// Replace the record with a key-only one registering `auth_public_key`.
    EnableKey {
        auth_public_key: &'a [u8; AUTH_PUBLIC_KEY_LEN],
    },
    /// Delete the record (backups disabled).
    Delete,
    /// Announce the generation about to be committed.
    SetPending {
        generation: u64,
        digest: &'a [u8; MANIFEST_DIGEST_LEN],
        auth_public_key: &'a [u8; AUTH_PUBLIC_KEY_LEN],
    },
    /// Confirm the pending generation as committed.
    Confirm {
        generation: u64,
        digest: &'a [u8; MANIFEST_DIGEST_LEN],
    },
}

impl ProofOperation<'_> {
    /// The operation's name, as signed and as logged.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::EnableKey { .. } => "enable-key",
            Self::Delete => "delete",
            Self::SetPending { .. } => "set-pending",
            Self::Confirm { .. } => "confirm",
        }
    }
}

/// The bytes a backup auth key signs for `operation` on `account`.
pub fn proof_message(
    account: &str,
    challenge: &[u8; CHALLENGE_LEN],
    operation: &ProofOperation<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for field in [
        DOMAIN,
        account.as_bytes(),
        operation.name().as_bytes(),
        challenge,
    ] {
        push_field(&mut out, field);
    }
    match operation {
        ProofOperation::Register {
            registration_id,
            auth_public_key,
        } => {
            push_field(&mut out, registration_id.as_slice());
            push_field(&mut out, auth_public_key.as_slice());
        }
        ProofOperation::EnableKey { auth_public_key } => {
            push_field(&mut out, auth_public_key.as_slice());
        }
        ProofOperation::Delete => {}
        ProofOperation::SetPending {
            generation,
            digest,
            auth_public_key,
        } => {
            push_field(&mut out, &generation.to_be_bytes());
            push_field(&mut out, digest.as_slice());
            push_field(&mut out, auth_public_key.as_slice());
        }
        ProofOperation::Confirm { generation, digest } => {
            push_field(&mut out, &generation.to_be_bytes());
            push_field(&mut out, digest.as_slice());
        }
    }
    out
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).expect("proof fields are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the registered backup auth key is not a valid Ed25519 public key")]
    BadPublicKey,
    #[error("the signature does not verify under the registered backup auth key")]
    BadSignature,
}

/// Checks `signature` over [`proof_message`] with `public_key` (strict
/// RFC 8032 verification: no malleable or small-order encodings).
pub fn verify_proof(
    public_key: &[u8; AUTH_PUBLIC_KEY_LEN],
    account: &str,
    challenge: &[u8; CHALLENGE_LEN],
    operation: &ProofOperation<'_>,
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), ProofError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| ProofError::BadPublicKey)?;
    let message = proof_message(account, challenge, operation);
    key.verify_strict(&message, &Signature::from_bytes(signature))
        .map_err(|_| ProofError::BadSignature)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn sign(
        key: &SigningKey,
        account: &str,
        challenge: &[u8; 32],
        op: &ProofOperation,
    ) -> [u8; 64] {
        key.sign(&proof_message(account, challenge, op)).to_bytes()
    }

    #[test]
    fn a_signature_verifies_only_for_its_account_challenge_operation_and_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        let digest = [9; 32];
        let op = ProofOperation::Confirm {
            generation: 4,
            digest: &digest,
        };
        let signature = sign(&key, "alice", &[1; 32], &op);
        assert_eq!(
            verify_proof(&public, "alice", &[1; 32], &op, &signature),
            Ok(())
        );

        let other_gen = ProofOperation::Confirm {
            generation: 5,
            digest: &digest,
        };
        let other_key = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        for (public, account, challenge, op) in [
            (public, "bob", [1; 32], op),
            (public, "alice", [2; 32], op),
            (public, "alice", [1; 32], other_gen),
            (public, "alice", [1; 32], ProofOperation::Delete),
            (other_key, "alice", [1; 32], op),
        ] {
            assert_eq!(
                verify_proof(&public, account, &challenge, &op, &signature),
                Err(ProofError::BadSignature)
            );
        }
    }

    #[test]
    fn operations_and_fields_never_share_an_encoding() {
        let pk = [3; 32];
        let digest = [4; 32];
        let messages = [
            proof_message("a", &[0; 32], &ProofOperation::Delete),
            proof_message(
                "a",
                &[0; 32],
                &ProofOperation::EnableKey {
                    auth_public_key: &pk,
                },
            ),
            proof_message(
                "a",
                &[0; 32],
                &ProofOperation::Confirm {
                    generation: 1,
                    digest: &digest,
                },
            ),
            proof_message(
                "a",
                &[0; 32],
                &ProofOperation::SetPending {
                    generation: 1,
                    digest: &digest,
                    auth_public_key: &pk,
                },
            ),
        ];
        for (i, a) in messages.iter().enumerate() {
            for b in &messages[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_public_key_that_is_not_a_point_is_refused() {
        // The y-coordinate 2 with the sign bit set does not decompress.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        bad[31] = 0x80;
        let result = verify_proof(&bad, "a", &[0; 32], &ProofOperation::Delete, &[0; 64]);
        assert!(result.is_err());
    }
}
