//! Token checking for gRPC servers: an interceptor that verifies
//! `authorization: Bearer <token>` and hands the account to the handlers.
//! The token itself is never logged.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::{AccountId, SigningKey};

#[derive(Clone)]
pub struct Authenticator {
    key: Arc<SigningKey>,
}

impl Authenticator {
    pub fn new(key: SigningKey) -> Self {
        Self { key: Arc::new(key) }
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing or malformed `authorization: Bearer <token>` metadata",
                )
            })?;
        let account = self
            .key
            .verify(token)
            .map_err(|error| Status::unauthenticated(error.to_string()))?;
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
