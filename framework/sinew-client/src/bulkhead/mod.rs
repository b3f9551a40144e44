//! A bulkhead: a bound on the calls in flight, with a short, bounded wait
//! for a slot, so that one slow dependency cannot tie up every task and
//! connection of the caller.
//!
//! # Admission
//!
//! 1. A call takes a free slot if there is one (up to
//!    [`max_concurrent`](BulkheadConfig::max_concurrent)).
//! 2. Otherwise it waits in the queue, first come first served, if the
//!    queue has room (up to [`max_queue`](BulkheadConfig::max_queue)), for
//!    at most [`queue_timeout`](BulkheadConfig::queue_timeout).
//! 3. Otherwise it fails at once with `RESOURCE_EXHAUSTED` and cause
//!    [`BulkheadFull { timed_out: false }`](crate::BulkheadFull),
//!    without reaching the inner service. A wait that times out fails the
//!    same way with `timed_out: true`.
//!
//! # How long a slot is held
//!
//! Until the call is completely over: a trailers-only response or an error
//! frees it at once, any other response when its body ends (or is dropped).
//! A streaming call holds its slot for as long as it streams, which is the
//! point: a stream ties up the server as much as a slow unary call does.
//!
//! # Sharing and groups
//!
//! The slots live in [`Limits`], which is shared by reference counting:
//! clones of a [`Bulkhead`] share theirs, and [`BulkheadLayer::shared`]
//! puts several services behind one. [`BulkheadLayer::grouped`] gives the
//! methods under a path prefix limits of their own, so that one slow
//! dependency cannot take every slot:
//!
//! ```
//! use sinew_client::bulkhead::{BulkheadConfig, BulkheadLayer};
//!
//! let slow = BulkheadConfig { max_concurrent: 4, ..BulkheadConfig::default() };
//! let layer = BulkheadLayer::grouped(BulkheadConfig::default(), [("/pkg.Slow/", slow)]);
//! # let _ = layer;
//! ```

mod body;
mod config;
pub mod future;
mod layer;
mod limits;
mod service;

#[cfg(test)]
mod tests;

pub use body::{HeldSlot, SlotBody};
pub use config::BulkheadConfig;
pub use layer::BulkheadLayer;
pub use limits::Limits;
pub use service::Bulkhead;
