//! How a simulated phone reaches the stack: the service URLs, the CA it
//! trusts, and the account authority. The simulator plays the authority
//! (the chat server in WhatsApp's design): each phone gets tokens for its
//! own account, one source per audience, minted fresh before they expire.
//! Every call of every phone goes through one retry policy, whose counters
//! the fleet report shows.

use std::sync::Arc;

use account_token::{AccountId, Audience, Authority, BearerToken};
use backup_client::packs::PackGatewayClient;
use backup_client::vault::{KsfStrength, VaultClient, VaultError};
use backup_client::{GatewayClient, GatewayError};

/// Where the services are and how to authenticate to them.
#[derive(Clone)]
pub struct Services {
    /// One gateway URL or several, comma-separated.
    pub gateway_endpoint: String,
    /// One vault URL or several (replicas), comma-separated.
    pub vault_endpoint: String,
    pub trust: rpc::Trust,
    pub authority: Arc<Authority>,
    /// The retry policy every phone's calls go through, and the counters
    /// the fleet report shows.
    pub retry: rpc::retry::Retry,
}

impl Services {
    /// Tokens for `account` at `audience`, renewed before they expire.
    pub fn tokens(&self, account: &AccountId, audience: Audience) -> BearerToken {
        BearerToken::from_authority(self.authority.clone(), account.clone(), audience)
    }

    /// The blob gateway, acting for `account`.
    pub fn gateway(&self, account: &AccountId) -> Result<GatewayClient, GatewayError> {
        GatewayClient::connect(
            &self.gateway_endpoint,
            &self.trust,
            self.tokens(account, Audience::BlobGateway),
        )
        .map(|client| client.with_retry(self.retry.clone()))
    }

    /// The blob gateway's pack service (storage v3), acting for `account`.
    pub fn pack_gateway(&self, account: &AccountId) -> Result<PackGatewayClient, GatewayError> {
        PackGatewayClient::connect(
            &self.gateway_endpoint,
            &self.trust,
            self.tokens(account, Audience::BlobGateway),
        )
        .map(|client| client.with_retry(self.retry.clone()))
    }

    /// The key vault, acting for `account`, pinned to `fingerprint`.
    pub fn vault(
        &self,
        account: &AccountId,
        fingerprint: &str,
        ksf: KsfStrength,
    ) -> Result<VaultClient, VaultError> {
        VaultClient::connect(
            &self.vault_endpoint,
            &self.trust,
            self.tokens(account, Audience::KeyVault),
            account.as_str(),
            fingerprint,
            ksf,
        )
        .map(|client| client.with_retry(self.retry.clone()))
    }
}
