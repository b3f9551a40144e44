//! Turns a panicking handler into an `INTERNAL` status for that call only:
//! a panic while building the handler's future, while running it, or while
//! producing its response stream.
//!
//! Without it, a panic in a handler unwinds through hyper's connection
//! task and takes down every call on the same HTTP/2 connection. The panic
//! message is logged; the caller sees only `internal error`.

mod body;
mod future;
mod layer;
mod service;

pub use body::PanicSafeBody;
pub use future::ResponseFuture;
pub use layer::CatchPanicLayer;
pub use service::CatchPanic;
