//! What a service holds: the authority's public key and its own audience.
//! [`Verifier::verify`] checks the signature with pasetors, then the claims
//! (audience, validity window with a clock-skew allowance), and returns the
//! account, or a [`TokenError`] that says which check failed.

use std::time::{Duration, SystemTime};

use pasetors::Public;
use pasetors::claims::Claims;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};

use crate::{AccountId, Audience, PublicKey, claims};

/// How far the authority's clock and a service's may disagree.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

/// Longer than any token the authority mints; refused before parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// Why a token was refused. The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the account token is malformed ({0}); ask the account authority for a new one")]
    Malformed(&'static str),
    #[error(
        "the account token is not signed by the account authority this service trusts; ask the account authority for a new one"
    )]
    BadSignature,
    #[error(
        "the account token is for audience {found:?}, but this service is {expected}; ask the account authority for a {expected} token"
    )]
    WrongAudience { expected: Audience, found: String },
    #[error(
        "the account token expired at {}; ask the account authority for a new one",
        humantime::format_rfc3339_seconds(*at)
    )]
    Expired { at: SystemTime },
    #[error(
        "the account token is not valid before {}; check the clocks of this device and the account authority",
        humantime::format_rfc3339_seconds(*from)
    )]
    NotYetValid { from: SystemTime },
    #[error("the account token has no `{0}` claim; ask the account authority for a new one")]
    MissingClaim(&'static str),
    #[error(
        "the account token's `{claim}` claim is {reason}; ask the account authority for a new one"
    )]
    InvalidClaim {
        claim: &'static str,
        reason: &'static str,
    },
}

/// Verifies tokens for one service.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: PublicKey,
    audience: Audience,
    skew: Duration,
}

impl Verifier {
    /// Accepts tokens signed by `key` for `audience`, with [`DEFAULT_SKEW`].
    pub fn new(key: PublicKey, audience: Audience) -> Self {
        Self {
            key,
            audience,
            skew: DEFAULT_SKEW,
        }
    }

