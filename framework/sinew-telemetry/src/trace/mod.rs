//! The layers that trace and measure each call: [`client::ClientTrace`]
//! on outgoing calls, [`server::ServerTrace`] on incoming ones.
//!
//! sinew's client and server scaffold put them in their stacks; the
//! facade shows them as `sinew::client::trace` and `sinew::server`'s
//! `ServerTrace`. Each is a tower layer, usable on its own around any
//! `http` service.

pub mod client;
pub mod server;
