use std::time::Duration;

use tower::Layer;

use super::{ClientDeadline, DEFAULT_HEADROOM};

/// Wraps a service in [`ClientDeadline`].
#[derive(Debug, Clone, Copy)]
pub struct ClientDeadlineLayer {
    default_timeout: Option<Duration>,
    headroom: Duration,
}

impl ClientDeadlineLayer {
    /// Calls with no timeout of their own get `default_timeout` (`None`:
    /// no deadline unless one is inherited).
    pub fn new(default_timeout: Option<Duration>) -> Self {
        Self {
            default_timeout,
            headroom: DEFAULT_HEADROOM,
        }
    }

    /// Keep this much of an inherited deadline back (default 5ms).
    pub fn headroom(mut self, headroom: Duration) -> Self {
        self.headroom = headroom;
        self
    }
}

impl<S> Layer<S> for ClientDeadlineLayer {
    type Service = ClientDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientDeadline::new(inner, self.default_timeout, self.headroom)
    }
}
