//! A private SoftHSM2 for one test: its own configuration file and token
//! directory in a tempdir, tokens made with the real `softhsm2-util`, so
//! the PKCS#11 tests run against the real module and never touch the
//! machine's tokens.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialised, and
//! a process initialises a module once. A child process gets the
//! configuration in its environment ([`SoftHsm::env`]); a test that talks
//! to the module itself calls [`SoftHsm::use_in_this_process`] first, once
//! per process (nextest runs each test in its own process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use key_vault::sealing::Pkcs11Config;
use key_vault::sealing::pkcs11::SOFTHSM2_MODULE;

/// The user PIN of every token the tests make.
pub const PIN: &str = "8264-user-pin";
const SO_PIN: &str = "5071-so-pin";

pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
}

impl SoftHsm {
    /// A fresh SoftHSM2 with no tokens, or `None` (after one printed line)
    /// if `softhsm2-util` is not installed; in CI that is a failure.
    pub fn new() -> Option<Self> {
        let installed = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "softhsm2-util is missing in CI: `make deps` installs softhsm2"
            );
            println!("SKIPPED: softhsm2-util is not installed (make deps installs softhsm2)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        Some(Self { dir, conf })
    }

    /// Initialises a token labelled `label` in the first free slot with the
    /// user PIN [`PIN`], and returns a PIN file for it.
    pub fn init_token(&self, label: &str) -> PathBuf {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.pin_file(&format!("{label}.pin"), PIN)
    }

    /// Writes `pin` to a file named `name` beside the configuration.
    pub fn pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{pin}\n")).expect("write PIN file");
        path
    }

    /// Settings for the key `key` in the token `token`, with `pin_file`.
    pub fn config(&self, token: &str, key: &str, pin_file: &Path) -> Pkcs11Config {
        Pkcs11Config {
            module: PathBuf::from(SOFTHSM2_MODULE),
            token_label: token.to_owned(),
            key_label: key.to_owned(),
            pin_file: Some(pin_file.to_path_buf()),
        }
    }

    /// The environment a child process needs to see these tokens.
    pub fn env(&self) -> (&'static str, &Path) {
        ("SOFTHSM2_CONF", &self.conf)
    }

    /// Points this process's SoftHSM2 at these tokens. Call it after making
    /// the tokens and before the first PKCS#11 call (SoftHSM2 reads its
    /// configuration and token directory when initialised), once per process.
    pub fn use_in_this_process(&self) {
        static USED: AtomicBool = AtomicBool::new(false);
        assert!(
            !USED.swap(true, Ordering::SeqCst),
            "one SoftHSM2 per process: run the PKCS#11 tests with cargo nextest"
        );
        // SAFETY: nextest runs each test in its own process; there the only
        // other thread is the harness waiting for this test, and nothing
        // has loaded the PKCS#11 module yet, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &self.conf) };
    }
}
