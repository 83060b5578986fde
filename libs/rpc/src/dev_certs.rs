//! Development certificates: a throwaway CA and one server certificate per
//! service, made with `rcgen`, so the local stack and the tests run TLS on
//! every gRPC hop with no outside tooling. Each certificate names
//! `localhost`, `127.0.0.1` and the service name (containers reach each
//! other by service name). The CA's private key is never written: to add a
//! service, the whole set is made again.
//!
//! Layout of the directory: `ca.pem`, then `<service>.pem` (certificate)
//! and `<service>.key` (private key, mode 0600) per service.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// How long dev certificates stay valid.
const VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// Where `dir` keeps the CA certificate clients trust.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// Where `dir` keeps `service`'s certificate.
pub fn cert_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.pem"))
}

/// Where `dir` keeps `service`'s private key.
pub fn key_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.key"))
}

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("cannot write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("service name {0:?} cannot name a certificate (use [a-z0-9-])")]
    BadServiceName(String),
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Makes a new CA and a certificate for each of `services` in `dir`,
/// replacing what was there.
pub fn generate(dir: &Path, services: &[&str]) -> Result<(), DevCertError> {
    for service in services {
        let valid = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(DevCertError::BadServiceName(service.to_string()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|error| DevCertError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let now = OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let not_after = now + VALIDITY;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own per CA: a client trusting another dev CA then fails
    // with "unknown issuer", not a confusing signature error.
    let serial: u64 = rand::random();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("e2e-backups development CA {serial:016x}"),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    for service in services {
        let key = KeyPair::generate()?;
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".into(),
            service.to_string(),
        ];
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, *service);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&cert_path(dir, service), cert.pem().as_bytes(), 0o644)?;
        let pem = Zeroizing::new(key.serialize_pem());
        write_file(&key_path(dir, service), pem.as_bytes(), 0o600)?;
    }
    // The CA last: its presence marks a complete set.
    write_file(&ca_path(dir), ca_cert.pem().as_bytes(), 0o644)
}

/// Keeps a complete existing set (so running clients keep trusting it);
/// otherwise makes a new one. Returns whether it made one.
pub fn ensure(dir: &Path, services: &[&str]) -> Result<bool, DevCertError> {
    let complete = ca_path(dir).exists()
        && services
            .iter()
            .all(|s| cert_path(dir, s).exists() && key_path(dir, s).exists());
    if complete {
        return Ok(false);
    }
    generate(dir, services)?;
    Ok(true)
}

/// Writes atomically with `mode` from the start (a key is never readable
/// by others, not even for a moment).
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevCertError> {
    let io = |error| DevCertError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_made_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let services = ["key-vault", "blob-gateway"];
        assert!(ensure(dir.path(), &services).unwrap());
        let ca = std::fs::read_to_string(ca_path(dir.path())).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        for service in services {
            let key = std::fs::read_to_string(key_path(dir.path(), service)).unwrap();
            assert!(key.contains("PRIVATE KEY"));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(key_path(dir.path(), service))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{service}");
            }
        }
        // A complete set is kept: clients that trust its CA keep working.
        assert!(!ensure(dir.path(), &services).unwrap());
        assert_eq!(std::fs::read_to_string(ca_path(dir.path())).unwrap(), ca);
        // A missing piece makes a new set.
        std::fs::remove_file(key_path(dir.path(), "blob-gateway")).unwrap();
        assert!(ensure(dir.path(), &services).unwrap());
        assert_ne!(std::fs::read_to_string(ca_path(dir.path())).unwrap(), ca);
    }

    #[test]
    fn service_names_must_fit_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "Key Vault", "../x"] {
            assert!(matches!(
                generate(dir.path(), &[bad]),
                Err(DevCertError::BadServiceName(_))
            ));
        }
    }
}
