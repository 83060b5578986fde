//! The embedded default sealing key: 32 random bytes kept as 64 hex digits
//! in a file (mode 0600) beside the database. Whoever reads the file can
//! open the vault secrets; [`super::pkcs11`] keeps the key in a token instead.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use rand::RngCore;
use vault_suite::blob;
use zeroize::Zeroizing;

use super::{NONCE_LEN, SealingError, SealingKeySource, SourceKind, frame, unframe};

/// A 32-byte AES-256-GCM key kept as 64 hex digits in a file.
pub struct FileSealingKey {
    path: PathBuf,
    cipher: Aes256Gcm,
}

impl fmt::Debug for FileSealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileSealingKey({}, <redacted>)", self.path.display())
    }
}

impl FileSealingKey {
    /// Reads the key from `path`, creating the file (mode 0600) with a new
    /// random key if it does not exist. Safe when several processes start
    /// at once: exactly one key wins (the same scheme as the token key).
    pub fn load_or_create(path: &Path) -> Result<Self, SealingError> {
        let io = |source| SealingError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(key.as_mut());
            let text = Zeroizing::new(hex::encode(key.as_ref()));
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut file = open_private(&tmp).map_err(io)?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            // hard_link fails if another process created the key first; then
            // theirs is the key and ours is dropped.
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| {
            SealingError::InvalidKeyFile {
                path: path.to_path_buf(),
            }
        })?;
        Ok(Self::from_bytes(path, &key))
    }

    /// A key given directly (tests); `origin` only names it in errors.
    pub fn from_bytes(origin: &Path, key: &[u8; 32]) -> Self {
        Self {
            path: origin.to_path_buf(),
            cipher: Aes256Gcm::new_from_slice(key).expect("the key is 32 bytes"),
        }
    }
}

impl SealingKeySource for FileSealingKey {
    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealingError> {
        let sealed = blob::seal(&self.cipher, aad, plaintext);
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = nonce.try_into().expect("split at the nonce length");
        Ok(frame(SourceKind::KeyFile, nonce, ciphertext))
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        // The blob after the source byte, once the source is checked.
        unframe(sealed, SourceKind::KeyFile, || self.describe())?;
        blob::open(&self.cipher, aad, &sealed[1..]).map_err(|_| SealingError::DoesNotOpen {
            source_name: self.describe(),
        })
    }
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_once_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/sealing.key");
        let first = FileSealingKey::load_or_create(&path).unwrap();
        let second = FileSealingKey::load_or_create(&path).unwrap();
        let sealed = first.seal(b"secret", b"aad").unwrap();
        assert_eq!(second.open(&sealed, b"aad").unwrap().as_slice(), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(!format!("{first:?}").contains(&text));
    }

    #[test]
    fn wrong_key_aad_or_bytes_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileSealingKey::from_bytes(&dir.path().join("a"), &[1; 32]);
        let other = FileSealingKey::from_bytes(&dir.path().join("b"), &[2; 32]);
        let sealed = key.seal(b"secret", b"aad").unwrap();
        assert!(matches!(
            other.open(&sealed, b"aad"),
            Err(SealingError::DoesNotOpen { .. })
        ));
        assert!(key.open(&sealed, b"other aad").is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(key.open(&flipped, b"aad").is_err());
        assert!(key.open(&[], b"aad").is_err());
        assert!(
            key.open(&[SourceKind::KeyFile as u8, 0, 0], b"aad")
                .is_err()
        );
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not hex").unwrap();
        let error = FileSealingKey::load_or_create(&path).unwrap_err();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }
}
