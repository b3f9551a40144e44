//! Where a server's per-call hyper tasks run.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

/// Spawns a server's per-call tasks boxed, as the client boxes its own
/// (tokio copies a large spawned future twice; a box is one pointer), and
/// counts them in `calls`, so that a drain can wait until every one has
/// ended (see `Connections::abandon`). One made
/// [`for a connection`](Self::for_connection) also counts its calls in the
/// connection's [`Activity`], which tells an idle connection.
#[derive(Debug, Clone)]
pub(crate) struct TrackingExecutor {
    calls: tokio_util::task::TaskTracker,
    activity: Option<Arc<Activity>>,
}

/// A connection's calls: how many are open, and how many have started,
/// which tells whether any started since the last look without reading a
/// clock on every call.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    open: AtomicUsize,
    started: AtomicU64,
}

/// One open call of a connection; dropped when the call's task ends.
struct Open(Arc<Activity>);

// === impl TrackingExecutor ===

impl TrackingExecutor {
    /// Spawns tasks counted in `calls`.
    pub(crate) fn new(calls: tokio_util::task::TaskTracker) -> Self {
        Self {
            calls,
            activity: None,
        }
    }

    /// The executor of one connection, whose calls are counted in
    /// `activity` as well.
    pub(crate) fn for_connection(&self, activity: Arc<Activity>) -> Self {
        Self {
            calls: self.calls.clone(),
            activity: Some(activity),
        }
    }
}

impl<F> hyper::rt::Executor<F> for TrackingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        match &self.activity {
            None => {
                tokio::spawn(Box::pin(self.calls.track_future(future)));
            }
            Some(activity) => {
                let open = activity.open();
                tokio::spawn(Box::pin(self.calls.track_future(async move {
                    let _open = open;
                    future.await
                })));
            }
        }
    }
}

// === impl Activity ===

impl Activity {
    fn open(self: &Arc<Self>) -> Open {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(self))
    }

    /// Calls open now.
    pub(crate) fn open_calls(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Calls started so far.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
