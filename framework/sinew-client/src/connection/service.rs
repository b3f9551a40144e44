//! The connection as a tower service.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak},
    task::{Context, Poll},
};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{
    HeaderValue, Request, Response, Uri,
    header::USER_AGENT,
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http2::SendRequest},
};
use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::Service;

use super::{ConnectFailed, ConnectSettings, NotSent, ResponseBody, connect::Dialer};
use crate::{
    BoxError,
    {balance::Availability, balance::Target, status_with_cause},
};

/// How many connects a call waits for before it gives up on connections
/// that close as soon as they are made.
const MAX_WAITS: u32 = 3;

/// What calls carry in `user-agent` unless they set their own.
const SINEW_USER_AGENT: &str = concat!("sinew/", env!("CARGO_PKG_VERSION"));

/// One HTTP/2 connection to an endpoint, made at the first call and again
/// after it closes; see the [module docs](super).
///
/// Clones share the connection (and a connect in progress). It is always
/// ready: a call waits for the connection, or fails, in its future.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// Response future of [`Connection`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

struct Inner {
    /// The origin calls name, parsed once: clones are reference counts.
    scheme: Scheme,
    authority: Authority,
    user_agent: HeaderValue,
    dialer: Dialer,
    /// Read by every call, written only to connect or drop a connection.
    slot: RwLock<Slot>,
}

struct Slot {
    state: State,
    /// The id the next connection gets: it tells a connection that has
    /// been replaced from the current one.
    next_id: u64,
}

enum State {
    Idle,
    Connecting { id: u64, attempt: Attempt },
    Connected(Ready),
}

/// A connect in progress, awaited by every call that needs it. Its task
/// stores the connection before it ends.
type Attempt = Shared<BoxFuture<'static, Result<(), ConnectFailed>>>;

/// A connection to send on.
struct Ready {
    id: u64,
    send: SendRequest<Body>,
}

/// What to do with a request: it is on its way on a connection, or it
/// waits for a connect.
enum Next<F> {
    Sending(u64, F),
    Waiting(Box<Request<Body>>, Attempt),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("authority", &self.inner.authority)
            .finish_non_exhaustive()
    }
}

// === impl Connection ===

impl Connection {
    /// A connection to `target`, not made until the first call: it dials
    /// [`Target::connect`] and names [`Target::origin`] in calls.
    pub fn lazy(target: &Target, settings: ConnectSettings) -> Self {
        let origin = target.origin();
        let scheme = origin.scheme().cloned().unwrap_or(Scheme::HTTP);
        // Discovery only makes targets with an authority; the connect
        // address is a fallback that names the same endpoint.
        let authority = origin
            .authority()
            .or_else(|| target.connect().authority())
            .cloned()
            .unwrap_or_else(|| Authority::from_static("localhost"));
        Self {
            inner: Arc::new(Inner {
                scheme,
                authority,
                user_agent: HeaderValue::from_static(SINEW_USER_AGENT),
                dialer: Dialer::new(target.connect(), settings),
                slot: RwLock::new(Slot {
                    state: State::Idle,
                    next_id: 0,
                }),
            }),
        }
    }
}

impl Service<Request<Body>> for Connection {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if let Err(error) = self.inner.set_origin(&mut request) {
            return Box::pin(std::future::ready(Err(error)));
        }
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert_with(|| self.inner.user_agent.clone());
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(request).await })
    }
}

/// Always available: a connection that cannot be made shows in the
/// calls' errors, which the balancer backs the endpoint off on.
impl Availability for Connection {
    fn is_available(&self, _now: Instant) -> bool {
        true
    }
}

// === impl Inner ===

impl Inner {
    fn write(&self) -> RwLockWriteGuard<'_, Slot> {
        self.slot.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> RwLockReadGuard<'_, Slot> {
        self.slot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the request's path-only URI absolute with the origin.
    fn set_origin(&self, request: &mut Request<Body>) -> Result<(), BoxError> {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *request.uri_mut() = Uri::from_parts(parts)?;
        Ok(())
    }

