//! The deadline of an incoming call: the caller's `grpc-timeout`, capped by
//! the server's request timeout.
//!
//! The layer records the deadline in the request's extensions as a
//! [`Deadline`], and makes it the task's [`Deadline::current`] while the
//! handler runs, so that the calls the handler makes with sinew's client
//! inherit what is left of the caller's budget with no code from the user.
//! (A task the handler spawns does not inherit it; pass the deadline along
//! with [`Deadline::scope`].) When the deadline passes
//! before the handler answers, the call fails with `DEADLINE_EXCEEDED` and
//! the handler's future is dropped. Only the wait for the response headers
//! is bounded: a response stream, once started, is the handler's to end.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::DeadlineLayer;
pub use service::ServerDeadline;

pub use sinew_core::deadline::Deadline;
