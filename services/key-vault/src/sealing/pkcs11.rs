//! The sealing key inside a PKCS#11 token (SoftHSM2 here, an HSM in
//! production): an AES-256 secret key generated in the token as sensitive
//! and never extractable, used through CKM_AES_GCM, so the key never leaves
//! the token and a copy of the vault's disk opens nothing.
//!
//! [`Pkcs11SealingKey::open`] loads the module, finds the token by label,
//! logs in as the user with a PIN read from a file, finds the key by label
//! and checks that it is what we seal with; every way that can fail is its
//! own [`Pkcs11Error`] saying what to do. A start never creates a key:
//! [`create_key_if_missing`] (the `key-vault pkcs11-init` subcommand) does,
//! once per token. All of this blocks on the token: call it from a blocking
//! thread. Sealing and opening take one logged-in session that lives as
//! long as the key (behind a mutex: the vault seals only at start and on
//! rare occasions), so the PIN is dropped once the login is done.
//! [`token`] does the talking to the token; this file is the sealing.

mod token;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use clap::Args;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{NONCE_LEN, SealingError, SealingKeySource, SourceKind, TAG_LEN, frame, unframe};
pub use token::module;
use token::{LoggedIn, token_error};

/// Debian's SoftHSM2 module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// AES-256: the only key we seal with.
const KEY_BYTES: usize = 32;

/// Where the token and its key are; used when `--sealing pkcs11`. Global,
/// so `key-vault pkcs11-init` takes the same flags as a start.
#[derive(Debug, Clone, Args)]
pub struct Pkcs11Config {
    /// The token vendor's PKCS#11 module (a shared library).
    #[arg(
        long = "pkcs11-module",
        env = "KEY_VAULT_PKCS11_MODULE",
        default_value = SOFTHSM2_MODULE,
        global = true
    )]
    pub module: PathBuf,
    /// The label of the token that holds the sealing key.
    #[arg(
        long = "pkcs11-token-label",
        env = "KEY_VAULT_PKCS11_TOKEN_LABEL",
        default_value = "e2eb-vault",
        global = true
    )]
    pub token_label: String,
    /// The label of the AES-256 sealing key inside the token.
    #[arg(
        long = "pkcs11-key-label",
        env = "KEY_VAULT_PKCS11_KEY_LABEL",
        default_value = "e2eb-vault-sealing",
        global = true
    )]
    pub key_label: String,
    /// A file holding the token's user PIN (one line; keep it mode 0600).
    /// Never given on the command line, never logged.
    #[arg(
        long = "pkcs11-pin-file",
        env = "KEY_VAULT_PKCS11_PIN_FILE",
        global = true
    )]
    pub pin_file: Option<PathBuf>,
}

