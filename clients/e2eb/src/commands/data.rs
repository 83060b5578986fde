//! Commands that move the folder's data: back up, restore, rotate the key,
//! all in storage format v3 (packs).

use std::path::Path;
use std::time::Instant;

use backup_client::RootKey;
use backup_client::packs::{self, PackBackupReport};
use serde_json::json;

use super::{Credential, Session, key_id};
use crate::output::{Report, bytes};
use crate::secrets::{KeyFiles, usage};

fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(usage(format!("{} is not a directory", dir.display())));
    }
    Ok(())
}

/// The v2 keys stay for scripts: "uploaded_chunks" counts the chunks sealed
/// into new packs, and "deleted_chunks" is null (the gateway deletes packs,
/// counted in "deleted_packs").
fn backup_report(session: &Session, title: &str, report: &PackBackupReport, secs: f64) -> Report {
    let out = session.out;
    Report::new(json!({
        "ok": true,
        "format": 3,
        "generation": report.generation,
        "files": report.files,
        "plain_bytes": report.plain_bytes,
        "chunks": report.chunks,
        "uploaded_chunks": report.new_chunks,
        "uploaded_plain_bytes": report.new_plain_bytes,
        "uploaded_bytes": report.uploaded_bytes,
        "manifest_bytes": report.manifest_bytes,
        "deleted_chunks": serde_json::Value::Null,
        "resumed_chunks": report.resumed_chunks,
        "packs": report.packs,
        "uploaded_packs": report.uploaded_packs,
        "deleted_packs": report.deleted_packs,
        "pointer_confirmed": report.pointer_confirmed,
        "settled_generation": report.settled_generation,
        "secs": secs,
    }))
    .line(format!(
        "{} generation {}: {} files, {}",
        out.good(title),
        report.generation,
        report.files,
        bytes(report.plain_bytes)
    ))
    .line(format!(
        "  sent {} of {} chunks in {} packs ({} sealed), {:.1} s",
        report.new_chunks,
        report.distinct_chunks,
        report.uploaded_packs,
        bytes(report.uploaded_bytes),
        secs
    ))
}

/// `e2eb backup DIR`.
pub async fn backup(session: &mut Session, dir: &Path) -> anyhow::Result<Report> {
    check_dir(dir)?;
    session.no_rotation_under_way()?;
    let credential = session.credential().await?;
    let started = Instant::now();
    let (gateway, vault) = (&session.services.gateway, &session.services.vault);
    let account = session.services.account.as_str();
    let _spinner = session
        .out
        .progress(&format!("backing up {}", dir.display()));
    let report = match &credential {
        // A password user whose rotation stopped half-way: finish it.
        Credential::Password {
            password,
            recovered,
        } if recovered.previous.is_some() => {
            let previous = recovered.previous.as_ref().expect("checked");
            packs::rotate::finish_rotation_v3(
                gateway,
                vault,
                password,
                account,
                previous,
                &recovered.key,
                dir,
            )
            .await?
        }
        credential => packs::back_up_v3(gateway, vault, account, credential.key(), dir).await?,
    };
    Ok(backup_report(
        session,
        "Backed up",
        &report,
        started.elapsed().as_secs_f64(),
    ))
}

/// `e2eb restore DIR` (DIR empty or absent).
pub async fn restore(session: &mut Session, dir: &Path) -> anyhow::Result<Report> {
    let credential = session.credential().await?;
    let next = KeyFiles::load(&session.files.next())?;
    let mut keys: Vec<&RootKey> = vec![credential.key()];
    if let Credential::Password { recovered, .. } = &credential {
        keys.extend(recovered.previous.as_ref());
    }
    // An unfinished rotation: the backup is under one of the two keys.
    keys.extend(next.as_ref());
    let started = Instant::now();
    let report = {
        let _spinner = session
            .out
            .progress(&format!("restoring into {}", dir.display()));
        packs::restore_v3_any(
            &session.services.gateway,
            &session.services.vault,
            session.account(),
            &keys,
            dir,
        )
        .await?
    };
    let secs = started.elapsed().as_secs_f64();
    let vouched = match report.vouched {
        Some(backup_client::freshness::Vouched::Pending) => "pending",
        _ => "committed",
    };
    Ok(Report::new(json!({
        "ok": true,
        "generation": report.generation,
        "vouched": vouched,
        "key_id": report.key_id,
        "files": report.files,
        "bytes": report.bytes,
        "downloaded_chunks": report.downloaded_chunks,
        "downloaded_bytes": report.downloaded_bytes,
        "secs": secs,
    }))
    .line(format!(
        "{} generation {} into {}: {} files, {}, every chunk verified",
        session.out.good("Restored"),
        report.generation,
        dir.display(),
        report.files,
        bytes(report.bytes)
    ))
    .line(format!(
        "  the vault's pointer vouches for it ({vouched}); {:.1} s",
        secs
    )))
}

/// `e2eb rotate DIR`.
pub async fn rotate(session: &mut Session, dir: &Path) -> anyhow::Result<Report> {
    check_dir(dir)?;
    let credential = session.credential().await?;
    let (gateway, vault) = (&session.services.gateway, &session.services.vault);
    let account = session.services.account.as_str();
    let started = Instant::now();
    match credential {
        Credential::Key(old_key) => {
            // The new key is stored and shown before anything is committed
            // under it; an interrupted rotation resumes with the same key.
            let next_path = session.files.next();
            let new_key = match KeyFiles::load(&next_path)? {
                Some(key) => key,
                None => {
                    let key = RootKey::generate();
                    KeyFiles::store(&next_path, &key)?;
                    key
                }
            };
            let digits = new_key.to_display_digits();
            if !session.out.json {
                println!(
                    "Your new 64-digit backup key (write it down; the old one stops working):"
                );
                println!("  {}", session.out.strong(&digits));
            }
            let report = {
                let _spinner = session
                    .out
                    .progress("re-encrypting the backup under the new key");
                packs::rotate_key_v3(gateway, vault, account, &old_key, &new_key, dir).await?
            };
            std::fs::rename(&next_path, session.files.current())?;
            let secs = started.elapsed().as_secs_f64();
            let mut out = backup_report(session, "Rotated to a new key:", &report, secs);
            out.json["new_key"] = json!(digits.as_str());
            out.json["key_id"] = json!(key_id(&new_key));
            Ok(out.line(format!(
                "The new key is in {}.",
                session.files.current().display()
            )))
        }
        Credential::Password {
            password,
            recovered,
        } => {
            let _spinner = session.out.progress("rotating the key (three safe steps)");
            let (new_key, report) = match &recovered.previous {
                // A rotation that stopped half-way: finish it.
                Some(previous) => {
                    let report = packs::rotate::finish_rotation_v3(
                        gateway,
                        vault,
                        &password,
                        account,
                        previous,
                        &recovered.key,
                        dir,
                    )
                    .await?;
                    (recovered.key, report)
                }
                None => {
                    packs::rotate_key_with_vault_v3(
                        gateway,
                        vault,
                        &password,
                        account,
                        &recovered.key,
                        dir,
                    )
                    .await?
                }
            };
            let secs = started.elapsed().as_secs_f64();
            let mut out = backup_report(session, "Rotated to a new key:", &report, secs);
            out.json["key_id"] = json!(key_id(&new_key));
            Ok(out.line("The vault holds the new key; the password stays the same."))
        }
    }
}
