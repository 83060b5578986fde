//! Every call carries `authorization: Bearer <account token>`; the
//! interceptor verifies it and hands the account to the handlers. The token
//! itself is never logged.

use std::sync::Arc;

use account_token::{AccountId, SigningKey};
use tonic::{Request, Status};

use crate::error::ServiceError;

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
            .ok_or(ServiceError::MissingToken)?;
        let account = self.key.verify(token).map_err(ServiceError::from)?;
        request.extensions_mut().insert(account);
        Ok(request)
    }
}

/// The authenticated account of a request.
pub fn account<T>(request: &Request<T>) -> Result<AccountId, Status> {
    request
        .extensions()
        .get::<AccountId>()
        .cloned()
        .ok_or_else(|| ServiceError::MissingToken.into())
}
