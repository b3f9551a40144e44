//! The server's connections: accepted, served, told to go away, awaited.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::time::Instant;

use sinew_core::Rng;

use hyper::server::conn::http2::Connection;
use hyper_util::rt::TokioIo;
use sinew_core::tls::{PeerIdentity, ServerTls};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::{oneshot, watch},
    task::JoinSet,
};
use tonic::transport::server::TcpConnectInfo;
use tower::Service;

use super::{Acceptor, ConnectionService, RequestBody, RequestChecks, Spoken, Watched};
use crate::BoxError;
use crate::Settings;
use crate::message_limit::{Budgets, RequestBudget};
use crate::serve::executor::{Activity, TrackingExecutor};

/// How long [`Connections::abandon`] waits for the calls of the closed
/// connections to be dropped: a call's future is dropped the next time its
/// task runs, which is at once unless the handler is stuck in code that
/// does not yield.
const ABANDON_WAIT: Duration = Duration::from_secs(1);

/// The connections of a server, each driven by a task of its own, and
/// the tasks of their calls.
///
/// [`Connections::abandon`] closes the connections still open, which
/// drops their calls: that is how the calls still running after the grace
/// period are abandoned, with nothing of the server left running once it
/// has returned. Dropping it closes them too, without waiting.
pub(crate) struct Connections<S> {
    /// The HTTP/2 settings, for each connection's builder.
    settings: Settings,
    stack: S,
    /// How long a connection may live, and idle.
    lifetime: Lifetime,
    /// How many connections may be open at once; past it, accepting
    /// waits for one to close.
    max_connections: usize,
    /// Whether the server is at `max_connections` (warned about once each
    /// time it gets there).
    at_capacity: bool,
    /// Draws each connection's age.
    rng: Rng,
    /// Request data all connections may hold while it forms whole
    /// messages.
    request_budget: Arc<RequestBudget>,
    /// What every request is checked for before the layers.
    checks: Arc<RequestChecks>,
    tasks: JoinSet<()>,
    /// The calls of every connection still open or with calls still
    /// running (hyper spawns a task per stream, counted per connection).
    activities: Vec<Arc<Activity>>,
    /// Turns `true` when every connection is to go away.
    draining: watch::Sender<bool>,
    /// The TLS every connection must speak, if any.
    tls: Option<ServerTls>,
}

// === impl Connections ===

