//! The token itself as a secret value, and the audiences a token can name.
//! A token is a bearer credential: whoever holds it acts for the account
//! until it expires, so it lives in a zeroizing string with a redacted
//! `Debug`.

use std::fmt;

use zeroize::Zeroizing;

/// A signed account token (PASETO `v4.public.…`). Zeroized on drop; `Debug`
/// never shows it.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token text, for the one place that puts it on the wire.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl From<String> for Token {
    fn from(token: String) -> Self {
        Self::new(token)
    }
}

impl From<&str> for Token {
    fn from(token: &str) -> Self {
        Self::new(token)
    }
}

/// The service a token is for (the `aud` claim). A service refuses tokens
/// for any other audience, so a token one service sees cannot be replayed
/// against the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Audience {
    /// The blob gateway (`blob-gateway`).
    BlobGateway,
    /// The key vault (`key-vault`).
    KeyVault,
}

impl Audience {
    pub const ALL: [Audience; 2] = [Audience::BlobGateway, Audience::KeyVault];

    /// The `aud` claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::BlobGateway => "blob-gateway",
            Audience::KeyVault => "key-vault",
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let token = Token::new("v4.public.secret-bits");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(token.expose_secret(), "v4.public.secret-bits");
    }

    #[test]
    fn audiences_are_the_service_names() {
        assert_eq!(Audience::BlobGateway.to_string(), "blob-gateway");
        assert_eq!(Audience::KeyVault.to_string(), "key-vault");
        // mint-token's --audience takes the same names.
        use clap::ValueEnum;
        for audience in Audience::ALL {
            assert_eq!(Audience::from_str(audience.as_str(), false), Ok(audience));
        }
    }
}
