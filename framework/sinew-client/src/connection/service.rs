//! The connection as a tower service.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak},
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

use super::{
    ConnectFailed, ConnectSettings, NotSent, ResponseBody,
    connect::{Dialer, Link},
    watchdog::{Activity, MAX_SILENCE},
};
use tokio::task::AbortHandle;

use crate::{
    BoxError, CallDeadline,
    {
        balance::{Availability, ReconnectBackoff, Target},
        status_with_cause,
    },
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
    /// The waits between background connects after a failed one.
    reconnect: ReconnectBackoff,
    /// Told when a connection is made after a failed connect.
    on_reconnect: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Read by every call, written only to connect or drop a connection.
    slot: RwLock<Slot>,
}

struct Slot {
    state: State,
    /// The id the next connection gets: it tells a connection that has
    /// been replaced from the current one.
    next_id: u64,
    /// The last connect failed, and none has succeeded since.
    failing: bool,
    /// A background task is connecting again (see [`redial`]).
    redialing: bool,
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
    /// What the connection's calls and reads tell its watchdog.
    activity: Arc<Activity>,
}

/// Marks a response whose call waited for its connection to be made: its
/// latency includes the dial, and says nothing of the server's (the
/// balancer leaves it out of the endpoint's estimate).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialed;

/// What to do with a request: it is on its way on a connection, or it
/// waits for a connect.
enum Next<F> {
    Sending(u64, Arc<Activity>, F),
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
                reconnect: settings.reconnect,
                dialer: Dialer::new(target.connect(), target.origin(), settings),
                on_reconnect: OnceLock::new(),
                slot: RwLock::new(Slot {
                    state: State::Idle,
                    next_id: 0,
                    failing: false,
                    redialing: false,
                }),
            }),
        }
    }

    /// Has `hook` called each time a connection is made after a connect
    /// failed (the client has it half-open the endpoint's breaker). Only
    /// the first hook set is kept.
    pub fn on_reconnect(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.inner.on_reconnect.set(Box::new(hook));
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        matches!(&self.inner.read().state, State::Connected(ready) if !ready.send.is_closed())
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
        let mut dialed = false;
        // The call's deadline, for the watchdog's patience.
        let deadline = CallDeadline::of(request.extensions()).map(CallDeadline::at);
        loop {
            let (id, activity, sending) = match self.next(request) {
                Next::Sending(id, activity, sending) => (id, activity, sending),
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
                    dialed = true;
                    attempt.await.map_err(connect_failed)?;
                    // Connected: the attempt's task stored the connection.
                    request = *unsent;
                    continue;
                }
            };
            let waiting = activity.waiting(deadline);
            let sent = sending.await;
            drop(waiting);
            let mut error = match sent {
                Ok(mut response) => {
                    if dialed {
                        response.extensions_mut().insert(Dialed);
                    }
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
                Some((ready.id, ready.send.clone(), ready.activity.clone()))
            }
            _ => None,
        };
        if let Some((id, mut send, activity)) = open {
            return Next::Sending(id, activity, dispatch(&mut send, request));
        }
        let mut slot = self.write();
        // Another call may have connected in between.
        if let State::Connected(ready) = &mut slot.state
            && !ready.send.is_closed()
        {
            let activity = ready.activity.clone();
            return Next::Sending(ready.id, activity, dispatch(&mut ready.send, request));
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
                Ok(Link {
                    send,
                    activity,
                    task,
                    killer,
                }) => {
                    tokio::spawn(watchdog(
                        Arc::downgrade(&inner),
                        id,
                        activity.clone(),
                        Watched { task, killer },
                    ));
                    slot.state = State::Connected(Ready { id, send, activity });
                    let recovered = std::mem::take(&mut slot.failing);
                    drop(slot);
                    if recovered {
                        tracing::debug!(authority = %inner.authority, "reconnected");
                        if let Some(hook) = inner.on_reconnect.get() {
                            hook();
                        }
                    }
                    Ok(())
                }
                Err(error) => {
                    tracing::debug!(authority = %inner.authority, %error, "connect failed");
                    slot.state = State::Idle;
                    slot.failing = true;
                    if !std::mem::replace(&mut slot.redialing, true) {
                        tokio::spawn(redial(Arc::downgrade(&inner)));
                    }
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

/// What the watchdog holds of its connection.
struct Watched {
    /// Its task, to tell when it has ended.
    task: AbortHandle,
    /// A duplicate of its socket, to shut it down with.
    killer: std::net::TcpStream,
}

/// Watches connection `id` while it lives: when it has been silent too
/// long with calls waiting on it, probes the endpoint with a new connect,
/// and shuts the connection down if the probe fails (see `watchdog`).
async fn watchdog(inner: Weak<Inner>, id: u64, activity: Arc<Activity>, watched: Watched) {
    let mut seen = activity.seen();
    loop {
        let patience = tokio::select! {
            patience = activity.suspect(&mut seen) => patience,
            // The connection closed on its own.
            () = closed(&watched.task) => return,
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let timeout = patience.min(strong.dialer.timeout());
        match strong.dialer.dial_within(timeout).await {
            Ok(_probe) => {
                // Alive, only slow; the probe connection is dropped.
                activity.cleared(&mut seen, Instant::now());
            }
            Err(error) => {
                tracing::warn!(
                    authority = %strong.authority,
                    silent_for = ?patience,
                    %error,
                    "the connection went silent and the endpoint answers no new connect: closing it"
                );
                strong.forget(id);
                // Its reads end: hyper fails every call on it. (Aborting
                // its task instead would leave the calls waiting.)
                let _ = watched.killer.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// Resolves once the connection's task has ended, looking now and then.
async fn closed(task: &AbortHandle) {
    while !task.is_finished() {
        tokio::time::sleep(MAX_SILENCE).await;
    }
}

/// Connects again in the background after a connect failed, waiting the
/// reconnect backoff between attempts, until one succeeds (or a call's
/// connect does) or the connection is dropped. One such task at most per
/// connection; it holds the connection only while an attempt runs.
///
/// Without it, an endpoint whose breaker opened on failed connects would
/// be tried again only when the breaker's recovery timeout ran out: with
/// it, the breaker half-opens as soon as the server accepts connections
/// again (see [`Connection::on_reconnect`]).
async fn redial(inner: Weak<Inner>) {
    let rng = crate::Rng::from_entropy();
    let mut failures = 0u32;
    loop {
        let Some(rule) = inner.upgrade().map(|inner| inner.reconnect.rule()) else {
            return;
        };
        tokio::time::sleep(rule.wait(failures.min(20), rng.next_f64())).await;
        failures = failures.saturating_add(1);
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let attempt = {
            let mut slot = strong.write();
            match &slot.state {
                State::Connected(ready) if !ready.send.is_closed() => {
                    slot.redialing = false;
                    return;
                }
                State::Connecting { attempt, .. } => attempt.clone(),
                State::Idle | State::Connected(_) => strong.start_connect(&mut slot),
            }
        };
        drop(strong);
        if attempt.await.is_ok() {
            if let Some(strong) = inner.upgrade() {
                strong.write().redialing = false;
            }
            return;
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
    // A refused TLS handshake says why: the caller's configuration (a CA,
    // a name) is what to fix, and the message is the caller's own side's.
    let message = match failed.handshake() {
        Some(handshake) => format!("could not connect to the endpoint: {handshake}"),
        None => "could not connect to the endpoint".to_owned(),
    };
    Box::new(status_with_cause(Code::Unavailable, &message, failed))
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
