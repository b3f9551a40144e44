//! Where a server's per-call hyper tasks run.

use std::future::Future;

/// Spawns a server's per-call tasks boxed, as the client boxes its own
/// (tokio copies a large spawned future twice; a box is one pointer), and counts them in `calls`, so that a drain can wait until every one has
/// ended (see `Connections::abandon`).
#[derive(Debug, Clone)]
pub(crate) struct TrackingExecutor {
    calls: tokio_util::task::TaskTracker,
}

// === impl TrackingExecutor ===

impl TrackingExecutor {
    /// Spawns tasks counted in `calls`.
    pub(crate) fn new(calls: tokio_util::task::TaskTracker) -> Self {
        Self { calls }
    }
}

impl<F> hyper::rt::Executor<F> for TrackingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(self.calls.track_future(future)));
    }
}
