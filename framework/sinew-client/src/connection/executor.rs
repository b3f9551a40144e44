//! Where a client's hyper tasks run.

use std::future::Future;

/// Spawns a client's hyper tasks on tokio, boxed.
///
/// hyper spawns a task per call on each side: on a client, the pipe that
/// streams the request body; on a server, the handler's future together
/// with the pipe that sends its response. Those futures are large, and
/// tokio copies a spawned future into its task and again when the task's
/// slot is overwritten with its output. Boxed, what is copied is a
/// pointer, for one allocation (about 2,000 instructions a call less on
/// each side); the tokio executor hyper-util offers spawns unboxed. The
/// server scaffold boxes its tasks the same way (and counts them).
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
