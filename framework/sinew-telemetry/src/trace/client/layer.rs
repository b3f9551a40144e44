use tower::Layer;

use super::ClientTrace;

/// Wraps a service in [`ClientTrace`].
#[derive(Debug, Clone, Default)]
pub struct ClientTraceLayer {
    server_address: Option<String>,
}

impl ClientTraceLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `host` as `server.address` of calls whose URI has no host:
    /// see [`ClientTrace::server_address`].
    pub fn server_address(mut self, host: impl Into<String>) -> Self {
        self.server_address = Some(host.into());
        self
    }
}

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let service = ClientTrace::new(inner);
        match &self.server_address {
            Some(host) => service.server_address(host.clone()),
            None => service,
        }
    }
}