/// Why the token or its key cannot be used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error(
        "the PKCS#11 module {module} does not exist; set --pkcs11-module \
         (KEY_VAULT_PKCS11_MODULE) to your token vendor's PKCS#11 library \
         (SoftHSM2: apt-get install softhsm2, {SOFTHSM2_MODULE})"
    )]
    ModuleMissing { module: PathBuf },
    #[error(
        "{module} is not a PKCS#11 module ({detail}); set --pkcs11-module \
         (KEY_VAULT_PKCS11_MODULE) to your token vendor's PKCS#11 library"
    )]
    NotAModule { module: PathBuf, detail: String },
    #[error(
        "the PKCS#11 module {module} failed to initialise ({detail}); check its \
         configuration (SoftHSM2: the file SOFTHSM2_CONF names and its tokendir)"
    )]
    ModuleInit { module: PathBuf, detail: String },
    #[error(
        "no token labelled {label:?} in {module}; tokens found: {found:?}. Set \
         --pkcs11-token-label (KEY_VAULT_PKCS11_TOKEN_LABEL), or initialise a token \
         (SoftHSM2: softhsm2-util --init-token --free --label {label:?})"
    )]
    TokenNotFound {
        label: String,
        module: PathBuf,
        found: Vec<String>,
    },
    #[error(
        "{count} tokens are labelled {label:?} in {module}; give the vault's token \
         a label no other token has"
    )]
    DuplicateToken {
        label: String,
        module: PathBuf,
        count: usize,
    },
    #[error(
        "no PIN file for token {token:?}: set --pkcs11-pin-file (KEY_VAULT_PKCS11_PIN_FILE) \
         to a file (mode 0600) holding the token's user PIN"
    )]
    PinFileNotSet { token: String },
    #[error("cannot read the PIN file {path}: {source}")]
    PinFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the PIN file {path} is empty or not UTF-8; write the token's user PIN in it")]
    BadPinFile { path: PathBuf },
    #[error(
        "the PIN in {pin_file} is not the user PIN of token {token:?}; fix the file \
         (--pkcs11-pin-file). Tokens lock the PIN after too many wrong tries"
    )]
    WrongPin { token: String, pin_file: PathBuf },
    #[error(
        "the user PIN of token {token:?} is locked after too many wrong tries; the \
         token's security officer must reset it (SoftHSM2: softhsm2-util --init-pin)"
    )]
    PinLocked { token: String },
    #[error(
        "no secret key labelled {label:?} in token {token:?}. A start never creates one: \
         run `key-vault pkcs11-init` with the same --pkcs11-* settings once, which \
         generates a non-extractable AES-256 key inside the token. If the vault's \
         secrets were sealed with a key that is gone, they cannot be opened"
    )]
    KeyNotFound { label: String, token: String },
    #[error(
        "{count} secret keys are labelled {label:?} in token {token:?}; the vault cannot \
         tell which one sealed its secrets. Remove the extra keys or choose another label"
    )]
    DuplicateKey {
        label: String,
        token: String,
        count: usize,
    },
    #[error(
        "the object labelled {label:?} in token {token:?} is {found}, not an AES-256 \
         secret key that may encrypt and decrypt; use another --pkcs11-key-label, or \
         create one with `key-vault pkcs11-init`"
    )]
    WrongKeyType {
        label: String,
        token: String,
        found: String,
    },
    #[error(
        "the key labelled {label:?} in token {token:?} can leave the token (it is not \
         sensitive, or it is extractable); the vault seals only with keys that never \
         leave: create one with `key-vault pkcs11-init` under another label"
    )]
    KeyExtractable { label: String, token: String },
    #[error("PKCS#11 {operation} failed on token {token:?}: {detail}")]
    Token {
        token: String,
        operation: &'static str,
        detail: String,
    },
}

/// What [`create_key_if_missing`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCreation {
    Created,
    AlreadyThere,
}

/// An AES-256 key inside a PKCS#11 token, used through one logged-in session.
pub struct Pkcs11SealingKey {
    description: String,
    token: String,
    key: ObjectHandle,
    session: Mutex<Session>,
}

impl fmt::Debug for Pkcs11SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11SealingKey({})", self.description)
    }
}

impl Pkcs11SealingKey {
    /// Logs in to the token and finds the sealing key that `config` names.
    /// Blocks on the token: call it from a blocking thread.
    pub fn open(config: &Pkcs11Config) -> Result<Self, Pkcs11Error> {
        let token = LoggedIn::open(config, false)?;
        let key =
            token
                .sealing_key(&config.key_label)?
                .ok_or_else(|| Pkcs11Error::KeyNotFound {
                    label: config.key_label.clone(),
                    token: token.label.clone(),
                })?;
        Ok(Self {
            description: format!(
                "PKCS#11 key {:?} in token {:?} ({})",
                config.key_label,
                config.token_label,
                config.module.display()
            ),
            token: token.label,
            key,
            session: Mutex::new(token.session),
        })
    }

    fn failure(&self, operation: &'static str, error: CkError) -> SealingError {
        token_error(&self.token, operation)(error).into()
    }
}

