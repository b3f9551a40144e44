//! Where a server's per-call hyper tasks run.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio_util::task::TaskTracker;

/// Spawns one connection's per-call tasks boxed, as the client boxes its
/// own (tokio copies a large spawned future twice; a box is one pointer),
/// and counts them in the connection's [`Activity`]: so that a drain can
/// wait until every one has ended (see `Connections::abandon`), and an
/// idle connection can be told.
#[derive(Debug, Clone)]
pub(crate) struct TrackingExecutor {
    activity: Arc<Activity>,
}

/// A connection's calls: the tasks of those open, and how many have
/// started, which tells whether any started since the last look without
/// reading a clock on every call.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    calls: TaskTracker,
    started: AtomicU64,
}

// === impl TrackingExecutor ===

impl TrackingExecutor {
    /// Spawns tasks counted in `activity`.
    pub(crate) fn new(activity: Arc<Activity>) -> Self {
        Self { activity }
    }
}

impl<F> hyper::rt::Executor<F> for TrackingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(Box::pin(self.activity.calls.track_future(future)));
    }
}

// === impl Activity ===

impl Activity {
    /// Calls open now.
    pub(crate) fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Calls started so far.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// The tasks of the connection's calls.
    pub(crate) fn calls(&self) -> &TaskTracker {
        &self.calls
    }
}
