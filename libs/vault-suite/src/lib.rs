//! The one definition of the vault protocol's cryptographic suite, shared by
//! the key vault (`services/key-vault`) and the device (`clients/backup-client`),
//! so the two can never disagree on a primitive or a label.
//!
//! - [`Suite`]: OPAQUE (`opaque-ke` 4.0.1) over ristretto255 for the OPRF and
//!   the TripleDH key exchange, SHA-512, and Argon2id as the client's key
//!   stretching function. Re-exported as [`opaque_ke`] so both sides use the
//!   same crate version.
//! - [`argon2_production`] and [`argon2_insecure_fast_for_tests`]: the
//!   client's Argon2id parameters. The vault never runs the KSF.
//! - [`fingerprint`]: what a client pins for the vault's public key.
//! - [`seal_login_response`] / [`open_login_response`]: the extra layer the
//!   vault puts around the sealed key blob after a successful login, under a
//!   key from the OPAQUE session key.
//! - [`blob`]: the `nonce || AES-256-GCM` blob every vault-side secret is
//!   sealed in.
//! - [`proof`]: proof of the backup key by an Ed25519 signature over a
//!   fresh vault challenge (the message both sides build, and its check).
//! - Lengths of every fixed-size field on the wire, and the `e2eb-reason`
//!   values of FAILED_PRECONDITION statuses.
//!
//! OPAQUE parameters both sides must use: no context
//! (`ServerLoginParameters::default()` / `ClientLoginFinishParameters` with
//! `context: None`) and the default identifiers (the two public keys).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use opaque_ke::generic_array::typenum::Unsigned;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub mod blob;
pub mod proof;

pub use argon2;
pub use opaque_ke;

/// The vault protocol's OPAQUE cipher suite.
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = Argon2<'static>;
}

/// Bytes of `RegisterStartRequest.registration_request`.
pub const REGISTRATION_REQUEST_LEN: usize =
    <opaque_ke::RegistrationRequestLen<Suite> as Unsigned>::USIZE;
/// Bytes of `RegisterStartResponse.registration_response`.
pub const REGISTRATION_RESPONSE_LEN: usize =
    <opaque_ke::RegistrationResponseLen<Suite> as Unsigned>::USIZE;
/// Bytes of `RegisterFinishRequest.registration_upload`.
pub const REGISTRATION_UPLOAD_LEN: usize =
    <opaque_ke::RegistrationUploadLen<Suite> as Unsigned>::USIZE;
/// Bytes of `LoginStartRequest.credential_request`.
pub const CREDENTIAL_REQUEST_LEN: usize =
    <opaque_ke::CredentialRequestLen<Suite> as Unsigned>::USIZE;
/// Bytes of `LoginStartResponse.credential_response`.
pub const CREDENTIAL_RESPONSE_LEN: usize =
    <opaque_ke::CredentialResponseLen<Suite> as Unsigned>::USIZE;
/// Bytes of `LoginFinishRequest.credential_finalization` (or 0: see the proto).
pub const CREDENTIAL_FINALIZATION_LEN: usize =
    <opaque_ke::CredentialFinalizationLen<Suite> as Unsigned>::USIZE;
/// Bytes of the vault's public key (a ristretto255 point).
pub const SERVER_PUBLIC_KEY_LEN: usize = 32;

/// Bytes of the registration id the vault hands out at RegisterStart.
pub const REGISTRATION_ID_LEN: usize = 16;
/// Bytes of a login session id.
pub const SESSION_ID_LEN: usize = 16;
/// Bytes of a login ticket.
pub const LOGIN_TICKET_LEN: usize = 32;
/// Largest sealed key blob the vault stores.
pub const MAX_SEALED_KEY_LEN: usize = 1024;

/// gRPC metadata key that names why a call failed with FAILED_PRECONDITION.
pub const REASON_METADATA_KEY: &str = "e2eb-reason";
/// The record was erased after too many wrong guesses: the key is gone for
/// good; only a start-over (DeleteRecord with `start_over`) clears the account.
pub const REASON_KEY_ERASED: &str = "key-erased";
/// A record exists and the call carried no authorization.
pub const REASON_PROOF_REQUIRED: &str = "proof-required";
/// No login session with this id for this account (never started, already
/// finished, or purged after expiry).
pub const REASON_SESSION_UNKNOWN: &str = "session-unknown";
/// The login session expired before LoginFinish.
pub const REASON_SESSION_EXPIRED: &str = "session-expired";
/// The record was replaced or deleted while the call was in flight.
pub const REASON_RECORD_CHANGED: &str = "record-changed";
/// The challenge of a key signature is unknown, used or expired.
pub const REASON_CHALLENGE_UNKNOWN: &str = "challenge-unknown";
/// NOT_FOUND for a login on an account that has a key-only record.
pub const REASON_NO_PASSWORD: &str = "no-password";
/// A pointer update does not follow the stored backup pointer.
pub const REASON_POINTER_STALE: &str = "pointer-stale";