    pub fn with_skew(self, skew: Duration) -> Self {
        Self { skew, ..self }
    }

    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// The account `token` names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<AccountId, TokenError> {
        self.verify_at(token, SystemTime::now())
    }

    /// The account `token` names, if it is valid at `now`.
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<AccountId, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than any account token"));
        }
        if !token.starts_with(PublicToken::HEADER) {
            return Err(TokenError::Malformed("not a PASETO v4.public token"));
        }
        let untrusted = UntrustedToken::<Public, V4>::try_from(token)
            .map_err(|_| TokenError::Malformed("not a PASETO v4.public token"))?;
        let trusted = PublicToken::verify(self.key.as_pasetors(), &untrusted, None, None)
            .map_err(|_| TokenError::BadSignature)?;
        let claims = Claims::from_string(trusted.payload())
            .map_err(|_| TokenError::Malformed("the signed claims are not valid JSON claims"))?;
        claims::check(&claims, self.audience, now, self.skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authority, DEFAULT_TTL};
    use pasetors::keys::{AsymmetricKeyPair, Generate};

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + NOW
    }

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    fn setup() -> (Authority, Verifier) {
        let authority = Authority::generate();
        let verifier = Verifier::new(authority.public_key().clone(), Audience::KeyVault);
        (authority, verifier)
    }

    fn mint(authority: &Authority, audience: Audience, issued_at: SystemTime) -> String {
        authority
            .mint_at(&alice(), audience, issued_at, DEFAULT_TTL)
            .unwrap()
            .expose_secret()
            .to_string()
    }

    /// Signs arbitrary claims with `authority`'s key, as a buggy or
    /// hostile issuer holding the key could.
    fn sign_claims(authority_key: &AsymmetricKeyPair<V4>, claims: &Claims) -> String {
        pasetors::public::sign(&authority_key.secret, claims, None, None).unwrap()
    }

    #[test]
    fn a_fresh_token_for_this_audience_is_accepted() {
        let (authority, verifier) = setup();
        let token = mint(&authority, Audience::KeyVault, now());
        assert_eq!(verifier.verify_at(&token, now()), Ok(alice()));
        // Tokens name the account, the audience and a random id.
        let other = mint(&authority, Audience::KeyVault, now());
        assert_ne!(token, other, "each token has its own jti");
    }

    #[test]
    fn a_token_for_the_other_service_is_refused_with_both_names() {
        let (authority, verifier) = setup();
        let token = mint(&authority, Audience::BlobGateway, now());
        let error = verifier.verify_at(&token, now()).unwrap_err();
        assert_eq!(
            error,
            TokenError::WrongAudience {
                expected: Audience::KeyVault,
                found: "blob-gateway".into()
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("blob-gateway") && message.contains("key-vault"),
            "{message}"
        );
    }

    #[test]
    fn a_token_from_another_authority_is_refused() {
        let (_, verifier) = setup();
        let stranger = Authority::generate();
        let token = mint(&stranger, Audience::KeyVault, now());
        assert_eq!(
            verifier.verify_at(&token, now()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn an_edited_token_is_refused() {
        let (authority, verifier) = setup();
        let token = mint(&authority, Audience::KeyVault, now());
        // Flip one character of the signed payload.
        let body = &token[PublicToken::HEADER.len()..];
        let index = body.len() / 3;
        let flipped = if &body[index..=index] == "A" {
            "B"
        } else {
            "A"
        };
        let edited = format!(
            "{}{}{}{}",
            PublicToken::HEADER,
            &body[..index],
            flipped,
            &body[index + 1..]
        );
        assert_eq!(
            verifier.verify_at(&edited, now()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expiry_allows_the_skew_and_no_more() {
        let (authority, verifier) = setup();
        let issued = now() - DEFAULT_TTL - Duration::from_secs(30);
        let token = mint(&authority, Audience::KeyVault, issued);
        assert_eq!(
            verifier.verify_at(&token, now()),
            Ok(alice()),
            "30 s late is within skew"
        );

        let issued = now() - DEFAULT_TTL - Duration::from_secs(61);
        let token = mint(&authority, Audience::KeyVault, issued);
        assert_eq!(
            verifier.verify_at(&token, now()),
            Err(TokenError::Expired {
                at: issued + DEFAULT_TTL
            })
        );
        let message = verifier.verify_at(&token, now()).unwrap_err().to_string();
        assert!(
            message.contains("2027-01-15T07:"),
            "the expiry time is shown: {message}"
        );
    }

    #[test]
    fn a_token_from_the_future_is_refused_beyond_the_skew() {
        let (authority, verifier) = setup();
        let soon = now() + Duration::from_secs(45);
        let token = mint(&authority, Audience::KeyVault, soon);
        assert_eq!(
            verifier.verify_at(&token, now()),
            Ok(alice()),
            "45 s ahead is within skew"
        );

        let later = now() + Duration::from_secs(120);
        let token = mint(&authority, Audience::KeyVault, later);
        assert_eq!(
            verifier.verify_at(&token, now()),
            Err(TokenError::NotYetValid { from: later })
        );
        let strict = verifier.clone().with_skew(Duration::ZERO);
        let token = mint(&authority, Audience::KeyVault, soon);
        assert!(matches!(
            strict.verify_at(&token, now()),
            Err(TokenError::NotYetValid { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let (_, verifier) = setup();
        for token in [
            "",
            "abc",
            "e2eb1.alice.2000.AAAA",
            "v4.local.AAAA",
            "v4.public.",
            "v4.public.!!!",
            "v4.public.AAAA",
            "v3.public.AAAA",
            &format!("v4.public.{}", "A".repeat(5000)),
        ] {
            assert!(
                matches!(
                    verifier.verify_at(token, now()),
                    Err(TokenError::Malformed(_))
                ),
                "{token:.40}: {:?}",
                verifier.verify_at(token, now())
            );
        }
    }

    #[test]
    fn every_claim_is_required() {
        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let verifier = Verifier::new(
            PublicKey::from_paserk(&{
                let mut text = String::new();
                pasetors::paserk::FormatAsPaserk::fmt(&pair.public, &mut text).unwrap();
                text
            })
            .unwrap(),
            Audience::KeyVault,
        );
        let full = claims::build(&alice(), Audience::KeyVault, now(), DEFAULT_TTL).unwrap();
        assert_eq!(
            verifier.verify_at(&sign_claims(&pair, &full), now()),
            Ok(alice())
        );
        for claim in claims::REQUIRED {
            let mut partial = full.clone();
            partial.remove_claim(claim);
            assert_eq!(
                verifier.verify_at(&sign_claims(&pair, &partial), now()),
                Err(TokenError::MissingClaim(claim)),
                "{claim}"
            );
        }
        let mut bad_subject = full.clone();
        bad_subject.subject("../bob").unwrap();
        assert_eq!(
            verifier.verify_at(&sign_claims(&pair, &bad_subject), now()),
            Err(TokenError::InvalidClaim {
                claim: "sub",
                reason: "not an account id"
            })
        );
    }

    #[test]
    fn refusals_never_echo_the_token() {
        let (authority, verifier) = setup();
        let token = mint(&authority, Audience::BlobGateway, now());
        let message = verifier.verify_at(&token, now()).unwrap_err().to_string();
        let body = &token[PublicToken::HEADER.len()..];
        assert!(!message.contains(&body[..16]), "{message}");
    }
}
