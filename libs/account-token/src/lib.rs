//! Account tokens: the short-lived bearer tokens that the account authority
//! (the chat server, in WhatsApp's design) issues and that the blob gateway
//! and the key vault verify.
//!
//! A token is PASETO `v4.public` (Ed25519 signatures, via the reviewed
//! `pasetors` crate) with the claims `sub` (account id), `aud`
//! (`blob-gateway` or `key-vault`), `iat`, `nbf`, `exp` (15 minutes by
//! default) and `jti` (random). Only the [`Authority`] holds the secret
//! key; a service holds the public key in a [`Verifier`] for its own
//! [`Audience`], so a gateway operator cannot mint vault tokens and a token
//! sent to one service is refused by the other.
//!
//! gRPC plumbing lives here too, so every client and server uses the same
//! pieces: [`grpc::Authenticator`] (server interceptor) and [`BearerToken`]
//! (client interceptor fed by a [`TokenSource`]).

mod account;
mod args;
mod authority;
mod claims;
mod client;
pub mod grpc;
mod token;
mod verifier;

pub use account::{AccountId, InvalidAccountId};
pub use args::{AuthorityArgs, VerifierArgs};
pub use authority::{Authority, DEFAULT_TTL, KeyFileError, PublicKey, public_key_file};
pub use claims::MintError;
pub use client::{AuthorityTokens, BearerToken, FixedToken, TokenSource, TokenSourceError};
pub use token::{Audience, Token};
pub use verifier::{DEFAULT_SKEW, TokenError, Verifier};