impl<S, B> Connections<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Default + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// No connections yet; each one to come gets the HTTP/2 settings of
    /// `settings` and a clone of `stack`, and is closed unless it sends
    /// the HTTP/2 preface within the `handshake_timeout` setting. At most
    /// `max_connections` are open at once.
    pub(crate) fn new(
        settings: &Settings,
        stack: S,
        checks: RequestChecks,
        tls: Option<ServerTls>,
    ) -> Self {
        let nonzero = |duration: Duration| (!duration.is_zero()).then_some(duration);
        Self {
            settings: settings.clone(),
            stack,
            lifetime: Lifetime {
                handshake_timeout: settings.handshake_timeout,
                max_idle: nonzero(settings.max_connection_idle),
                max_age: nonzero(settings.max_connection_age),
                age_grace: settings.max_connection_age_grace,
            },
            max_connections: settings.max_connections,
            at_capacity: false,
            rng: Rng::from_entropy(),
            request_budget: RequestBudget::new(settings.max_request_buffer),
            checks: Arc::new(checks),
            tasks: JoinSet::new(),
            activities: Vec::new(),
            draining: watch::Sender::new(false),
            tls,
        }
    }

    /// Accepts and serves connections until `stop` resolves. Accepting
    /// never fails (see [`Acceptor::accept`]); connections that end are
    /// reaped on the way. With `max_connections` open, nothing is accepted
    /// until one closes: further connects wait in the listen backlog, and
    /// past it the kernel refuses them.
    pub(crate) async fn accept_until(
        &mut self,
        acceptor: &Acceptor,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                // Once stopped, accept nothing more, however busy the
                // listener.
                biased;
                () = &mut stop => return,
                Some(ended) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(error) = ended
                        && error.is_panic()
                    {
                        tracing::error!(%error, "a connection's task panicked");
                    }
                    self.at_capacity = self.tasks.len() >= self.max_connections;
                    // Forget the connections that ended with no call left.
                    self.activities
                        .retain(|activity| !activity.calls().is_closed() || !activity.calls().is_empty());
                }
                (stream, info) = acceptor.accept(), if self.tasks.len() < self.max_connections => {
                    self.serve(stream, info);
                    if self.tasks.len() >= self.max_connections && !self.at_capacity {
                        self.at_capacity = true;
                        tracing::warn!(
                            max_connections = self.max_connections,
                            "max_connections reached: new connections wait in the listen backlog \
                             until one closes"
                        );
                    }
                }
            }
        }
    }

    /// Serves one accepted connection on a task of its own: its TLS
    /// handshake first, when the server speaks TLS.
    fn serve(&mut self, stream: TcpStream, info: TcpConnectInfo) {
        let activity = Arc::new(Activity::default());
        self.activities.push(Arc::clone(&activity));
        // Within 10% of the age, either way.
        let max_age = self
            .lifetime
            .max_age
            .map(|age| age.mul_f64(0.9 + self.rng.next_f64() / 5.0));
        let accepted = Accepted {
            stack: self.stack.clone(),
            info,
            budgets: Budgets::new(
                Arc::clone(&self.request_budget),
                self.settings.max_request_buffer_per_connection,
                self.settings.max_receive_message_size,
            ),
            checks: Arc::clone(&self.checks),
            builder: super::http2::builder(
                &self.settings,
                TrackingExecutor::new(Arc::clone(&activity)),
            ),
            draining: self.draining.subscribe(),
            activity: Arc::clone(&activity),
            lifetime: Lifetime {
                max_age,
                ..self.lifetime
            },
        };
        let tls = self.tls.as_ref().map(ServerTls::current);
        self.tasks.spawn(async move {
            match tls {
                None => accepted.serve(stream, None).await,
                Some(config) => accepted.serve_tls(stream, config).await,
            }
            // No call starts after the connection has ended: once its
            // calls have too, it is forgotten.
            activity.calls().close();
        });
    }

    /// Tells every connection to go away: each sends `GOAWAY`, refuses new
    /// streams, and closes once its calls in flight are done.
    pub(crate) fn go_away(&self) {
        self.draining.send_replace(true);
    }

    /// Resolves once every connection has closed.
    pub(crate) async fn closed(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Closes the connections still open and waits until the calls of all
    /// connections have ended: a closed connection's calls are dropped
    /// (their handlers' futures with them) the next time their tasks run.
    /// The wait is bounded by [`ABANDON_WAIT`], for a handler stuck in
    /// code that does not yield; how many calls were left is returned.
    pub(crate) async fn abandon(&mut self) -> usize {
        self.tasks.abort_all();
        self.closed().await;
        for activity in &self.activities {
            activity.calls().close();
        }
        let waits = self
            .activities
            .iter()
            .map(|activity| activity.calls().wait());
        let _ = tokio::time::timeout(ABANDON_WAIT, futures_util::future::join_all(waits)).await;
        self.activities
            .iter()
            .map(|activity| activity.open_calls())
            .sum()
    }
}

/// What serving one accepted connection takes, prepared on the accept
/// loop and moved into the connection's task.
struct Accepted<S> {
    stack: S,
    info: TcpConnectInfo,
    budgets: Arc<Budgets>,
    checks: Arc<RequestChecks>,
    builder: hyper::server::conn::http2::Builder<TrackingExecutor>,
    draining: watch::Receiver<bool>,
    activity: Arc<Activity>,
    lifetime: Lifetime,
}

impl<S, B> Accepted<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Default + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Serves HTTP/2 on `io`, whose peer presented `peer` (mTLS).
    async fn serve<I>(self, io: I, peer: Option<Arc<PeerIdentity>>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service =
            ConnectionService::new(self.stack, self.info, self.budgets, self.checks, peer);
        let (io, spoken) = Watched::new(io);
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        drive(
            connection,
            self.draining,
            spoken,
            self.activity,
            self.lifetime,
        )
        .await;
    }

    /// The TLS handshake on `stream`, within the handshake timeout, then
    /// HTTP/2 with what is left of it. A refused or late handshake closes
    /// the connection (logged at debug: the peer's problem).
    async fn serve_tls(
        mut self,
        stream: TcpStream,
        config: Arc<sinew_core::tls::rustls::ServerConfig>,
    ) {
        let begun = Instant::now();
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let stream = match tokio::time::timeout(self.lifetime.handshake_timeout, accept).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let failure = sinew_core::tls::HandshakeFailed::from_io(&error);
                tracing::debug!(peer = ?self.info.remote_addr, %failure, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    peer = ?self.info.remote_addr,
                    handshake_timeout = ?self.lifetime.handshake_timeout,
                    "no TLS handshake in time: closing the connection"
                );
                return;
            }
        };
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(PeerIdentity::from_certificate)
            .map(Arc::new);
        self.lifetime.handshake_timeout = self
            .lifetime
            .handshake_timeout
            .saturating_sub(begun.elapsed());
        self.serve(stream, peer).await;
    }
}

/// How long a connection may take to handshake, stay idle and live.
#[derive(Debug, Clone, Copy)]
struct Lifetime {
    handshake_timeout: Duration,
    max_idle: Option<Duration>,
    max_age: Option<Duration>,
    age_grace: Duration,
}

