//! Talking to the token: the module loaded once per process, the token
//! found by label, the user login with the PIN from its file, and the
//! sealing key found by label and checked to be one we may seal with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{KEY_BYTES, Pkcs11Config, Pkcs11Error};

/// The module loaded and initialised once per process: PKCS#11 allows one
/// `C_Initialize` per application, and every later user shares it.
pub fn module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: Mutex<BTreeMap<PathBuf, Pkcs11>> = Mutex::new(BTreeMap::new());
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = modules.get(path) {
        return Ok(loaded.clone());
    }
    if !path.exists() {
        return Err(Pkcs11Error::ModuleMissing {
            module: path.to_path_buf(),
        });
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| Pkcs11Error::NotAModule {
        module: path.to_path_buf(),
        detail: short(&e),
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialised: the same library reached by another path.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Pkcs11Error::ModuleInit {
                module: path.to_path_buf(),
                detail: short(&e),
            });
        }
    }
    modules.insert(path.to_path_buf(), pkcs11.clone());
    Ok(pkcs11)
}

/// A session on the configured token, logged in as the user.
pub(super) struct LoggedIn {
    pub(super) label: String,
    pub(super) session: Session,
}

impl LoggedIn {
    pub(super) fn open(config: &Pkcs11Config, read_write: bool) -> Result<Self, Pkcs11Error> {
        let pkcs11 = module(&config.module)?;
        let label = config.token_label.clone();
        let slot = find_token(&pkcs11, config)?;
        // The PIN lives for the login alone: both copies are wiped when
        // this function returns.
        let pin = AuthPin::from(read_pin(config)?.as_str());
        let session = if read_write {
            pkcs11.open_rw_session(slot)
        } else {
            pkcs11.open_ro_session(slot)
        }
        .map_err(token_error(&label, "C_OpenSession"))?;
        match session.login(UserType::User, Some(&pin)) {
            // Login is per application: another session of this process
            // (an earlier key, in tests) is logged in already.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                return Err(Pkcs11Error::WrongPin {
                    token: label,
                    pin_file: config.pin_file.clone().unwrap_or_default(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Pkcs11Error::PinLocked { token: label });
            }
            Err(e) => return Err(token_error(&label, "C_Login")(e)),
        }
        Ok(Self { label, session })
    }

    /// The one secret key labelled `label`, checked to be a non-extractable
    /// AES-256 key that may encrypt and decrypt; `None` if there is none.
    pub(super) fn sealing_key(&self, label: &str) -> Result<Option<ObjectHandle>, Pkcs11Error> {
        let found = self
            .session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(token_error(&self.label, "C_FindObjects"))?;
        let mut secret = Vec::new();
        let mut other = None;
        for object in found {
            match self.class(object)? {
                Some(class) if class == ObjectClass::SECRET_KEY => secret.push(object),
                class => other = other.or(Some(class)),
            }
        }
        let key = match (secret.as_slice(), other) {
            ([key], _) => *key,
            ([], None) => return Ok(None),
            ([], Some(class)) => {
                return Err(Pkcs11Error::WrongKeyType {
                    label: label.to_owned(),
                    token: self.label.clone(),
                    found: match class {
                        Some(class) => format!("a {class} object"),
                        None => "an object of unknown class".to_owned(),
                    },
                });
            }
            (keys, _) => {
                return Err(Pkcs11Error::DuplicateKey {
                    label: label.to_owned(),
                    token: self.label.clone(),
                    count: keys.len(),
                });
            }
        };
        self.check_key(label, key)?;
        Ok(Some(key))
    }

    fn class(&self, object: ObjectHandle) -> Result<Option<ObjectClass>, Pkcs11Error> {
        let attributes = self
            .session
            .get_attributes(object, &[AttributeType::Class])
            .map_err(token_error(&self.label, "C_GetAttributeValue"))?;
        Ok(attributes.into_iter().find_map(|a| match a {
            Attribute::Class(class) => Some(class),
            _ => None,
        }))
    }

    fn check_key(&self, label: &str, key: ObjectHandle) -> Result<(), Pkcs11Error> {
        let attributes = self
            .session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )
            .map_err(token_error(&self.label, "C_GetAttributeValue"))?;
        let (mut key_type, mut bytes) = (None, None);
        let (mut encrypt, mut decrypt, mut sensitive, mut extractable) =
            (false, false, false, true);
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::ValueLen(len) => bytes = Some(usize::from(len)),
                Attribute::Encrypt(b) => encrypt = b,
                Attribute::Decrypt(b) => decrypt = b,
                Attribute::Sensitive(b) => sensitive = b,
                Attribute::Extractable(b) => extractable = b,
                _ => {}
            }
        }
        let wrong_type = |found: String| Pkcs11Error::WrongKeyType {
            label: label.to_owned(),
            token: self.label.clone(),
            found,
        };
        match (key_type, bytes) {
            (Some(t), Some(KEY_BYTES)) if t == KeyType::AES => {}
            (Some(t), Some(n)) => return Err(wrong_type(format!("a {t} key of {} bits", n * 8))),
            (Some(t), None) => return Err(wrong_type(format!("a {t} key of unknown length"))),
            (None, _) => return Err(wrong_type("a secret key of unknown type".to_owned())),
        }
        if !(encrypt && decrypt) {
            return Err(wrong_type(
                "an AES-256 key that may not encrypt or decrypt".to_owned(),
            ));
        }
        if !sensitive || extractable {
            return Err(Pkcs11Error::KeyExtractable {
                label: label.to_owned(),
                token: self.label.clone(),
            });
        }
        Ok(())
    }
}

