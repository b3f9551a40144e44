#![doc = include_str!("../docs/crate.md")]

// Generated code names the framework `::sinew`; this lets the framework's
// own generated code (the health service) do the same.
extern crate self as sinew;

pub mod client;
#[cfg(test)]
mod closed_port;
pub mod contract;
mod executor;
pub mod fault;
mod headers;
pub mod health;
pub mod server;
pub mod telemetry;

pub use server::Server;

/// tonic, as sinew uses it. Generated code refers to it through here.
pub use tonic;

/// The error type boxed errors are carried in.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Includes the code sinew-build generated from the crate's contracts.
///
/// Put it in a module of its own; the packages become nested modules
/// (`greeter.v1` becomes `greeter::v1`), next to `FILE_DESCRIPTOR_SET`:
///
/// ```ignore
/// pub mod proto {
///     sinew::include_contracts!();
/// }
/// use proto::greeter::v1::{greeter_client::GreeterClient, GreeterContract};
/// ```
#[macro_export]
macro_rules! include_contracts {
    () => {
        include!(concat!(env!("OUT_DIR"), "/sinew_contracts.rs"));
    };
}
