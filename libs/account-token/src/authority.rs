//! The account authority's signing key (Ed25519, PASERK `k4.secret`) and the
//! public key it hands to the services (PASERK `k4.public`). Only the
//! authority — the chat server in WhatsApp's design, `mint-token` and the
//! simulator here — ever loads the secret key; the services load the public
//! key file that [`Authority::load_or_create`] writes beside it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::version4::V4;
use zeroize::Zeroizing;

use crate::claims::{self, MintError};
use crate::{AccountId, Audience, Token};

/// How long a token lives unless the caller says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// The holder of the token signing key. Its `Debug` is redacted and the
/// key is zeroized on drop (pasetors' `AsymmetricSecretKey` does both).
pub struct Authority {
    secret: AsymmetricSecretKey<V4>,
    public: PublicKey,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Authority(secret: <redacted>, public: {:?})",
            self.public
        )
    }
}

/// The authority's public key: all a service needs to verify tokens.
#[derive(Clone, PartialEq)]
pub struct PublicKey(AsymmetricPublicKey<V4>);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_paserk())
    }
}

/// A key file that cannot be used, and which one.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or create the key file {path}: {error}{hint}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error("the key file {path} does not hold a PASERK {expected} key")]
    Invalid {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "the account authority's secret key {path} is readable by other users (mode {mode:o}); run `chmod 600` on it"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

impl Authority {
    /// A fresh key pair held in memory only (tests, one-off authorities).
    pub fn generate() -> Self {
        let pair = AsymmetricKeyPair::<V4>::generate().expect("the OS RNG yields a key pair");
        Self {
            secret: pair.secret,
            public: PublicKey(pair.public),
        }
    }

    /// Reads the secret key from `key_file`, creating it (mode 0600, new
    /// random key) if it does not exist, and writes the public key to
    /// [`public_key_file`]`(key_file)`. Safe when several processes start
    /// at once: exactly one key wins.
    pub fn load_or_create(key_file: &Path) -> Result<Self, KeyFileError> {
        if !key_file.exists() {
            let fresh = Self::generate();
            let paserk = Zeroizing::new(paserk(&fresh.secret));
            create_private_once(key_file, paserk.as_bytes())?;
        }
        check_private(key_file)?;
        let text = Zeroizing::new(std::fs::read_to_string(key_file).map_err(io(key_file))?);
        let secret = AsymmetricSecretKey::<V4>::try_from(text.trim()).map_err(|_| {
            KeyFileError::Invalid {
                path: key_file.to_path_buf(),
                expected: "k4.secret",
            }
        })?;
        let public =
            AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| KeyFileError::Invalid {
                path: key_file.to_path_buf(),
                expected: "k4.secret",
            })?;
        let authority = Self {
            secret,
            public: PublicKey(public),
        };
        authority.public.write(&public_key_file(key_file))?;
        Ok(authority)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// A token for `account` at `audience`, valid from now for `ttl`.
    pub fn mint(
        &self,
        account: &AccountId,
        audience: Audience,
        ttl: Duration,
    ) -> Result<Token, MintError> {
        self.mint_at(account, audience, SystemTime::now(), ttl)
    }

    /// A token issued at `issued_at` (tests use this for tokens that have
    /// expired or are not valid yet).
    pub fn mint_at(
        &self,
        account: &AccountId,
        audience: Audience,
        issued_at: SystemTime,
        ttl: Duration,
    ) -> Result<Token, MintError> {
        let claims = claims::build(account, audience, issued_at, ttl)?;
        pasetors::public::sign(&self.secret, &claims, None, None)
            .map(Token::new)
            .map_err(|error| MintError::Signing(error.to_string()))
    }
}

/// Where [`Authority::load_or_create`] writes the public key for `key_file`:
/// the same name with the extension `.pub`.
pub fn public_key_file(key_file: &Path) -> PathBuf {
    key_file.with_extension("pub")
}

impl PublicKey {
    /// Reads a PASERK `k4.public` key file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyFileError::Io {
            path: path.to_path_buf(),
            error,
            hint: "; the account authority writes it beside its secret key \
                   (`make up`, or `mint-token` once)",
        })?;
        Self::from_paserk(text.trim()).ok_or_else(|| KeyFileError::Invalid {
            path: path.to_path_buf(),
            expected: "k4.public",
        })
    }

    /// Parses `k4.public.<base64url>`; `None` for anything else.
    pub fn from_paserk(text: &str) -> Option<Self> {
        AsymmetricPublicKey::<V4>::try_from(text).ok().map(Self)
    }

    pub fn to_paserk(&self) -> String {
        paserk(&self.0)
    }

    pub(crate) fn as_pasetors(&self) -> &AsymmetricPublicKey<V4> {
        &self.0
    }

    /// Writes the key atomically (readers never see half a key), unless
    /// the file already holds it.
    fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        let text = format!("{}\n", self.to_paserk());
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        let tmp = tmp_path(path);
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(io(path))
    }
}

