//! From the global options to clients of the two services: the CA this
//! device trusts, the pinned vault fingerprint, and the account's tokens
//! (minted with the local stack's authority key, or read from token files
//! minted elsewhere, one per service).
//!
//! Backups are in storage format v3 (packs); the v2 gateway client is kept
//! only so that `disable` and `enable --start-over` also delete what an
//! older `e2eb` stored in format v2.

use std::sync::Arc;

use account_token::{AccountId, Audience, BearerToken, Token};
use anyhow::Context;
use backup_client::GatewayClient;
use backup_client::packs::PackGatewayClient;
use backup_client::vault::{KsfStrength, VaultClient};

use crate::cli::Global;
use crate::secrets::usage;

/// The account and its service clients.
pub struct Services {
    pub account: AccountId,
    /// The gateway's pack API (storage format v3), used for everything.
    pub gateway: PackGatewayClient,
    /// The gateway's v2 API, used only to delete a v2 backup.
    pub gateway_v2: GatewayClient,
    pub vault: VaultClient,
}

impl Services {
    /// Deletes every stored object of the account, v3 and v2; how many.
    pub async fn delete_backups(&self) -> Result<u64, backup_client::GatewayError> {
        let v3 = self.gateway.delete_backup().await?;
        let v2 = self.gateway_v2.delete_backup().await?;
        Ok(v3 + v2)
    }
}

/// The account named by --account / E2EB_ACCOUNT.
pub fn account(global: &Global) -> anyhow::Result<AccountId> {
    let name = global
        .account
        .as_deref()
        .ok_or_else(|| usage("no account: give --account or set E2EB_ACCOUNT"))?;
    AccountId::new(name).map_err(|error| usage(format!("--account {name:?}: {error}")))
}

impl Services {
    pub fn connect(global: &Global) -> anyhow::Result<Self> {
        let account = account(global)?;
        let trust = global.tls.load()?;
        let fingerprint = match &global.vault_fingerprint {
            Some(fingerprint) => fingerprint.trim().to_string(),
            None => std::fs::read_to_string(&global.vault_fingerprint_file)
                .with_context(|| {
                    format!(
                        "cannot read the vault fingerprint to pin from {} (--vault-fingerprint-file)",
                        global.vault_fingerprint_file.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        let (gateway_token, vault_token) = tokens(global, &account)?;
        let ksf = if global.insecure_fast_ksf {
            KsfStrength::InsecureFastForTests
        } else {
            KsfStrength::Production
        };
        let gateway = PackGatewayClient::connect(&global.gateway, &trust, gateway_token.clone())?;
        let gateway_v2 = GatewayClient::connect(&global.gateway, &trust, gateway_token)?;
        let vault = VaultClient::connect(
            &global.vault,
            &trust,
            vault_token,
            account.as_str(),
            &fingerprint,
            ksf,
        )?;
        Ok(Self {
            account,
            gateway,
            gateway_v2,
            vault,
        })
    }
}

fn tokens(global: &Global, account: &AccountId) -> anyhow::Result<(BearerToken, BearerToken)> {
    if let (Some(gateway), Some(vault)) = (&global.gateway_token_file, &global.vault_token_file) {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|text| BearerToken::new(Token::new(text.trim())))
                .with_context(|| format!("cannot read the token file {}", path.display()))
        };
        return Ok((read(gateway)?, read(vault)?));
    }
    // Never create an authority: without its key file there is no stack.
    let key_file = &global.authority.authority_key_file;
    anyhow::ensure!(
        key_file.exists(),
        "no token files given and the local stack's authority key {} does not exist \
         (run `make up`, or give --gateway-token-file and --vault-token-file)",
        key_file.display()
    );
    let authority = Arc::new(account_token::Authority::load_or_create(key_file)?);
    Ok((
        BearerToken::from_authority(authority.clone(), account.clone(), Audience::BlobGateway),
        BearerToken::from_authority(authority, account.clone(), Audience::KeyVault),
    ))
}
