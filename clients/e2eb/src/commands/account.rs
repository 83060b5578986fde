//! Commands about the account rather than the data: make a key, enable
//! backups, show the status, change the password, disable backups.

use backup_client::RootKey;
use backup_client::freshness;
use backup_client::packs::manifest;
use backup_client::vault::{Proof, VaultError};
use serde_json::{Value, json};

use super::{Credential, Session, key_id};
use crate::output::{Output, Report, bytes};
use crate::secrets::{KeyFiles, usage};

/// `e2eb key new`: a key, printed once and kept in the key file.
/// Needs no service: the key is made on this device.
pub fn key_new(files: &KeyFiles, out: Output) -> anyhow::Result<Report> {
    let path = files.current();
    if path.exists() {
        return Err(usage(format!(
            "{} already holds a backup key; delete it yourself only if no backup needs it",
            path.display()
        )));
    }
    let key = RootKey::generate();
    KeyFiles::store(&path, &key)?;
    let digits = key.to_display_digits();
    Ok(Report::new(json!({
        "ok": true,
        "key": digits.as_str(),
        "key_id": key_id(&key),
        "key_file": path,
    }))
    .line("Your 64-digit backup key (write it down; it is shown only this once):")
    .line(format!("  {}", out.strong(&digits)))
    .line(format!(
        "Stored for this device in {} (mode 0600).",
        path.display()
    ))
    .line("Next: e2eb enable --key"))
}

/// `e2eb enable --key | --password`.
pub async fn enable(
    session: &mut Session,
    with_password: bool,
    start_over: bool,
) -> anyhow::Result<Report> {
    let path = session.files.current();
    if start_over {
        session.services.vault.start_over().await?;
        session.services.delete_backups().await?;
    }
    if with_password {
        if path.exists() {
            return Err(usage(format!(
                "this device holds a 64-digit key in {}: use `e2eb enable --key`, or remove the file to use a password",
                path.display()
            )));
        }
        let password = session.secrets.new_password("New backup password: ")?;
        let key = RootKey::generate();
        {
            let _spinner = session
                .out
                .progress("registering the password with the key vault");
            session
                .services
                .vault
                .register(&password, &key, None)
                .await?;
        }
        return Ok(
            Report::new(json!({"ok": true, "method": "password", "key_id": key_id(&key)}))
                .line(session.out.good("Backups enabled with a password."))
                .line(
                    "The key vault keeps the backup key; the password recovers it on a new device.",
                ),
        );
    }
    session.no_rotation_under_way()?;
    let key = session.secrets.key(&path)?;
    session.services.vault.enable_key_backup(&key, None).await?;
    if !path.exists() {
        KeyFiles::store(&path, &key)?;
    }
    Ok(
        Report::new(json!({"ok": true, "method": "key", "key_id": key_id(&key)}))
            .line(session.out.good("Backups enabled with the 64-digit key."))
            .line(format!(
                "The key stays on this device in {}.",
                path.display()
            )),
    )
}

