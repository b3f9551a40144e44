use std::sync::Arc;

use tower::Layer;

use super::{MessageLimit, RequestBudget};

/// Wraps a service in [`MessageLimit`].
#[derive(Debug, Clone)]
pub struct MessageLimitLayer {
    max_receive: usize,
    max_send: usize,
    budget: Option<Arc<RequestBudget>>,
}

impl MessageLimitLayer {
    /// Requests' messages may have up to `max_receive` bytes, responses'
    /// up to `max_send`.
    pub fn new(max_receive: usize, max_send: usize) -> Self {
        Self {
            max_receive,
            max_send,
            budget: None,
        }
    }

    /// Holds requests' partial messages against `budget`; see
    /// [`MessageLimit::with_budget`].
    pub fn with_budget(mut self, budget: Arc<RequestBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limit = MessageLimit::new(inner, self.max_receive, self.max_send);
        match &self.budget {
            Some(budget) => limit.with_budget(Arc::clone(budget)),
            None => limit,
        }
    }
}
