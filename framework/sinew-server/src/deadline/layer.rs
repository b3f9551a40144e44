use std::time::Duration;

use tower::Layer;

use super::ServerDeadline;

/// Wraps a service in [`ServerDeadline`] with a ceiling on every call.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    ceiling: Duration,
    uncapped: &'static [&'static str],
}

impl DeadlineLayer {
    /// Calls get at most `ceiling`, whatever their `grpc-timeout` asks.
    pub fn new(ceiling: Duration) -> Self {
        Self {
            ceiling,
            uncapped: &[],
        }
    }

    /// Calls to these paths (`/package.Service/Method`) are bounded only
    /// by their caller's `grpc-timeout`, not by the ceiling: streams meant
    /// to last, such as health's `Watch`.
    pub fn uncapped(mut self, paths: &'static [&'static str]) -> Self {
        self.uncapped = paths;
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline::new(inner, self.ceiling).uncapped(self.uncapped)
    }
}
