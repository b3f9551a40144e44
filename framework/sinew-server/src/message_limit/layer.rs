use tower::Layer;

use super::MessageLimit;

/// Wraps a service in [`MessageLimit`].
#[derive(Debug, Clone, Copy)]
pub struct MessageLimitLayer {
    max_receive: usize,
    max_send: usize,
    decompressed: bool,
}

impl MessageLimitLayer {
    /// Requests' messages may have up to `max_receive` bytes, responses'
    /// up to `max_send`.
    pub fn new(max_receive: usize, max_send: usize) -> Self {
        Self {
            max_receive,
            max_send,
            decompressed: false,
        }
    }

    /// Counts compressed responses' messages by what they decompress to
    /// (see [`MessageLimit::decompressed`]).
    pub fn decompressed(mut self, decompressed: bool) -> Self {
        self.decompressed = decompressed;
        self
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit::new(inner, self.max_receive, self.max_send).decompressed(self.decompressed)
    }
}
