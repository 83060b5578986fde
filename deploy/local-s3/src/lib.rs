//! `local-s3`: the S3 endpoint of the local stack, with no external service.
//!
//! The blob gateway speaks S3 through `aws-sdk-s3` with an endpoint override, and
//! deployments point it at MinIO. A developer machine or a test run should not need
//! MinIO, so this crate serves the S3 API over a plain directory with
//! [`s3s`] and [`s3s_fs`] — we do not implement S3 ourselves.
//!
//! `s3s-fs` 0.14.1 has defects that matter to the gateway; [`PatchedFs`] wraps it and
//! fixes them (see [`fixes`] for the list). Everything else is served by `s3s-fs` as is.
//!
//! [`serve`] starts the server on a Tokio runtime and returns a [`Server`] handle that
//! knows the bound address, so tests can listen on `127.0.0.1:0` and run in-process.

mod body;
mod config;
mod delete;
pub mod fixes;
mod listing;
mod locks;
mod server;
mod sidecar;
pub mod space;
mod uploads;
mod write;

pub use config::{Config, TestOptions};
pub use fixes::PatchedFs;
pub use server::{ServeError, Server, serve, serve_with};