/// Bytes of the AES-GCM nonce that starts [`seal_login_response`]'s output.
pub const NONCE_LEN: usize = 12;
/// HKDF-SHA256 `info` for the key that encrypts the login response
/// (`LoginSuccess.encrypted_sealed_key`); the input key material is the whole
/// 64-byte OPAQUE session key, with no salt.
pub const LOGIN_RESPONSE_KEY_INFO: &[u8] = b"e2ebackup/vault/v1/login-response-key";

/// Lowercase hex SHA-256 of the vault's public key: the string clients pin.
pub fn fingerprint(server_public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(server_public_key))
}

/// Argon2id with m = 19 MiB (19456 KiB), t = 2, p = 1: the production KSF.
///
/// These are the minimum parameters OWASP's Password Storage Cheat Sheet
/// recommends for Argon2id, and also `argon2`'s own defaults (so
/// `Argon2::default()`, which opaque-ke uses when no KSF is passed, is the
/// same function). On a phone a client step takes tens of milliseconds,
/// which is invisible once per restore, yet every offline guess against a
/// stolen OPRF output costs an attacker 19 MiB of memory traffic twice over.
/// The vault's guess limit is the main defence; Argon2id is defence in depth
/// should the vault's secrets ever leak.
pub fn argon2_production() -> Argon2<'static> {
    argon2id(19 * 1024, 2, 1)
}

/// Argon2id with m = 64 KiB, t = 1, p = 1: for tests and benchmarks only.
/// It offers no protection against offline guessing; a client that used it
/// in production would make its password cheap to crack.
pub fn argon2_insecure_fast_for_tests() -> Argon2<'static> {
    argon2id(64, 1, 1)
}

fn argon2id(m_cost: u32, t_cost: u32, p_cost: u32) -> Argon2<'static> {
    let params =
        Params::new(m_cost, t_cost, p_cost, None).expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The login response could not be opened: the session key, the account or
/// the bytes differ from what the vault used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the vault's login response does not decrypt under this session key and account")]
pub struct LoginResponseError;

fn login_response_cipher(session_key: &[u8]) -> Aes256Gcm {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, session_key)
        .expand(LOGIN_RESPONSE_KEY_INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(key.as_ref()).expect("the key is 32 bytes")
}

/// Encrypts `sealed_key` for the client that finished a login: a
/// [`blob`] under `key = HKDF-SHA256(ikm = session_key, salt = none,
/// info = LOGIN_RESPONSE_KEY_INFO)` with the account id's bytes as `aad`.
pub fn seal_login_response(session_key: &[u8], account: &str, sealed_key: &[u8]) -> Vec<u8> {
    blob::seal(
        &login_response_cipher(session_key),
        account.as_bytes(),
        sealed_key,
    )
}

/// Reverses [`seal_login_response`]: returns the sealed key blob.
pub fn open_login_response(
    session_key: &[u8],
    account: &str,
    encrypted: &[u8],
) -> Result<Vec<u8>, LoginResponseError> {
    blob::open(
        &login_response_cipher(session_key),
        account.as_bytes(),
        encrypted,
    )
    .map(|plain| plain.to_vec())
    .map_err(|_| LoginResponseError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lengths_are_the_suite_s() {
        assert_eq!(REGISTRATION_REQUEST_LEN, 32);
        assert_eq!(REGISTRATION_RESPONSE_LEN, 64);
        assert_eq!(REGISTRATION_UPLOAD_LEN, 192);
        assert_eq!(CREDENTIAL_REQUEST_LEN, 96);
        assert_eq!(CREDENTIAL_RESPONSE_LEN, 320);
        assert_eq!(CREDENTIAL_FINALIZATION_LEN, 64);
    }

    #[test]
    fn production_argon2_is_owasp_minimum_and_the_crate_default() {
        let params = argon2_production().params().clone();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (19456, 2, 1)
        );
        assert_eq!(&params, Argon2::default().params());
        let fast = argon2_insecure_fast_for_tests().params().clone();
        assert_eq!((fast.m_cost(), fast.t_cost(), fast.p_cost()), (64, 1, 1));
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn login_response_round_trips_and_binds_key_and_account() {
        let session_key = [7u8; 64];
        let sealed = seal_login_response(&session_key, "alice", b"sealed blob");
        assert_eq!(sealed.len(), NONCE_LEN + b"sealed blob".len() + 16);
        assert_eq!(
            open_login_response(&session_key, "alice", &sealed).unwrap(),
            b"sealed blob"
        );
        assert_eq!(
            open_login_response(&session_key, "bob", &sealed),
            Err(LoginResponseError)
        );
        assert_eq!(
            open_login_response(&[8u8; 64], "alice", &sealed),
            Err(LoginResponseError)
        );
        assert_eq!(
            open_login_response(&session_key, "alice", &sealed[..5]),
            Err(LoginResponseError)
        );
    }
}
