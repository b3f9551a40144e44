//! Where hyper's per-stream tasks run.

use std::future::Future;

/// Spawns hyper's tasks on tokio, boxed.
///
/// hyper spawns one task per HTTP/2 stream (an incoming call): the
/// handler's future together with the pipe that sends its response. That
/// future is large, and tokio copies a spawned future into its task and
/// again when the task's slot is overwritten with its output. Boxed, what
/// is copied is a pointer, for one allocation; the tokio executor
/// hyper-util offers spawns unboxed. (The client side does the same in
/// `client/connection/connect.rs`.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoxingExecutor;

// === impl BoxingExecutor ===

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}
