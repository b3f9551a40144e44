use tower::Layer;

use super::ClientTrace;

/// Wraps a service in [`ClientTrace`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTraceLayer {
    _priv: (),
}

impl ClientTraceLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace::new(inner)
    }
}
