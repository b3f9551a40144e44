use tower::Layer;

use super::ServerTrace;

/// Wraps a service in [`ServerTrace`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer {
    _priv: (),
}

impl ServerTraceLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace::new(inner)
    }
}