/// Why a connection is sent away before the server drains.
#[derive(Debug, Clone, Copy)]
enum Away {
    /// It did not finish the handshake in time: closed at once.
    Silent,
    Idle,
    Old,
}

/// Watches a connection's `lifetime` and says, on `away`, when it is to
/// go: at the handshake timeout if its peer has not `spoken`, when it has
/// had no call open (by its `activity`) for `max_idle`, or at `max_age`.
/// Ends when the connection does (its receiver dropped).
async fn watch_lifetime(
    lifetime: Lifetime,
    spoken: Spoken,
    activity: Arc<Activity>,
    mut away: oneshot::Sender<Away>,
) {
    let begun = Instant::now();
    let mut handshake_at = Some(begun + lifetime.handshake_timeout);
    // The idle check looks every `max_idle`: idle when no call is open and
    // none started since the last look (so a connection goes between one
    // and two `max_idle` after its last call).
    let old_at = lifetime.max_age.map(|age| begun + age);
    let mut idle_at = lifetime.max_idle.map(|idle| begun + idle);
    let mut started = activity.started();
    loop {
        let Some(next) = [handshake_at, idle_at, old_at].into_iter().flatten().min() else {
            // Nothing to time: wait for the connection to end.
            away.closed().await;
            return;
        };
        tokio::select! {
            () = away.closed() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let now = Instant::now();
        if handshake_at.is_some_and(|at| at <= now) {
            if !spoken.get() {
                let _ = away.send(Away::Silent);
                return;
            }
            handshake_at = None;
        }
        if old_at.is_some_and(|at| at <= now) {
            let _ = away.send(Away::Old);
            return;
        }
        if let (Some(at), Some(idle)) = (idle_at, lifetime.max_idle)
            && at <= now
        {
            let now_started = activity.started();
            if activity.open_calls() == 0 && now_started == started {
                let _ = away.send(Away::Idle);
                return;
            }
            started = now_started;
            idle_at = Some(now + idle);
        }
    }
}

/// Serves `connection` until it ends, shutting it down gracefully once
/// `draining` turns `true` (or the server is gone), and closing it at once
/// if its peer has not `spoken` its side of the HTTP/2 handshake (the
/// preface and its SETTINGS) within the handshake timeout. A connection
/// with no call open (by its `activity`) for `max_idle`, or older than
/// `max_age`, is sent `GOAWAY` too; an old one is closed `age_grace`
/// later if its calls have not finished by then.
async fn drive<I, S, B>(
    connection: Connection<TokioIo<Watched<I>>, ConnectionService<S>, TrackingExecutor>,
    mut draining: watch::Receiver<bool>,
    spoken: Spoken,
    activity: Arc<Activity>,
    lifetime: Lifetime,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Default + Send + 'static,
    B::Error: Into<BoxError>,
{
    tokio::pin!(connection);
    // The connection's lifetime is watched on a task of its own: each wake
    // of this one (a frame in or out) then polls a receiver, not a timer.
    let (sender, mut away) = oneshot::channel();
    tokio::spawn(watch_lifetime(
        lifetime,
        spoken,
        Arc::clone(&activity),
        sender,
    ));
    let mut watched = true;
    let ended = loop {
        let away = tokio::select! {
            biased;
            ended = connection.as_mut() => break ended,
            // The guard `wait_for` returns is not held on to: it is not `Send`.
            _ = async { draining.wait_for(|draining| *draining).await.map(drop) } => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            told = &mut away, if watched => match told {
                Ok(Away::Silent) => {
                    tracing::debug!(
                        handshake_timeout = ?lifetime.handshake_timeout,
                        "no HTTP/2 handshake in time: closing the connection"
                    );
                    return;
                }
                Ok(away) => away,
                // The watcher has nothing more to say.
                Err(_) => {
                    watched = false;
                    continue;
                }
            },
        };
        tracing::debug!(reason = ?away, "sending the connection away (GOAWAY)");
        connection.as_mut().graceful_shutdown();
        break match away {
            Away::Idle | Away::Silent => connection.await,
            Away::Old => {
                match tokio::time::timeout(lifetime.age_grace, connection.as_mut()).await {
                    Ok(ended) => ended,
                    Err(_) => {
                        tracing::debug!(
                            open_calls = activity.open_calls(),
                            "the connection's calls outlived max_connection_age_grace: closing it"
                        );
                        return;
                    }
                }
            }
        };
    };
    // A peer that goes away without a goodbye, or speaks something other
    // than HTTP/2, is the peer's problem: not worth more than debug.
    if let Err(error) = ended {
        tracing::debug!(%error, "connection closed with an error");
    }
}
