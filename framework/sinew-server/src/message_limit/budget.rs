//! A byte budget for request data held while it forms whole messages.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

use super::FrameWalker;
use crate::{BoxError, serve::RequestChecks};

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
/// is given back. The scaffold keeps one for all its connections
/// (`max_request_buffer`) and one for each connection
/// (`max_request_buffer_per_connection`).
#[derive(Debug)]
pub(crate) struct RequestBudget {
    used: AtomicUsize,
    limit: usize,
}

/// The budgets one connection's requests hold their partial messages
/// against: the server's, shared, and the connection's own. One per
/// connection, shared by its requests' bodies.
#[derive(Debug)]
pub(crate) struct Budgets {
    server: Arc<RequestBudget>,
    connection: RequestBudget,
    /// The receive limit of each message.
    max_message: usize,
}

pin_project! {
    /// A request body whose messages may not exceed the receive limit and
    /// whose partial message holds its bytes against the connection's
    /// [`Budgets`]; past either, it fails with `RESOURCE_EXHAUSTED`. The
    /// framing is walked once for both (the scaffold's message limit
    /// layer then leaves requests alone). A message that arrives in one
    /// frame (the usual case) touches no budget.
    pub(crate) struct BudgetedBody<B> {
        #[pin]
        inner: B,
        walker: FrameWalker,
        limit: usize,
        held: Held,
        failed: bool,
        // Whether the method takes one request message: a second fails
        // the request with `INTERNAL`.
        single: OneMessage,
    }
}

/// Whether a request's method takes one message, looked up only when a
/// second message arrives: a request of one message (the usual case) never
/// pays for the lookup.
#[derive(Debug)]
pub(crate) enum OneMessage {
    /// It takes one.
    Always,
    /// It takes a stream, or the answer is already known to be no.
    Never,
    /// Ask these checks about this path.
    Lookup(Arc<RequestChecks>, http::uri::PathAndQuery),
}

impl OneMessage {
    /// Whether the method takes one message; asked once at most.
    fn takes_one(&mut self) -> bool {
        let one = match self {
            Self::Always => return true,
            Self::Never => return false,
            Self::Lookup(checks, path) => checks.takes_one_message(path.path()),
        };
        *self = if one { Self::Always } else { Self::Never };
        one
    }
}

/// What a body holds of its budgets; given back when dropped.
#[derive(Debug)]
struct Held {
    budgets: Arc<Budgets>,
    bytes: usize,
}

// === impl RequestBudget ===

impl RequestBudget {
    /// A budget of `limit` bytes, none in use.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self::unshared(limit))
    }

    fn unshared(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes in use now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
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

// === impl Budgets ===

impl Budgets {
    /// A connection's budgets: `per_connection` bytes of its own, within
    /// the server's; each message at most `max_message` bytes.
    pub(crate) fn new(
        server: Arc<RequestBudget>,
        per_connection: usize,
        max_message: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            server,
            connection: RequestBudget::unshared(per_connection),
            max_message,
        })
    }

    fn try_take(&self, bytes: usize) -> bool {
        if !self.server.try_take(bytes) {
            return false;
        }
        if !self.connection.try_take(bytes) {
            self.server.give(bytes);
            return false;
        }
        true
    }

    fn give(&self, bytes: usize) {
        self.server.give(bytes);
        self.connection.give(bytes);
    }
}

// === impl BudgetedBody ===

