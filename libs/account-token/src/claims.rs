//! The claims an account token carries and how they are checked, kept apart
//! from signing so the rules read in one place: `sub` (the account), `aud`
//! (the service), `iat`, `nbf`, `exp` (RFC 3339, whole seconds) and `jti`
//! (a random token id). Signatures are pasetors' job; the time checks are
//! ours because they need a clock the tests control and a skew allowance.

use std::time::{Duration, SystemTime};

use pasetors::claims::Claims;
use rand::RngCore;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{AccountId, Audience, TokenError};

/// Every claim a token must carry, in the order they are checked.
pub(crate) const REQUIRED: [&str; 6] = ["sub", "aud", "iat", "nbf", "exp", "jti"];

/// The claims of a new token for `account` and `audience`, valid from
/// `issued_at` for `ttl`.
pub(crate) fn build(
    account: &AccountId,
    audience: Audience,
    issued_at: SystemTime,
    ttl: Duration,
) -> Result<Claims, MintError> {
    let expires_at = issued_at.checked_add(ttl).ok_or(MintError::TtlOutOfRange)?;
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let mut claims = Claims::new().map_err(|_| MintError::TtlOutOfRange)?;
    let iat = rfc3339(issued_at)?;
    let set = [
        claims.subject(account.as_str()),
        claims.audience(audience.as_str()),
        claims.issued_at(&iat),
        claims.not_before(&iat),
        claims.expiration(&rfc3339(expires_at)?),
        claims.token_identifier(&hex::encode(jti)),
    ];
    set.into_iter()
        .collect::<Result<(), _>>()
        .map_err(|_| MintError::TtlOutOfRange)?;
    Ok(claims)
}

/// Checks verified `claims` for `expected` at `now`, allowing `skew`
/// between the authority's clock and ours, and returns the account.
pub(crate) fn check(
    claims: &Claims,
    expected: Audience,
    now: SystemTime,
    skew: Duration,
) -> Result<AccountId, TokenError> {
    for claim in REQUIRED {
        if !claims.contains_claim(claim) {
            return Err(TokenError::MissingClaim(claim));
        }
    }
    let found = text(claims, "aud")?;
    if found != expected.as_str() {
        return Err(TokenError::WrongAudience {
            expected,
            found: found.chars().take(64).collect(),
        });
    }
    let expires_at = time(claims, "exp")?;
    if now > expires_at + skew {
        return Err(TokenError::Expired { at: expires_at });
    }
    for claim in ["nbf", "iat"] {
        let from = time(claims, claim)?;
        if now + skew < from {
            return Err(TokenError::NotYetValid { from });
        }
    }
    if text(claims, "jti")?.is_empty() {
        return Err(TokenError::InvalidClaim {
            claim: "jti",
            reason: "empty",
        });
    }
    AccountId::new(text(claims, "sub")?).map_err(|_| TokenError::InvalidClaim {
        claim: "sub",
        reason: "not an account id",
    })
}

fn text<'a>(claims: &'a Claims, claim: &'static str) -> Result<&'a str, TokenError> {
    claims
        .get_claim(claim)
        .ok_or(TokenError::MissingClaim(claim))?
        .as_str()
        .ok_or(TokenError::InvalidClaim {
            claim,
            reason: "not a string",
        })
}

fn time(claims: &Claims, claim: &'static str) -> Result<SystemTime, TokenError> {
    OffsetDateTime::parse(text(claims, claim)?, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| TokenError::InvalidClaim {
            claim,
            reason: "not an RFC 3339 time",
        })
}

fn rfc3339(at: SystemTime) -> Result<String, MintError> {
    OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .ok_or(MintError::TtlOutOfRange)
}

/// Why the authority could not issue a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("the token lifetime puts its expiry outside the representable time range")]
    TtlOutOfRange,
    #[error("signing the token failed ({0})")]
    Signing(String),
}
