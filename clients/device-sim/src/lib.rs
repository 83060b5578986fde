//! Simulated mobile devices: each generates a phone's chat data (a real
//! SQLite chat database and media files) from a seed and runs the backup
//! lifecycle against the running stack, then reports what it measured.

pub mod day;
pub mod fleet;
pub mod lifecycle;
pub mod password_flow;
pub mod phone;
pub mod s3_baseline;
pub mod services;
