//! The resilient client: every layer, assembled with per-method policy
//! from the contract.
//!
//! The order of the layers is in the [crate docs](crate).

mod config;
mod resolve;
mod service;

pub use config::{ClientConfig, ClientError};
pub use service::{Client, ClientBody};
