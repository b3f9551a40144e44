//! A byte budget for request data held while it forms a whole message.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// A byte budget for request data that has arrived but does not yet form
/// a whole message: what the server holds for a call before its handler
/// gets the message.
///
/// The message limit bounds each message, and HTTP/2 flow control bounds
/// what the peer may send unread; but the decoder reads, and releases
/// window for, everything that arrives, so without a budget a peer that
/// opens many streams and sends most of a large message on each (never
/// the end of it) makes the server hold `connections × streams × message
/// limit`. With one, a request whose partial message would take the
/// budget past its limit fails with `RESOURCE_EXHAUSTED`, and what it held
/// is given back. The server keeps one for all its connections and one
/// for each connection (`max_request_buffer` and
/// `max_request_buffer_per_connection`).
#[derive(Debug)]
pub struct RequestBudget {
    used: AtomicUsize,
    limit: usize,
}

/// The budget of one connection, in its requests' extensions (the
/// scaffold puts it there).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget(pub(crate) Arc<RequestBudget>);

/// What one request body holds of its budgets: the bytes of its current
/// partial message. Given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Held {
    budgets: [Option<Arc<RequestBudget>>; 2],
    bytes: usize,
}

// === impl RequestBudget ===

impl RequestBudget {
    /// A budget of `limit` bytes, none in use.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes in use now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` if they fit.
    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

// === impl Held ===

impl Held {
    /// Holding nothing yet, of `server`'s and `connection`'s budgets.
    pub(crate) fn new(
        server: Option<Arc<RequestBudget>>,
        connection: Option<Arc<RequestBudget>>,
    ) -> Self {
        Self {
            budgets: [server, connection],
            bytes: 0,
        }
    }

    /// Holds `bytes` from now on, taking or giving back the difference;
    /// `false`, holding what it held, if they do not fit.
    pub(crate) fn hold(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            let more = bytes - self.bytes;
            let budgets = self.budgets.iter().flatten();
            for (taken, budget) in budgets.clone().enumerate() {
                if !budget.try_take(more) {
                    budgets.take(taken).for_each(|budget| budget.give(more));
                    return false;
                }
            }
        } else {
            let less = self.bytes - bytes;
            self.budgets.iter().flatten().for_each(|b| b.give(less));
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.hold(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_takes_and_gives_back_from_both_budgets() {
        let server = RequestBudget::new(100);
        let connection = RequestBudget::new(60);
        let mut first = Held::new(Some(server.clone()), Some(connection.clone()));
        assert!(first.hold(50));
        assert_eq!((server.in_use(), connection.in_use()), (50, 50));

        // The connection's budget is the tighter: nothing is taken from
        // either when it does not fit.
        let mut second = Held::new(Some(server.clone()), Some(connection.clone()));
        assert!(!second.hold(20));
        assert_eq!((server.in_use(), connection.in_use()), (50, 50));

        // Another connection still has the server's.
        let other = RequestBudget::new(60);
        let mut third = Held::new(Some(server.clone()), Some(other.clone()));
        assert!(third.hold(50));
        assert!(!third.hold(51), "the server's budget is spent");
        assert_eq!(server.in_use(), 100);

        // A message completed gives back what it held; a drop, the rest.
        assert!(first.hold(0));
        assert_eq!((server.in_use(), connection.in_use()), (50, 0));
        drop(third);
        assert_eq!((server.in_use(), other.in_use()), (0, 0));
    }
}