/// `e2eb status`: the vault's pointer and the backup the gateway serves.
pub async fn status(session: &Session) -> anyhow::Result<Report> {
    let services = &session.services;
    let local_key = KeyFiles::load(&session.files.current())?;
    let rotating = session.files.next().exists();
    let pointer = match services.vault.pointer().await {
        Ok(pointer) => Some(pointer),
        Err(VaultError::NotRegistered) => None,
        Err(error) => return Err(error.into()),
    };
    let served = services.gateway.get_backup().await?;
    let mut report = Report::new(Value::Null).line(format!("account    {}", session.account()));
    let mut json = json!({
        "ok": true,
        "account": session.account(),
        "enabled": pointer.is_some(),
        "key_file": local_key.as_ref().map(|_| session.files.current()),
        "key_id": local_key.as_ref().map(key_id),
        "rotation_unfinished": rotating,
    });
    let Some(pointer) = pointer else {
        report.json = json;
        return Ok(
            report.line("backups    not enabled (e2eb key new; e2eb enable --key | --password)")
        );
    };
    let method = if pointer.has_password {
        "password"
    } else {
        "64-digit key"
    };
    report = report.line(format!("backups    enabled with a {method}"));
    json["method"] = json!(if pointer.has_password {
        "password"
    } else {
        "key"
    });
    let committed = pointer.committed.map(|c| c.generation);
    let pending = pointer.pending.map(|p| p.backup.generation);
    json["pointer"] = json!({"committed": committed, "pending": pending});
    report = report.line(format!(
        "pointer    committed generation {}, pending {}",
        committed.map_or("none".into(), |g| g.to_string()),
        pending.map_or("none".into(), |g| g.to_string()),
    ));
    let vouched = match &served {
        None => freshness::judge(&pointer, None).map(|_| "none"),
        Some(backup) => {
            let sealed = services
                .gateway
                .get_manifest(backup.generation, backup.manifest_size)
                .await?;
            let served_ref = backup_client::vault::BackupRef {
                generation: backup.generation,
                manifest_digest: manifest::digest(&sealed),
            };
            freshness::judge(&pointer, Some(served_ref)).map(|vouched| match vouched {
                Some(freshness::Vouched::Committed) => "committed",
                Some(freshness::Vouched::Pending) => "pending",
                None => "none",
            })
        }
    };
    if let Some(backup) = &served {
        // Storage format v3: the gateway sees packs, never chunks, so
        // "chunks" stays in the object for scripts but is null.
        json["backup"] = json!({
            "generation": backup.generation,
            "committed_at": backup.committed_at,
            "chunks": Value::Null,
            "packs": backup.packs.len(),
            "stored_bytes": backup.stored_bytes,
            "uncommitted_bytes": backup.uncommitted_bytes,
            "manifest_bytes": backup.manifest_size,
            "format": 3,
        });
        report = report.line(format!(
            "backup     generation {}, {} packs, {} stored (manifest {})",
            backup.generation,
            backup.packs.len(),
            bytes(backup.stored_bytes),
            bytes(backup.manifest_size),
        ));
    } else {
        report = report.line("backup     none yet (e2eb backup DIR)");
    }
    // A backup the pointer does not vouch for is an integrity failure:
    // say so and exit with its code.
    let vouched = vouched?;
    json["vouched"] = json!(vouched);
    if rotating {
        report = report.line("rotation   unfinished: run `e2eb rotate DIR` again");
    }
    report.json = json;
    Ok(report.line(format!(
        "verified   the served backup is the vault's {vouched} generation"
    )))
}

/// `e2eb password change`: current password, then the new one.
pub async fn password_change(session: &mut Session) -> anyhow::Result<Report> {
    let current = session.secrets.password("Current backup password: ")?;
    let login = session.login(&current).await?;
    if login.previous.is_some() {
        return Err(usage(
            "a key rotation is under way in the vault; finish it with `e2eb rotate DIR` first",
        ));
    }
    let new = session.secrets.new_password("New backup password: ")?;
    {
        let _spinner = session.out.progress("registering the new password");
        session
            .services
            .vault
            .register(&new, &login.key, Some(Proof::LoginTicket(&login.ticket)))
            .await?;
    }
    Ok(Report::new(json!({"ok": true})).line(
        session
            .out
            .good("Password changed; the old one no longer works."),
    ))
}

/// `e2eb disable --yes`: the vault record, then every stored object.
pub async fn disable(session: &mut Session, confirmed: bool) -> anyhow::Result<Report> {
    if !confirmed {
        return Err(usage(
            "disabling deletes the backup for good; run `e2eb disable --yes` to confirm",
        ));
    }
    let credential = session.credential().await?;
    let proof = match &credential {
        Credential::Key(key) => Proof::BackupKey(key),
        Credential::Password { recovered, .. } => Proof::LoginTicket(&recovered.ticket),
    };
    session.services.vault.delete(proof).await?;
    let deleted = session.services.delete_backups().await?;
    for path in [session.files.current(), session.files.next()] {
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::Error::new(error).context(format!(
                    "backups are disabled but {} remains",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    Ok(Report::new(json!({"ok": true, "deleted_objects": deleted}))
        .line(session.out.good("Backups disabled."))
        .line(format!(
            "The vault record and {deleted} stored objects are deleted."
        )))
}