impl SealingKeySource for Pkcs11SealingKey {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealingError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .gcm(Direction::Encrypt, &nonce, aad, plaintext)
            .map_err(|e| self.failure("C_Encrypt", e))?;
        Ok(frame(SourceKind::Pkcs11Token, &nonce, &ciphertext))
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        let (nonce, ciphertext) = unframe(sealed, SourceKind::Pkcs11Token, || self.describe())?;
        let does_not_open = || SealingError::DoesNotOpen {
            source_name: self.describe(),
        };
        match self.gcm(Direction::Decrypt, nonce, aad, ciphertext) {
            Ok(plaintext) => Ok(plaintext),
            // The tag did not verify: another key, other AAD or altered bytes.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                _,
            )) => Err(does_not_open()),
            // SoftHSM2 reports a tag mismatch as CKR_GENERAL_ERROR. If the
            // token still seals and opens, that is what it was.
            Err(CkError::Pkcs11(RvError::GeneralError, _)) if self.works() => Err(does_not_open()),
            Err(e) => Err(self.failure("C_Decrypt", e)),
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

impl Pkcs11SealingKey {
    /// One CKM_AES_GCM operation with a 16-byte tag inside the token.
    fn gcm(
        &self,
        direction: Direction,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        input: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CkError> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, Ulong::new((TAG_LEN * 8) as _))?;
        let mechanism = Mechanism::AesGcm(params);
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        match direction {
            Direction::Encrypt => session.encrypt(&mechanism, self.key, input),
            Direction::Decrypt => session.decrypt(&mechanism, self.key, input),
        }
        .map(Zeroizing::new)
    }

    /// Whether the token still seals and opens a probe message.
    fn works(&self) -> bool {
        const PROBE: &[u8] = b"e2ebackup/vault/sealing-self-test";
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.gcm(Direction::Encrypt, &nonce, PROBE, PROBE)
            .and_then(|sealed| self.gcm(Direction::Decrypt, &nonce, PROBE, &sealed))
            .is_ok_and(|opened| opened.as_slice() == PROBE)
    }
}

/// Generates the sealing key `config` names inside the token unless a
/// valid one is there already: AES-256, on the token, private, sensitive,
/// never extractable, for encryption and decryption only. Blocks on the token.
pub fn create_key_if_missing(config: &Pkcs11Config) -> Result<KeyCreation, Pkcs11Error> {
    let token = LoggedIn::open(config, true)?;
    if token.sealing_key(&config.key_label)?.is_some() {
        return Ok(KeyCreation::AlreadyThere);
    }
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::new(KEY_BYTES as _)),
        Attribute::Label(config.key_label.as_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
    ];
    token
        .session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(token_error(&token.label, "C_GenerateKey"))?;
    Ok(KeyCreation::Created)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn settings(module: &Path, pin_file: Option<PathBuf>) -> Pkcs11Config {
        Pkcs11Config {
            module: module.to_path_buf(),
            token_label: "t".into(),
            key_label: "k".into(),
            pin_file,
        }
    }

    #[test]
    fn a_missing_module_or_a_file_that_is_not_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("libnothing.so");
        let error = Pkcs11SealingKey::open(&settings(&missing, None)).unwrap_err();
        assert!(
            matches!(&error, Pkcs11Error::ModuleMissing { module } if *module == missing),
            "{error:?}"
        );
        assert!(error.to_string().contains("--pkcs11-module"), "{error}");

        let garbage = dir.path().join("garbage.so");
        std::fs::write(&garbage, b"not a shared library").unwrap();
        let error = create_key_if_missing(&settings(&garbage, None)).unwrap_err();
        assert!(matches!(error, Pkcs11Error::NotAModule { .. }), "{error:?}");
        assert!(
            error.to_string().contains("is not a PKCS#11 module"),
            "{error}"
        );
    }
}
