#![doc = include_str!("../docs/crate.md")]

pub use sinew_core::{contract, event, fault, tls};

pub mod client {
    //! Resilient clients: deadlines, retries, hedging, circuit breakers,
    //! bulkheads and load balancing, each a tower layer usable on its own,
    //! and assembled with per-method policy from the contract. A call goes
    //! through, outermost first: policy resolution, tracing, the deadline,
    //! the bulkhead, hedging or retries, fault injection when configured,
    //! load balancing, each endpoint's circuit breaker and connection (the
    //! `sinew-client` crate docs say more of each).
    #[doc(inline)]
    pub use sinew_client::*;
}

pub mod server {
    //! The server scaffold: one builder that hosts generated services with
    //! health checking, reflection, readiness probes, safe limits and a
    //! graceful drain. See [`Server`] for what a call goes through, and
    //! [`Server::layer`] and [`Server::add_service_with`] for middleware of
    //! your own (tower layers, tonic interceptors).
    #[doc(inline)]
    pub use sinew_server::*;
}

#[doc(inline)]
pub use sinew_server::{Server, health};
#[doc(inline)]
pub use sinew_telemetry as telemetry;

/// Domain events over NATS JetStream, with a transactional outbox and an
/// idempotent inbox (the `events` feature).
#[cfg(feature = "events")]
#[doc(inline)]
pub use sinew_events as events;

/// Sagas: durable distributed transactions with compensation, embedded in
/// the service and kept in its database; steps built from the contract;
/// the admin service; idempotency keys for participants (the `saga`
/// feature).
#[cfg(feature = "saga")]
#[doc(inline)]
pub use sinew_saga as saga;

/// The API gateway: transparent forwarding through resilient clients,
/// strangler-fig routing with weights and shadow comparison, HTTP/JSON
/// transcoding and OpenAPI from the contracts, and the aggregation helper
/// (the `gateway` feature).
#[cfg(feature = "gateway")]
#[doc(inline)]
pub use sinew_gateway as gateway;

/// tonic, as sinew uses it: generated code reaches it through here, so a
/// user's crate needs no dependency of its own on it.
pub use tonic;

/// prost, as sinew uses it: generated messages derive its traits through
/// here.
pub use prost;

/// prost's well-known types (`google.protobuf.Timestamp`, ...), which
/// generated messages name through here.
pub use prost_types;

/// tonic's prost codec, which generated clients and servers encode with.
pub use tonic_prost;

pub use sinew_core::BoxError;

/// Includes the code sinew-build generated from the crate's contracts.
///
/// Put it in a module of its own; the packages become nested modules
/// (`greeter.v1` becomes `greeter::v1`), next to `FILE_DESCRIPTOR_SET`:
///
/// ```ignore
/// pub mod proto {
///     sinew::include_contracts!();
/// }
/// // The resilient client, the server and the method table:
/// use proto::greeter::v1::{GreeterClient, GreeterContract, greeter_server::GreeterServer};
/// ```
#[macro_export]
macro_rules! include_contracts {
    () => {
        include!(concat!(env!("OUT_DIR"), "/sinew_contracts.rs"));
    };
}