fn paserk(key: &impl FormatAsPaserk) -> String {
    let mut text = String::new();
    key.fmt(&mut text).expect("writing to a String cannot fail");
    text
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyFileError + '_ {
    move |error| KeyFileError::Io {
        path: path.to_path_buf(),
        error,
        hint: "",
    }
}

/// A temporary name beside `path`, unique across processes and threads.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    path.with_file_name(name)
}

/// Creates `path` with `contents` and mode 0600 unless it exists: written
/// to a temporary file, then hard-linked into place, which fails if another
/// process got there first (theirs wins, ours is dropped).
fn create_private_once(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(path))?;
    }
    let tmp = tmp_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Refuses a secret key file that other users can read.
fn check_private(path: &Path) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verifier;

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authority/token.key");
        let first = Authority::load_or_create(&path).unwrap();
        let second = Authority::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), second.public_key());

        let secret = std::fs::read_to_string(&path).unwrap();
        assert!(secret.starts_with("k4.secret."), "{secret}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Debug shows neither the secret key nor its base64.
        let shown = format!("{first:?}");
        assert!(!shown.contains(secret.trim()), "{shown}");
        assert!(!shown.contains(&secret.trim()["k4.secret.".len()..][..20]));

        // The public key beside it is what a service verifies with.
        let public = PublicKey::load(&public_key_file(&path)).unwrap();
        assert_eq!(&public, first.public_key());
        let token = second
            .mint(&alice(), Audience::KeyVault, DEFAULT_TTL)
            .unwrap();
        let verifier = Verifier::new(public, Audience::KeyVault);
        assert_eq!(verifier.verify(token.expose_secret()), Ok(alice()));
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let keys: Vec<PublicKey> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| Authority::load_or_create(&path).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().public_key().clone())
                .collect()
        });
        assert!(keys.windows(2).all(|pair| pair[0] == pair[1]));
        assert_eq!(PublicKey::load(&public_key_file(&path)).unwrap(), keys[0]);
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        Authority::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Authority::load_or_create(&path).unwrap_err();
        assert!(
            matches!(error, KeyFileError::TooOpen { mode: 0o644, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }

    #[test]
    fn wrong_key_files_say_what_they_should_hold() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token.key");
        let authority = Authority::load_or_create(&secret).unwrap();
        // The secret key where a public key belongs, and garbage.
        let error = PublicKey::load(&secret).unwrap_err();
        assert!(
            matches!(
                error,
                KeyFileError::Invalid {
                    expected: "k4.public",
                    ..
                }
            ),
            "{error}"
        );
        let public = public_key_file(&secret);
        std::fs::write(&public, "not a key").unwrap();
        assert!(matches!(
            PublicKey::load(&public),
            Err(KeyFileError::Invalid { .. })
        ));
        // A missing public key says where it comes from.
        let error = PublicKey::load(&dir.path().join("missing.pub")).unwrap_err();
        assert!(error.to_string().contains("make up"), "{error}");
        // Loading the authority again repairs the public key file.
        Authority::load_or_create(&secret).unwrap();
        assert_eq!(&PublicKey::load(&public).unwrap(), authority.public_key());
    }
}
