//! Where secrets come from and where the key lives. Nothing here takes a
//! secret from argv: passwords come from a file descriptor (one per line)
//! or a terminal prompt without echo; the 64-digit key from the device's
//! key file (mode 0600), a file descriptor or a prompt.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use backup_client::RootKey;
use backup_client::vault::Password;
use zeroize::Zeroizing;

/// Input the user must fix; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Message(String),
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError::Message(message.into()).into()
}

/// The device's key files for one account.
pub struct KeyFiles {
    dir: PathBuf,
}

impl KeyFiles {
    pub fn new(device_dir: &Path, account: &str) -> Self {
        Self {
            dir: device_dir.join(account),
        }
    }

    /// The current key.
    pub fn current(&self) -> PathBuf {
        self.dir.join("key")
    }

    /// The new key of a rotation that has not finished.
    pub fn next(&self) -> PathBuf {
        self.dir.join("key.next")
    }

    pub fn load(path: &Path) -> anyhow::Result<Option<RootKey>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let key = RootKey::parse(text.trim()).map_err(|error| {
                    usage(format!(
                        "the key file {} is damaged: {error}",
                        path.display()
                    ))
                })?;
                Ok(Some(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(anyhow::Error::new(error)
                .context(format!("cannot read the key file {}", path.display()))),
        }
    }

    /// Writes `key` to `path` (mode 0600), replacing it only atomically.
    pub fn store(path: &Path, key: &RootKey) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path.parent().expect("key files live in a directory");
        std::fs::create_dir_all(dir)?;
        let temporary = path.with_extension("tmp");
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(key.to_display_digits().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }
}

/// Secrets the user types or pipes in.
pub struct Secrets {
    password_fd: Option<i32>,
    key_fd: Option<i32>,
    /// Lines read from `password_fd`, handed out in order.
    password_lines: Option<std::vec::IntoIter<Zeroizing<String>>>,
}

impl Secrets {
    pub fn new(password_fd: Option<i32>, key_fd: Option<i32>) -> Self {
        Self {
            password_fd,
            key_fd,
            password_lines: None,
        }
    }

    /// The next password: the next line of --password-fd, or a prompt.
    pub fn password(&mut self, prompt: &str) -> anyhow::Result<Password> {
        let Some(fd) = self.password_fd else {
            return prompt_password(prompt);
        };
        if self.password_lines.is_none() {
            let text = read_fd(fd)?;
            let lines: Vec<Zeroizing<String>> = text
                .lines()
                .map(|line| Zeroizing::new(line.trim_end_matches('\r').to_string()))
                .collect();
            self.password_lines = Some(lines.into_iter());
        }
        let line = self
            .password_lines
            .as_mut()
            .and_then(Iterator::next)
            .ok_or_else(|| usage(format!("--password-fd {fd} has no line for: {prompt}")))?;
        if line.is_empty() {
            return Err(usage("an empty password is not allowed"));
        }
        Ok(Password::new(line.as_str()))
    }

    /// A new password: on a terminal typed twice.
    pub fn new_password(&mut self, prompt: &str) -> anyhow::Result<Password> {
        let password = self.password(prompt)?;
        if self.password_fd.is_none() {
            let again = prompt_password("Type it again: ")?;
            if again.expose_secret() != password.expose_secret() {
                return Err(usage("the two passwords differ; nothing changed"));
            }
        }
        Ok(password)
    }

    /// The 64-digit key: --key-fd, else `file`, else a prompt on a terminal.
    pub fn key(&self, file: &Path) -> anyhow::Result<RootKey> {
        if let Some(fd) = self.key_fd {
            let text = read_fd(fd)?;
            return RootKey::parse(text.trim())
                .map_err(|error| usage(format!("the key on --key-fd {fd}: {error}")));
        }
        if let Some(key) = KeyFiles::load(file)? {
            return Ok(key);
        }
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "no key file at {} and no terminal to ask for the 64-digit key: \
                 run `e2eb key new`, or give the key with --key-fd",
                file.display()
            )));
        }
        let typed = Zeroizing::new(rpassword::prompt_password("The 64-digit backup key: ")?);
        RootKey::parse(typed.trim()).map_err(|error| usage(error.to_string()))
    }

    /// Whether the key comes from somewhere other than the key file.
    pub fn key_given(&self) -> bool {
        self.key_fd.is_some()
    }
}

fn prompt_password(prompt: &str) -> anyhow::Result<Password> {
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "a password is needed and there is no terminal to ask: give it with --password-fd",
        ));
    }
    let typed = Zeroizing::new(rpassword::prompt_password(prompt)?);
    if typed.is_empty() {
        return Err(usage("an empty password is not allowed"));
    }
    Ok(Password::new(typed.as_str()))
}

/// Everything readable from file descriptor `fd` (through `/dev/fd`, which
/// opens the same file, so no unsafe code owns the descriptor).
fn read_fd(fd: i32) -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(format!("/dev/fd/{fd}"))
        .and_then(|mut file| file.read_to_string(&mut text))
        .map_err(|error| usage(format!("cannot read file descriptor {fd}: {error}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::new(dir.path(), "alice");
        assert!(KeyFiles::load(&files.current()).unwrap().is_none());
        let key = RootKey::generate();
        KeyFiles::store(&files.current(), &key).unwrap();
        let mode = std::fs::metadata(files.current())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = KeyFiles::load(&files.current()).unwrap().unwrap();
        assert_eq!(loaded.expose_secret(), key.expose_secret());
    }

    #[test]
    fn a_damaged_key_file_is_a_usage_error_that_does_not_echo_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123 not a key").unwrap();
        let error = KeyFiles::load(&path).err().unwrap();
        assert!(error.downcast_ref::<UsageError>().is_some());
        assert!(!error.to_string().contains("0123"), "{error}");
    }

    #[test]
    fn passwords_from_a_descriptor_come_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "old one\r\nnew one\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        let mut secrets = Secrets::new(Some(file.as_raw_fd()), None);
        assert_eq!(secrets.password("a").unwrap().expose_secret(), b"old one");
        assert_eq!(
            secrets.new_password("b").unwrap().expose_secret(),
            b"new one"
        );
        let error = secrets.password("c").err().unwrap();
        assert!(error.downcast_ref::<UsageError>().is_some());
    }
}