/// The slot of the one initialised token labelled as `config` says.
fn find_token(pkcs11: &Pkcs11, config: &Pkcs11Config) -> Result<Slot, Pkcs11Error> {
    let unlabelled = "(module)".to_owned();
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(token_error(&unlabelled, "C_GetSlotList"))?;
    let mut found = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(token_error(&unlabelled, "C_GetTokenInfo"))?;
        if info.label() == config.token_label {
            matching.push(slot);
        }
        found.push(info.label().to_owned());
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Pkcs11Error::TokenNotFound {
            label: config.token_label.clone(),
            module: config.module.clone(),
            found,
        }),
        many => Err(Pkcs11Error::DuplicateToken {
            label: config.token_label.clone(),
            module: config.module.clone(),
            count: many.len(),
        }),
    }
}

/// The user PIN from the PIN file: its first line, without the line end.
/// Every copy is wiped when dropped.
fn read_pin(config: &Pkcs11Config) -> Result<Zeroizing<String>, Pkcs11Error> {
    let path = config
        .pin_file
        .as_ref()
        .ok_or_else(|| Pkcs11Error::PinFileNotSet {
            token: config.token_label.clone(),
        })?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| Pkcs11Error::PinFile {
        path: path.clone(),
        source,
    })?);
    let bad = || Pkcs11Error::BadPinFile { path: path.clone() };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let pin = text.lines().next().unwrap_or("");
    if pin.is_empty() {
        return Err(bad());
    }
    Ok(Zeroizing::new(pin.to_owned()))
}

/// Maps a failed call on `token` to [`Pkcs11Error::Token`].
pub(super) fn token_error(
    token: &str,
    operation: &'static str,
) -> impl FnOnce(CkError) -> Pkcs11Error {
    let token = token.to_owned();
    move |error| Pkcs11Error::Token {
        token,
        operation,
        detail: short(&error),
    }
}

/// The return value's name rather than cryptoki's paragraph about it.
fn short(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, _) => format!("{rv:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_the_first_line_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        for text in ["1234\n", "1234", "1234\r\n", "1234\nsecond line\n"] {
            std::fs::write(&path, text).unwrap();
            let pin = read_pin(&pin_config(&path)).unwrap();
            assert_eq!(pin.as_str(), "1234");
        }
        for text in [&b""[..], b"\n", b"\xff\xfe"] {
            std::fs::write(&path, text).unwrap();
            let error = read_pin(&pin_config(&path)).unwrap_err();
            assert!(matches!(error, Pkcs11Error::BadPinFile { .. }), "{error:?}");
        }
    }

    fn pin_config(path: &Path) -> Pkcs11Config {
        Pkcs11Config {
            module: PathBuf::from("m"),
            token_label: "t".into(),
            key_label: "k".into(),
            pin_file: Some(path.to_path_buf()),
        }
    }
}
