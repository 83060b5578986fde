//! The sealing key in a PKCS#11 token, against the real SoftHSM2: sealing
//! round trips through the token, the key cannot be read out, every
//! start-up mistake is its own error saying what to do, and the real
//! binary keeps its identity across restarts with the same token and
//! refuses another token's key. Each test skips with one printed line if
//! `softhsm2-util` is not installed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use key_vault::sealing::pkcs11::{self, KeyCreation, create_key_if_missing};
use key_vault::sealing::{
    FileSealingKey, Pkcs11Config, Pkcs11Error, Pkcs11SealingKey, SealingError, SealingKeySource,
    SourceKind,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::softhsm::{PIN, SoftHsm};
use crate::support::*;

const TOKEN: &str = "vault-token";
const KEY: &str = "vault-sealing";

/// A logged-in read-write session on `config`'s token, for a test that
/// inspects or plants objects the way an operator's tool would.
fn operator_session(config: &Pkcs11Config) -> Session {
    let module = pkcs11::module(&config.module).unwrap();
    let slot = module
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| module.get_token_info(*slot).unwrap().label() == config.token_label)
        .expect("the token");
    let session = module.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN)))
        .unwrap();
    session
}

/// Generates a key labelled `label` with the given type, length and
/// extractability (what a careless operator might leave behind).
fn plant_key(session: &Session, label: &str, key_type: KeyType, bytes: u64, extractable: bool) {
    let mechanism = if key_type == KeyType::AES {
        Mechanism::AesKeyGen
    } else {
        Mechanism::GenericSecretKeyGen
    };
    session
        .generate_key(
            &mechanism,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::ValueLen(Ulong::new(bytes as _)),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(!extractable),
                Attribute::Extractable(extractable),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
}

#[test]
fn seals_and_opens_inside_the_token() {
    let Some(hsm) = SoftHsm::new() else { return };
    let pin_file = hsm.init_token(TOKEN);
    hsm.use_in_this_process();
    let config = hsm.config(TOKEN, KEY, &pin_file);

    assert_eq!(
        create_key_if_missing(&config).unwrap(),
        KeyCreation::Created
    );
    assert_eq!(
        create_key_if_missing(&config).unwrap(),
        KeyCreation::AlreadyThere,
        "a second init keeps the first key"
    );
    let key = Pkcs11SealingKey::open(&config).unwrap();
    assert!(key.describe().contains(KEY) && key.describe().contains(TOKEN));

    let sealed = key.seal(b"vault secrets", b"aad").unwrap();
    assert_eq!(sealed[0], SourceKind::Pkcs11Token as u8);
    assert_eq!(sealed.len(), 1 + 12 + b"vault secrets".len() + 16);
    assert!(!sealed.windows(13).any(|w| w == b"vault secrets"));
    assert_ne!(
        sealed,
        key.seal(b"vault secrets", b"aad").unwrap(),
        "fresh IV"
    );
    assert_eq!(
        key.open(&sealed, b"aad").unwrap().as_slice(),
        b"vault secrets"
    );

    // Another login to the same token (a restart) opens it: the key lives
    // in the token, not in this process.
    drop(key);
    let again = Pkcs11SealingKey::open(&config).unwrap();
    assert_eq!(
        again.open(&sealed, b"aad").unwrap().as_slice(),
        b"vault secrets"
    );

    // Other AAD, a flipped bit, or a truncated blob do not open.
    let does_not_open = |result| matches!(result, Err(SealingError::DoesNotOpen { .. }));
    assert!(does_not_open(again.open(&sealed, b"other aad")));
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(does_not_open(again.open(&flipped, b"aad")));
    assert!(does_not_open(again.open(&sealed[..20], b"aad")));

    // A blob from a key file is named as such, never fed to the token, and
    // the token's blob is refused by a key file the same way.
    let file_key = FileSealingKey::from_bytes(Path::new("file.key"), &[7; 32]);
    let from_file = file_key.seal(b"vault secrets", b"aad").unwrap();
    let error = again.open(&from_file, b"aad").unwrap_err();
    assert!(
        matches!(
            error,
            SealingError::OtherSource {
                sealed_by: SourceKind::KeyFile,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(matches!(
        file_key.open(&sealed, b"aad"),
        Err(SealingError::OtherSource {
            sealed_by: SourceKind::Pkcs11Token,
            ..
        })
    ));
}

#[test]
fn the_sealing_key_never_leaves_the_token() {
    let Some(hsm) = SoftHsm::new() else { return };
    let pin_file = hsm.init_token(TOKEN);
    hsm.use_in_this_process();
    let config = hsm.config(TOKEN, KEY, &pin_file);
    create_key_if_missing(&config).unwrap();

    let session = operator_session(&config);
    let keys = session
        .find_objects(&[Attribute::Label(KEY.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(keys.len(), 1);
    // C_GetAttributeValue refuses CKA_VALUE outright...
    let value = session
        .get_attribute_info(keys[0], &[AttributeType::Value])
        .unwrap();
    assert!(
        matches!(value.as_slice(), [AttributeInfo::Sensitive]),
        "{value:?}"
    );
    // ...and the key was born that way, on the token, for AES only.
    let attributes = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Value,
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Token,
                AttributeType::KeyType,
                AttributeType::ValueLen,
            ],
        )
        .unwrap();
    for expected in [
        Attribute::Extractable(false),
        Attribute::Sensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::AlwaysSensitive(true),
        Attribute::Token(true),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::new(32)),
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected:?} in {attributes:?}"
        );
    }
    assert!(
        !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
        "no CKA_VALUE came back"
    );
    // Wrapping it out under another key is refused as well.
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(Ulong::new(32)),
                Attribute::Wrap(true),
                Attribute::Token(false),
            ],
        )
        .unwrap();
    assert!(
        session
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, keys[0])
            .is_err()
    );
}

