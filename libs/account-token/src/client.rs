//! The client side: where a device gets its tokens ([`TokenSource`]) and the
//! interceptor that puts one on every call ([`BearerToken`]). A long-running
//! client asks its source on every call, and a source backed by the
//! authority mints a fresh token before the old one expires, so a backup
//! that runs longer than a token's lifetime is not cut off.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tonic::metadata::AsciiMetadataValue;
use tonic::{Request, Status};

use crate::{AccountId, Audience, Authority, DEFAULT_TTL, Token};

/// Hands out a currently valid token for one account and one audience.
pub trait TokenSource: Send + Sync {
    fn token(&self) -> Result<Token, TokenSourceError>;
}

/// A source could not produce a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no account token available: {0}")]
pub struct TokenSourceError(pub String);

/// Always the same token (one given on the command line, or by a test).
pub struct FixedToken(Token);

impl FixedToken {
    pub fn new(token: impl Into<Token>) -> Self {
        Self(token.into())
    }
}

impl TokenSource for FixedToken {
    fn token(&self) -> Result<Token, TokenSourceError> {
        Ok(self.0.clone())
    }
}

/// Tokens minted on demand by an [`Authority`] held in this process (the
/// simulator plays the account authority). The current token is reused
/// until less than a quarter of its lifetime remains.
pub struct AuthorityTokens {
    authority: Arc<Authority>,
    account: AccountId,
    audience: Audience,
    ttl: Duration,
    current: Mutex<Option<Minted>>,
}

struct Minted {
    token: Token,
    renew_at: SystemTime,
}

impl AuthorityTokens {
    /// Tokens for `account` at `audience`, each valid for [`DEFAULT_TTL`].
    pub fn new(authority: Arc<Authority>, account: AccountId, audience: Audience) -> Self {
        Self {
            authority,
            account,
            audience,
            ttl: DEFAULT_TTL,
            current: Mutex::new(None),
        }
    }

    pub fn with_ttl(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// The token to send at `now`: the current one, or a new one when the
    /// current one is due for renewal.
    pub fn token_at(&self, now: SystemTime) -> Result<Token, TokenSourceError> {
        let mut current = self
            .current
            .lock()
            .expect("the token cache is never left half-updated");
        if let Some(minted) = current.as_ref().filter(|m| now < m.renew_at) {
            return Ok(minted.token.clone());
        }
        let token = self
            .authority
            .mint_at(&self.account, self.audience, now, self.ttl)
            .map_err(|error| TokenSourceError(error.to_string()))?;
        *current = Some(Minted {
            token: token.clone(),
            renew_at: now + self.ttl - self.ttl / 4,
        });
        Ok(token)
    }
}

impl TokenSource for AuthorityTokens {
    fn token(&self) -> Result<Token, TokenSourceError> {
        self.token_at(SystemTime::now())
    }
}

/// The client interceptor: adds `authorization: Bearer <token>` to every
/// call, with a token from its source. The header is marked sensitive
/// (never indexed by HPACK, hidden from `Debug`).
#[derive(Clone)]
pub struct BearerToken {
    source: Arc<dyn TokenSource>,
}

impl BearerToken {
    /// Always sends `token`.
    pub fn new(token: impl Into<Token>) -> Self {
        Self::from_source(FixedToken::new(token))
    }

    pub fn from_source(source: impl TokenSource + 'static) -> Self {
        Self {
            source: Arc::new(source),
        }
    }

    /// Fresh tokens from `authority` for `account` at `audience`.
    pub fn from_authority(
        authority: Arc<Authority>,
        account: AccountId,
        audience: Audience,
    ) -> Self {
        Self::from_source(AuthorityTokens::new(authority, account, audience))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self
            .source
            .token()
            .map_err(|error| Status::unauthenticated(error.to_string()))?;
        let header = zeroize::Zeroizing::new(format!("Bearer {}", token.expose_secret()));
        let mut value = AsciiMetadataValue::try_from(header.as_str())
            .map_err(|_| Status::invalid_argument("the account token is not valid header text"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verifier;
    use tonic::service::Interceptor;

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    fn header(interceptor: &mut BearerToken) -> String {
        let request = interceptor.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert!(value.is_sensitive());
        value.to_str().unwrap().to_string()
    }

    #[test]
    fn a_fixed_token_is_sent_as_bearer() {
        let mut interceptor = BearerToken::new("v4.public.abc");
        assert_eq!(header(&mut interceptor), "Bearer v4.public.abc");
        assert_eq!(format!("{interceptor:?}"), "BearerToken(<redacted>)");
    }

    #[test]
    fn authority_tokens_are_reused_then_renewed_before_expiry() {
        let authority = Arc::new(Authority::generate());
        let verifier = Verifier::new(authority.public_key().clone(), Audience::KeyVault);
        let source = AuthorityTokens::new(authority.clone(), alice(), Audience::KeyVault)
            .with_ttl(Duration::from_secs(600));
        let start = SystemTime::now();
        let first = source.token_at(start).unwrap();
        let again = source.token_at(start + Duration::from_secs(449)).unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());

        // With a quarter of its life left, a new token replaces it...
        let renewed = source.token_at(start + Duration::from_secs(450)).unwrap();
        assert_ne!(first.expose_secret(), renewed.expose_secret());
        // ...that is still valid after the first one has expired.
        let late = start + Duration::from_secs(600 + 120);
        assert!(matches!(
            verifier.verify_at(first.expose_secret(), late),
            Err(crate::TokenError::Expired { .. })
        ));
        assert_eq!(
            verifier.verify_at(renewed.expose_secret(), late),
            Ok(alice())
        );
    }

    #[test]
    fn the_interceptor_asks_its_source_on_every_call() {
        struct Counting(std::sync::atomic::AtomicU32);
        impl TokenSource for Counting {
            fn token(&self) -> Result<Token, TokenSourceError> {
                let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Token::new(format!("t{n}")))
            }
        }
        let mut interceptor = BearerToken::from_source(Counting(0.into()));
        assert_eq!(header(&mut interceptor), "Bearer t0");
        assert_eq!(header(&mut interceptor.clone()), "Bearer t1");
    }

    #[test]
    fn a_failing_source_fails_the_call_before_it_is_sent() {
        struct Broken;
        impl TokenSource for Broken {
            fn token(&self) -> Result<Token, TokenSourceError> {
                Err(TokenSourceError("the authority is unreachable".into()))
            }
        }
        let status = BearerToken::from_source(Broken)
            .call(Request::new(()))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("unreachable"));
    }
}