    /// Sends `request` on the connection, connecting first if there is
    /// none; a request handed back unsent goes once more, on a new
    /// connection.
    async fn send(
        self: Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<ResponseBody>, BoxError> {
        // A request that may still be streaming is cancelled when its
        // response body is dropped early; one of known size is sent whole.
        let body = request.body();
        let mut cancel = if http_body::Body::size_hint(body).exact().is_none()
            && !http_body::Body::is_end_stream(body)
        {
            let (body, cancel) = super::cancel::pair(std::mem::take(request.body_mut()));
            *request.body_mut() = Body::new(body);
            Some(cancel)
        } else {
            None
        };
        let mut again = false;
        let mut waits = 0;
        loop {
            let (id, sending) = match self.next(request) {
                Next::Sending(id, sending) => (id, sending),
                // A server that closes each connection as soon as it is
                // made would keep the call dialing until its deadline:
                // after `MAX_WAITS` such connections it is a failed connect.
                Next::Waiting(..) if waits == MAX_WAITS => {
                    let closed = io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the connection closed as soon as it was made",
                    );
                    return Err(connect_failed(ConnectFailed::new(closed)));
                }
                Next::Waiting(unsent, attempt) => {
                    waits += 1;
                    attempt.await.map_err(connect_failed)?;
                    // Connected: the attempt's task stored the connection.
                    request = *unsent;
                    continue;
                }
            };
            let mut error = match sending.await {
                Ok(response) => {
                    let cancel = cancel.take();
                    return Ok(response.map(|body| ResponseBody::new(body, cancel)));
                }
                Err(error) => error,
            };
            // The connection is going away: the next call makes a new
            // one rather than wait for this one to drain and close.
            let unsent = error.take_message();
            let error = error.into_error();
            if unsent.is_some() || is_go_away(&error) {
                self.forget(id);
            }
            match unsent {
                Some(unsent) if !again => {
                    again = true;
                    request = unsent;
                }
                Some(_) => {
                    return Err(Box::new(status_with_cause(
                        Code::Unavailable,
                        "the connection closed before the request was sent",
                        NotSent::new(error),
                    )));
                }
                // A status from the h2 error in its chain, or UNAVAILABLE.
                None => return Err(Box::new(super::transport_status(error))),
            }
        }
    }

    /// Hands `request` to the open connection, or says which connect to
    /// wait for (starting one if none is in progress).
    fn next(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Next<impl Future<Output = SendResult> + Send + use<>> {
        // The usual case, under a shared lock: calls on other threads are
        // not held up, even by a thread descheduled while it sends. The
        // handle is cloned so that sending needs no lock at all.
        let open = match &self.read().state {
            State::Connected(ready) if !ready.send.is_closed() => {
                Some((ready.id, ready.send.clone()))
            }
            _ => None,
        };
        if let Some((id, mut send)) = open {
            return Next::Sending(id, dispatch(&mut send, request));
        }
        let mut slot = self.write();
        // Another call may have connected in between.
        if let State::Connected(ready) = &mut slot.state
            && !ready.send.is_closed()
        {
            return Next::Sending(ready.id, dispatch(&mut ready.send, request));
        }
        let attempt = match &slot.state {
            State::Connecting { attempt, .. } => attempt.clone(),
            State::Idle | State::Connected(_) => self.start_connect(&mut slot),
        };
        Next::Waiting(Box::new(request), attempt)
    }

    /// Starts a connect in its own task (it goes on even if the calls
    /// waiting for it are dropped), recorded in `slot`.
    fn start_connect(self: &Arc<Self>, slot: &mut Slot) -> Attempt {
        let id = slot.next_id;
        slot.next_id += 1;
        let inner = self.clone();
        let task = tokio::spawn(async move {
            let result = inner.dialer.dial().await;
            let mut slot = inner.write();
            // Nothing else replaces a connect in progress.
            match result {
                Ok(send) => {
                    slot.state = State::Connected(Ready { id, send });
                    Ok(())
                }
                Err(error) => {
                    tracing::debug!(authority = %inner.authority, %error, "connect failed");
                    slot.state = State::Idle;
                    Err(ConnectFailed::new(error))
                }
            }
        });
        // Weak: the attempt is stored in the slot it would otherwise keep
        // alive.
        let weak = Arc::downgrade(self);
        let attempt = async move {
            match task.await {
                Ok(result) => result,
                Err(join) => {
                    forget_attempt(&weak, id);
                    Err(ConnectFailed::new(io::Error::other(join)))
                }
            }
        }
        .boxed()
        .shared();
        slot.state = State::Connecting {
            id,
            attempt: attempt.clone(),
        };
        attempt
    }

    /// Drops connection `id` if it is still the current one, so that the
    /// next call connects again. Calls in flight on it go on.
    fn forget(&self, id: u64) {
        let mut slot = self.write();
        if matches!(&slot.state, State::Connected(ready) if ready.id == id) {
            slot.state = State::Idle;
        }
    }
}

/// The connect task of attempt `id` ended without a result (it panicked,
/// or the runtime is shutting down): let the next call try again.
fn forget_attempt(inner: &Weak<Inner>, id: u64) {
    if let Some(inner) = inner.upgrade() {
        let mut slot = inner.write();
        if matches!(&slot.state, State::Connecting { id: current, .. } if *current == id) {
            slot.state = State::Idle;
        }
    }
}

/// The error of a call whose connect failed, as callers see it.
fn connect_failed(failed: ConnectFailed) -> BoxError {
    Box::new(status_with_cause(
        Code::Unavailable,
        "could not connect to the endpoint",
        failed,
    ))
}

type SendResult = Result<Response<Incoming>, TrySendError<Request<Body>>>;

/// Starts sending `request` on `send`; the future does not borrow it.
fn dispatch(
    send: &mut SendRequest<Body>,
    request: Request<Body>,
) -> impl Future<Output = SendResult> + Send + use<> {
    send.try_send_request(request)
}

/// Whether `error` comes from a `GOAWAY`, sent or received.
fn is_go_away(error: &hyper::Error) -> bool {
    sinew_core::status::chain(error)
        .skip(1)
        .find_map(|error| error.downcast_ref::<h2::Error>())
        .is_some_and(h2::Error::is_go_away)
}
