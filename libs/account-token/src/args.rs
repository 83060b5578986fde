//! The command-line blocks binaries flatten: a service names the
//! authority's public key file ([`VerifierArgs`]); the authority (and the
//! simulator playing it) names its secret key file ([`AuthorityArgs`]).
//! The defaults are the local stack's files under `.state/authority/`.

use std::path::PathBuf;

use clap::Args;

use crate::{Audience, Authority, KeyFileError, PublicKey, Verifier};

/// Where a service finds the account authority's public key.
#[derive(Debug, Clone, Args)]
pub struct VerifierArgs {
    /// The account authority's public key (PASERK k4.public), written by the
    /// authority beside its secret key. Services never hold the secret key.
    #[arg(
        long,
        env = "E2EB_TOKEN_PUBLIC_KEY_FILE",
        default_value = ".state/authority/token.pub"
    )]
    pub token_public_key_file: PathBuf,
}

impl VerifierArgs {
    /// A verifier for tokens addressed to `audience`.
    pub fn verifier(&self, audience: Audience) -> Result<Verifier, KeyFileError> {
        Ok(Verifier::new(
            PublicKey::load(&self.token_public_key_file)?,
            audience,
        ))
    }
}

/// Where the account authority keeps its secret key.
#[derive(Debug, Clone, Args)]
pub struct AuthorityArgs {
    /// The account authority's secret signing key (PASERK k4.secret, mode
    /// 0600; created if missing, with its public key beside it as `.pub`).
    #[arg(
        long,
        env = "E2EB_AUTHORITY_KEY_FILE",
        default_value = ".state/authority/token.key",
        global = true
    )]
    pub authority_key_file: PathBuf,
}

impl AuthorityArgs {
    pub fn load_or_create(&self) -> Result<Authority, KeyFileError> {
        Authority::load_or_create(&self.authority_key_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Both {
        #[command(flatten)]
        verifier: VerifierArgs,
        #[command(flatten)]
        authority: AuthorityArgs,
    }

    #[test]
    fn defaults_are_the_local_stack_files_and_the_public_one_sits_beside_the_secret() {
        let both = Both::try_parse_from(["x"]).unwrap();
        assert_eq!(
            crate::public_key_file(&both.authority.authority_key_file),
            both.verifier.token_public_key_file
        );
    }

    #[test]
    fn a_service_verifies_what_the_authority_mints_through_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("token.key");
        let both = Both::try_parse_from([
            "x",
            "--authority-key-file",
            key.to_str().unwrap(),
            "--token-public-key-file",
            crate::public_key_file(&key).to_str().unwrap(),
        ])
        .unwrap();
        let authority = both.authority.load_or_create().unwrap();
        let verifier = both.verifier.verifier(Audience::BlobGateway).unwrap();
        let alice = crate::AccountId::new("alice").unwrap();
        let token = authority
            .mint(&alice, Audience::BlobGateway, crate::DEFAULT_TTL)
            .unwrap();
        assert_eq!(verifier.verify(token.expose_secret()), Ok(alice));
    }
}