#[test]
fn token_and_pin_mistakes_are_each_their_own_error() {
    let Some(hsm) = SoftHsm::new() else { return };
    let pin_file = hsm.init_token(TOKEN);
    hsm.init_token("another-token");
    hsm.use_in_this_process();
    let config = hsm.config(TOKEN, KEY, &pin_file);

    let error = Pkcs11SealingKey::open(&Pkcs11Config {
        token_label: "no-such-token".into(),
        ..config.clone()
    })
    .unwrap_err();
    match &error {
        Pkcs11Error::TokenNotFound { found, .. } => {
            assert!(found.contains(&TOKEN.to_owned()) && found.contains(&"another-token".into()))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        error.to_string().contains("softhsm2-util --init-token"),
        "{error}"
    );

    let error = Pkcs11SealingKey::open(&Pkcs11Config {
        pin_file: None,
        ..config.clone()
    })
    .unwrap_err();
    assert!(
        matches!(error, Pkcs11Error::PinFileNotSet { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("--pkcs11-pin-file"), "{error}");

    let missing = hsm.dir.path().join("missing.pin");
    let error = Pkcs11SealingKey::open(&Pkcs11Config {
        pin_file: Some(missing.clone()),
        ..config.clone()
    })
    .unwrap_err();
    assert!(matches!(error, Pkcs11Error::PinFile { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.pin"), "{error}");

    let wrong_pin = hsm.pin_file("wrong.pin", "0000-not-the-pin");
    let error = Pkcs11SealingKey::open(&Pkcs11Config {
        pin_file: Some(wrong_pin),
        ..config.clone()
    })
    .unwrap_err();
    assert!(matches!(error, Pkcs11Error::WrongPin { .. }), "{error:?}");
    assert!(error.to_string().contains("wrong.pin"), "{error}");
    assert!(!error.to_string().contains("0000-not-the-pin"), "{error}");

    let error = create_key_if_missing(&Pkcs11Config {
        pin_file: Some(hsm.pin_file("empty.pin", "")),
        ..config.clone()
    })
    .unwrap_err();
    assert!(matches!(error, Pkcs11Error::BadPinFile { .. }), "{error:?}");

    // The honest settings get as far as the key, which a start never
    // creates; and the failed start did not create it either.
    for _ in 0..2 {
        let error = Pkcs11SealingKey::open(&config).unwrap_err();
        assert!(
            matches!(error, Pkcs11Error::KeyNotFound { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("key-vault pkcs11-init"),
            "{error}"
        );
    }
    create_key_if_missing(&config).unwrap();
    Pkcs11SealingKey::open(&config).unwrap();
}

#[test]
fn keys_that_are_not_ours_to_seal_with_are_refused() {
    let Some(hsm) = SoftHsm::new() else { return };
    let pin_file = hsm.init_token(TOKEN);
    hsm.use_in_this_process();
    let config = hsm.config(TOKEN, KEY, &pin_file);
    let with_label = |label: &str| Pkcs11Config {
        key_label: label.into(),
        ..config.clone()
    };

    let session = operator_session(&config);
    plant_key(&session, "aes-128", KeyType::AES, 16, false);
    plant_key(&session, "generic", KeyType::GENERIC_SECRET, 32, false);
    plant_key(&session, "extractable", KeyType::AES, 32, true);
    plant_key(&session, "twice", KeyType::AES, 32, false);
    plant_key(&session, "twice", KeyType::AES, 32, false);

    for label in ["aes-128", "generic"] {
        let error = Pkcs11SealingKey::open(&with_label(label)).unwrap_err();
        assert!(
            matches!(error, Pkcs11Error::WrongKeyType { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("not an AES-256"), "{error}");
        // pkcs11-init does not paper over it with a second key.
        assert!(create_key_if_missing(&with_label(label)).is_err());
    }
    let error = Pkcs11SealingKey::open(&with_label("aes-128")).unwrap_err();
    assert!(error.to_string().contains("128 bits"), "{error}");

    let error = Pkcs11SealingKey::open(&with_label("extractable")).unwrap_err();
    assert!(
        matches!(error, Pkcs11Error::KeyExtractable { .. }),
        "{error:?}"
    );

    let error = Pkcs11SealingKey::open(&with_label("twice")).unwrap_err();
    assert!(
        matches!(error, Pkcs11Error::DuplicateKey { count: 2, .. }),
        "{error:?}"
    );

    // The honest key beside them works.
    create_key_if_missing(&config).unwrap();
    let key = Pkcs11SealingKey::open(&config).unwrap();
    let sealed = key.seal(b"s", b"a").unwrap();
    assert_eq!(key.open(&sealed, b"a").unwrap().as_slice(), b"s");
}

/// The real binary on `dir`'s files, sealing with `hsm`'s token `token`.
fn vault_command(dir: &Path, hsm: &SoftHsm, token: &str, pin_file: &Path) -> Command {
    let (conf_var, conf) = hsm.env();
    prepare(dir);
    let tls = tls_dir(dir);
    let mut command = Command::new(env!("CARGO_BIN_EXE_key-vault"));
    command
        .env(conf_var, conf)
        .env("KEY_VAULT_DB", dir.join("vault/vault.db"))
        .env("KEY_VAULT_SEALING_KEY_FILE", dir.join("vault-sealing.key"))
        .env(
            "E2EB_TOKEN_PUBLIC_KEY_FILE",
            account_token::public_key_file(&authority_key_file(dir)),
        )
        .env(
            "TLS_CERT_FILE",
            rpc::dev_certs::cert_path(&tls, key_vault::SERVICE),
        )
        .env(
            "TLS_KEY_FILE",
            rpc::dev_certs::key_path(&tls, key_vault::SERVICE),
        )
        .env("KEY_VAULT_SEALING", "pkcs11")
        .env("KEY_VAULT_PKCS11_TOKEN_LABEL", token)
        .env("KEY_VAULT_PKCS11_KEY_LABEL", KEY)
        .env("KEY_VAULT_PKCS11_PIN_FILE", pin_file)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to completion; its exit success and stdout + stderr.
async fn run_to_end(mut command: Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the binary exits within 60 s")
        .expect("run key-vault");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Starts the vault on a free port and returns it once it serves, with the
/// fingerprint that `GetVaultInfo` reports.
async fn serve(mut command: Command, dir: &Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = command
        .env("KEY_VAULT_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("spawn key-vault");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the vault prints its fingerprint within 60 s")
        .unwrap();
    let Some(printed) = printed else {
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        panic!("key-vault exited before serving: {stderr}");
    };
    let printed = printed
        .strip_prefix("key-vault public key fingerprint: ")
        .unwrap_or_else(|| panic!("unexpected first line {printed:?}"))
        .to_owned();
    let token = token_in(dir, "alice");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // The fingerprint line comes before the port is bound: retry briefly.
    for _ in 0..200 {
        let url = format!("https://{addr}");
        let endpoint = rpc::endpoint(&url, &trust(dir), &rpc::ChannelOptions::default()).unwrap();
        if endpoint.connect().await.is_ok() {
            let mut client = VaultClient::connect(addr, &trust(dir), "alice", token.clone()).await;
            let served = client.info().await.unwrap().fingerprint;
            assert_eq!(served, printed);
            return (child, served);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("key-vault did not listen on {addr}");
}

/// Stops the vault and returns everything it logged.
async fn stop(mut child: Child) -> String {
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn the_binary_keeps_its_identity_with_the_same_token_key() {
    let Some(hsm) = SoftHsm::new() else { return };
    let pin_file = hsm.init_token(TOKEN);
    let dir = tempfile::tempdir().unwrap();

    // A start never creates the key; pkcs11-init does, once.
    let (started, said) = run_to_end(vault_command(dir.path(), &hsm, TOKEN, &pin_file)).await;
    assert!(!started);
    assert!(said.contains("key-vault pkcs11-init"), "{said}");
    let mut init = vault_command(dir.path(), &hsm, TOKEN, &pin_file);
    init.arg("pkcs11-init");
    let (ok, said) = run_to_end(init).await;
    assert!(ok && said.contains("created"), "{said}");
    let mut init = vault_command(dir.path(), &hsm, TOKEN, &pin_file);
    init.arg("pkcs11-init");
    let (ok, said) = run_to_end(init).await;
    assert!(ok && said.contains("already present"), "{said}");

    let (child, first) = serve(
        vault_command(dir.path(), &hsm, TOKEN, &pin_file),
        dir.path(),
    )
    .await;
    let mut logged = stop(child).await;
    let (child, again) = serve(
        vault_command(dir.path(), &hsm, TOKEN, &pin_file),
        dir.path(),
    )
    .await;
    logged += &stop(child).await;
    assert_eq!(first, again, "the same vault identity after a restart");
    assert!(
        logged.contains("PKCS#11 key"),
        "the log names the source: {logged}"
    );
    assert!(!logged.contains(PIN), "the PIN reached the log");
    // Nothing on disk opens the secrets: there is no key file.
    assert!(!dir.path().join("vault-sealing.key").exists());
}

#[tokio::test]
async fn another_token_key_or_a_key_file_cannot_open_the_vault() {
    let Some(hsm) = SoftHsm::new() else { return };
    let pin_a = hsm.init_token("token-a");
    let pin_b = hsm.init_token("token-b");
    let dir = tempfile::tempdir().unwrap();
    for (token, pin) in [("token-a", &pin_a), ("token-b", &pin_b)] {
        let mut init = vault_command(dir.path(), &hsm, token, pin);
        init.arg("pkcs11-init");
        assert!(run_to_end(init).await.0);
    }
    let (child, fingerprint) = serve(
        vault_command(dir.path(), &hsm, "token-a", &pin_a),
        dir.path(),
    )
    .await;
    stop(child).await;

    // Token B's key (same label, same settings otherwise) refuses to start.
    let (started, said) = run_to_end(vault_command(dir.path(), &hsm, "token-b", &pin_b)).await;
    assert!(!started);
    assert!(said.contains("do not open with the sealing key"), "{said}");
    assert!(said.contains("token-b"), "{said}");

    // So does the key file, and it says who sealed them.
    let mut file = vault_command(dir.path(), &hsm, "token-a", &pin_a);
    file.env("KEY_VAULT_SEALING", "file");
    let (started, said) = run_to_end(file).await;
    assert!(!started);
    assert!(said.contains("sealed by a PKCS#11 token key"), "{said}");

    // Neither attempt changed anything: token A still opens the same vault.
    let (child, again) = serve(
        vault_command(dir.path(), &hsm, "token-a", &pin_a),
        dir.path(),
    )
    .await;
    stop(child).await;
    assert_eq!(again, fingerprint);
}