impl<B> BudgetedBody<B> {
    /// `inner`, its messages up to the connection's receive limit,
    /// holding its partial messages against `budgets`; one message at most
    /// if `single` (the method's requests are not a stream).
    pub(crate) fn new(inner: B, budgets: Arc<Budgets>, single: OneMessage) -> Self {
        Self {
            inner,
            walker: FrameWalker::default(),
            limit: budgets.max_message,
            held: Held { budgets, bytes: 0 },
            failed: false,
            single,
        }
    }
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            if let Some(length) = this.walker.feed(data, *this.limit) {
                *this.failed = true;
                this.held.hold(0);
                let status = super::too_large(length, *this.limit, super::Direction::Receive);
                return Poll::Ready(Some(Err(status.into())));
            }
            if this.walker.messages() > 1 && this.single.takes_one() {
                // As grpc-java answers: tonic would decode the extra
                // messages and drop them.
                *this.failed = true;
                this.held.hold(0);
                let status =
                    Status::internal("more than one request message for a method that takes one");
                return Poll::Ready(Some(Err(status.into())));
            }
            if !this.held.hold(this.walker.partial()) {
                // Past a budget: this request ends here, and what it held
                // is given back, rather than the server holding without
                // bound.
                *this.failed = true;
                this.held.hold(0);
                let status = Status::resource_exhausted(
                    "the server is holding too much request data; try again later",
                );
                return Poll::Ready(Some(Err(status.into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Held ===

impl Held {
    /// Holds `bytes` from now on, taking or giving back the difference;
    /// `false`, holding what it held, if they do not fit.
    fn hold(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            if !self.budgets.try_take(bytes - self.bytes) {
                return false;
            }
        } else if bytes < self.bytes {
            self.budgets.give(self.bytes - bytes);
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
    use http_body_util::{BodyExt as _, StreamBody};

    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend(std::iter::repeat_n(0xAB, len as usize));
        out
    }

    fn body(
        chunks: Vec<Vec<u8>>,
        budgets: &Arc<Budgets>,
    ) -> Pin<Box<BudgetedBody<impl Body<Data = Bytes, Error = std::convert::Infallible>>>> {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok(Frame::data(Bytes::from(chunk))));
        Box::pin(BudgetedBody::new(
            StreamBody::new(tokio_stream::iter(frames)),
            Arc::clone(budgets),
            OneMessage::Never,
        ))
    }

    #[tokio::test]
    async fn partial_messages_hold_both_budgets_until_they_complete() {
        let server = RequestBudget::new(100);
        let budgets = Budgets::new(server.clone(), 1000, 1000);
        let whole = frame(80);

        // A: its header and 60 of 80 bytes: 65 held.
        let mut a = body(vec![whole[..65].to_vec(), whole[65..].to_vec()], &budgets);
        a.frame().await.unwrap().unwrap();
        assert_eq!((server.in_use(), budgets.connection.in_use()), (65, 65));

        // B: 45 more would pass the server's limit: B fails, holding
        // nothing.
        let mut b = body(vec![frame(50)[..45].to_vec()], &budgets);
        let error = b.frame().await.unwrap().unwrap_err();
        let status = error.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(b.frame().await.is_none(), "a failed body ends");
        assert_eq!(server.in_use(), 65);

        // A's message completes: both budgets are free again.
        a.frame().await.unwrap().unwrap();
        assert_eq!((server.in_use(), budgets.connection.in_use()), (0, 0));

        // A body dropped mid-message gives back what it held.
        let mut c = body(vec![whole[..30].to_vec()], &budgets);
        c.frame().await.unwrap().unwrap();
        assert_eq!(server.in_use(), 30);
        drop(c);
        assert_eq!(server.in_use(), 0);
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_from_its_header() {
        let server = RequestBudget::new(1 << 20);
        let budgets = Budgets::new(server.clone(), 1 << 20, 1000);
        // 1001 bytes declared, over the limit of 1000: refused before any
        // of it is held.
        let mut a = body(vec![frame(1001)[..5].to_vec()], &budgets);
        let error = a.frame().await.unwrap().unwrap_err();
        let status = error.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("1001"), "{}", status.message());
        assert_eq!(server.in_use(), 0);
        // At the limit, it passes.
        let mut b = body(vec![frame(1000)], &budgets);
        b.frame().await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_second_message_fails_a_single_message_request() {
        let budgets = Budgets::new(RequestBudget::new(1 << 20), 1 << 20, 1000);
        let single = |chunks: Vec<Vec<u8>>| {
            let frames = chunks
                .into_iter()
                .map(|chunk| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk))));
            Box::pin(BudgetedBody::new(
                StreamBody::new(tokio_stream::iter(frames)),
                Arc::clone(&budgets),
                OneMessage::Always,
            ))
        };
        // One message, in any chunking: passes.
        let mut a = single(vec![frame(10)[..3].to_vec(), frame(10)[3..].to_vec()]);
        while let Some(next) = a.frame().await {
            next.unwrap();
        }
        // A second message, even one whose header arrives in pieces, fails
        // the body with INTERNAL, and it ends.
        let second = frame(4);
        let mut b = single(vec![frame(10), second[..2].to_vec(), second[2..].to_vec()]);
        b.frame().await.unwrap().unwrap();
        b.frame().await.unwrap().unwrap();
        let status = b
            .frame()
            .await
            .unwrap()
            .unwrap_err()
            .downcast::<Status>()
            .unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(b.frame().await.is_none());
        // Two in one chunk: the same.
        let mut c = single(vec![[frame(1), frame(1)].concat()]);
        assert!(c.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn the_connections_budget_binds_within_the_servers() {
        let server = RequestBudget::new(1000);
        let budgets = Budgets::new(server.clone(), 50, 1000);
        let mut a = body(vec![frame(80)[..45].to_vec()], &budgets);
        a.frame().await.unwrap().unwrap();
        let mut b = body(vec![frame(80)[..10].to_vec()], &budgets);
        assert!(b.frame().await.unwrap().is_err());
        // Nothing of B stays taken from the server's budget either.
        assert_eq!(server.in_use(), 45);

        // Another connection has its own.
        let other = Budgets::new(server.clone(), 50, 1000);
        let mut c = body(vec![frame(80)[..45].to_vec()], &other);
        c.frame().await.unwrap().unwrap();
        assert_eq!(server.in_use(), 90);
    }
}
