//! Token checking for gRPC servers: an interceptor that verifies
//! `authorization: Bearer <token>` with a [`Verifier`] and hands the
//! account to the handlers. A refusal is UNAUTHENTICATED with the reason;
//! the token itself is never logged or echoed.

use std::sync::Arc;

use tonic::{Request, Status};
use tracing::debug;

use crate::{AccountId, Verifier};

/// The server side: wraps a service with
/// `InterceptedService::new(service, Authenticator::new(verifier))`.
#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<Verifier>,
}

impl Authenticator {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
        }
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 6750).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "no `authorization: Bearer <token>` metadata; ask the account authority for a {} token",
                    self.verifier.audience()
                ))
            })?;
        let account = self.verifier.verify(token).map_err(|error| {
            debug!(%error, "refused an account token");
            Status::unauthenticated(error.to_string())
        })?;
        request.extensions_mut().insert(account);
        Ok(request)
    }
}

/// The account the [`Authenticator`] verified for this request.
pub fn account<T>(request: &Request<T>) -> Result<AccountId, Status> {
    request
        .extensions()
        .get::<AccountId>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request carries no verified account token"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Audience, Authority, BearerToken, DEFAULT_TTL};
    use tonic::Code;
    use tonic::service::Interceptor;

    fn alice() -> AccountId {
        AccountId::new("alice").unwrap()
    }

    /// A request as the client interceptor sends it, through the server's.
    fn round_trip(
        client: &mut BearerToken,
        server: &mut Authenticator,
    ) -> Result<AccountId, Status> {
        let request = client.call(Request::new(()))?;
        let request = server.call(request)?;
        account(&request)
    }

    #[test]
    fn the_client_interceptor_feeds_the_server_interceptor() {
        let authority = Authority::generate();
        let mut server = Authenticator::new(Verifier::new(
            authority.public_key().clone(),
            Audience::BlobGateway,
        ));
        let token = authority
            .mint(&alice(), Audience::BlobGateway, DEFAULT_TTL)
            .unwrap();
        let mut client = BearerToken::new(token);
        assert_eq!(round_trip(&mut client, &mut server).unwrap(), alice());
    }

    #[test]
    fn refusals_are_unauthenticated_with_the_reason() {
        let authority = Authority::generate();
        let mut server = Authenticator::new(Verifier::new(
            authority.public_key().clone(),
            Audience::BlobGateway,
        ));
        let vault_token = authority
            .mint(&alice(), Audience::KeyVault, DEFAULT_TTL)
            .unwrap();
        let status =
            round_trip(&mut BearerToken::new(vault_token.clone()), &mut server).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("\"key-vault\""), "{status:?}");
        assert!(!status.message().contains(vault_token.expose_secret()));

        let stranger = Authority::generate()
            .mint(&alice(), Audience::BlobGateway, DEFAULT_TTL)
            .unwrap();
        let status = round_trip(&mut BearerToken::new(stranger), &mut server).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("not signed"), "{status:?}");
    }

    #[test]
    fn a_missing_or_non_bearer_header_is_unauthenticated() {
        let mut server = Authenticator::new(Verifier::new(
            Authority::generate().public_key().clone(),
            Audience::KeyVault,
        ));
        let status = server.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("key-vault token"), "{status:?}");
        for value in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "v4.public.x"] {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
            let status = server.call(request).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{value}");
        }
        // Without the interceptor, a handler finds no account.
        assert_eq!(
            account(&Request::new(())).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Token abc"), None);
    }
}
