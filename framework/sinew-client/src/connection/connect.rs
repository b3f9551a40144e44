//! Dialing an endpoint: TCP, then the HTTP/2 handshake.

use std::{io, time::Duration};

use http::Uri;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tonic::body::Body;

use std::sync::{Arc, OnceLock};

use sinew_core::tls::{ClientTls, ClientTlsConfig, HandshakeFailed, HandshakeFailure, TlsError};

use tokio::task::AbortHandle;

use super::{watch::SettingsWatch, watchdog::Activity};
use crate::balance::ReconnectBackoff;
use crate::connection::executor::BoxingExecutor;

/// The longest keepalive ping answer deadline: a longer interval still
/// gives up on a ping after this.
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How a [`Connection`](super::Connection) connects and keeps its
/// connection alive.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectSettings {
    /// How long a TCP connect and the HTTP/2 handshake, up to the
    /// server's SETTINGS, may take (default 1s).
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings while calls are in flight
    /// (default 60s; zero turns them off). A ping unanswered for the
    /// interval, or 20s if that is shorter, closes the connection.
    pub keepalive: Duration,
    /// How long to wait between connects made in the background after a
    /// connect failed, until one succeeds (default 100ms doubling to 10s,
    /// jittered).
    pub reconnect: ReconnectBackoff,
    /// The TLS of `https://` endpoints (default: the system's roots, no
    /// client certificate). Unused for `http://` ones.
    pub tls: Option<ClientTls>,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
            reconnect: ReconnectBackoff::default(),
            tls: None,
        }
    }
}

/// The TLS of `https://` endpoints given none: the system's roots, loaded
/// once per process.
fn system_tls() -> Result<ClientTls, Arc<TlsError>> {
    static SYSTEM: OnceLock<Result<ClientTls, Arc<TlsError>>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| ClientTls::load(ClientTlsConfig::new()).map_err(Arc::new))
        .clone()
}

/// Makes connections to one address with one set of HTTP/2 settings.
pub(super) struct Dialer {
    /// Without the brackets of an IPv6 literal, as a socket address wants.
    host: Box<str>,
    /// The host the endpoint was named by (the DNS name a discovered
    /// address was found under): what its certificate must be for.
    name: Box<str>,
    port: u16,
    timeout: Duration,
    builder: http2::Builder<BoxingExecutor>,
    /// For an `https://` endpoint: its TLS, or why there is none.
    tls: Option<Result<ClientTls, Arc<TlsError>>>,
}

// === impl Dialer ===

impl Dialer {
    /// A dialer of `connect`'s host and port (the scheme's port if it has
    /// none), for the endpoint named `origin`.
    pub(super) fn new(connect: &Uri, origin: &Uri, settings: ConnectSettings) -> Self {
        let unbracket = |host: &'_ str| -> Box<str> {
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
                .into()
        };
        let host = unbracket(connect.host().unwrap_or_default());
        let name = origin.host().map_or_else(|| host.clone(), unbracket);
        let https = connect.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = connect.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| settings.tls.map_or_else(system_tls, Ok));
        Self {
            host,
            name,
            port,
            timeout: settings.connect_timeout,
            builder: builder(settings.keepalive),
            tls,
        }
    }

    /// A new connection, its task spawned: the handle to send on.
    ///
    /// The connect timeout bounds the whole handshake: the TCP connect,
    /// the client's preface, and the server's SETTINGS (hyper's handshake
    /// alone resolves before the server has said anything). The error is
    /// the I/O error of the connect (`TimedOut` past the timeout), or the
    /// handshake's error wrapped in one.
    pub(super) async fn dial(&self) -> io::Result<Link> {
        self.dial_within(self.timeout).await
    }

    /// The connect timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// [`dial`](Self::dial), bounded by `timeout` instead of the connect
    /// timeout.
    pub(super) async fn dial_within(&self, timeout: Duration) -> io::Result<Link> {
        let activity = Arc::new(Activity::new());
        let mut task = None;
        let mut killer = None;
        let connect = async {
            let stream = TcpStream::connect((&*self.host, self.port)).await?;
            stream.set_nodelay(true)?;
            // A duplicate of the socket, for the watchdog to shut it down
            // with (hyper owns the stream).
            let stream = stream.into_std()?;
            killer = Some(stream.try_clone()?);
            let stream = TcpStream::from_std(stream)?;
            let settled = match &self.tls {
                None => self.handshake(stream, &activity, &mut task).await?,
                Some(tls) => {
                    let stream = self.tls_handshake(tls, stream).await?;
                    self.handshake(stream, &activity, &mut task).await?
                }
            };
            let (send, settled) = settled;
            if settled.await.is_err() {
                // Under TLS 1.3 a server refuses a client certificate
                // after the client's side of the handshake is done: its
                // alert ends the connection's task, which says why.
                let refused = match task.as_mut().and_then(|task| task.0.as_mut()) {
                    Some(handle) if self.tls.is_some() => handle.await.ok().flatten(),
                    _ => None,
                };
                return Err(refused.map_or_else(
                    || {
                        io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the connection closed before the server's SETTINGS",
                        )
                    },
                    HandshakeFailed::into_io,
                ));
            }
            Ok(send)
        };
        let result = match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        let send = result?;
        // Connected: the task runs for as long as the connection.
        let task = task
            .and_then(AbortOnDrop::detach)
            .ok_or_else(|| io::Error::other("the connection's task is gone"))?;
        let killer = killer.ok_or_else(|| io::Error::other("no socket"))?;
        Ok(Link {
            send,
            activity,
            task,
            killer,
        })
    }
}

impl Dialer {
    /// The TLS handshake on `stream`: the server's certificate verified
    /// against the name the endpoint is reached by (or the override), and
    /// ALPN `h2` agreed. A failure is a [`HandshakeFailed`] that says why,
    /// in an I/O error of kind `ConnectionRefused`.
    async fn tls_handshake(
        &self,
        tls: &Result<ClientTls, Arc<TlsError>>,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tls = tls
            .as_ref()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, Arc::clone(error)))?;
        let name = tls
            .server_name(&self.name)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let stream = tokio_rustls::TlsConnector::from(tls.current())
            .connect(name, stream)
            .await
            .map_err(|error| HandshakeFailed::from_io(&error).into_io())?;
        if stream.get_ref().1.alpn_protocol() != Some(sinew_core::tls::ALPN_H2) {
            return Err(HandshakeFailed::new(HandshakeFailure::NoHttp2).into_io());
        }
        Ok(stream)
    }

    /// The HTTP/2 handshake on `stream`; the connection's task is spawned
    /// into `task`. The handle to send on, and what resolves once the
    /// server's SETTINGS arrived.
    async fn handshake<I>(
        &self,
        stream: I,
        activity: &Arc<Activity>,
        task: &mut Option<AbortOnDrop>,
    ) -> io::Result<(SendRequest<Body>, tokio::sync::oneshot::Receiver<()>)>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (stream, settled) = SettingsWatch::new(stream, Arc::clone(activity));
        let (send, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        // The connection's task reads the server's SETTINGS.
        *task = Some(AbortOnDrop(Some(tokio::spawn(async move {
            // The connection ends when the server closes it, a keepalive
            // ping goes unanswered, every handle to send on is dropped and
            // its streams are done, or its watchdog aborts it.
            match connection.await {
                Ok(()) => None,
                Err(error) => {
                    tracing::debug!(%error, "client connection closed with an error");
                    tls_refusal(&error)
                }
            }
        }))));
        Ok((send, settled))
    }
}

/// A connection made: the handle to send on, what its watchdog reads, and
/// its task.
pub(super) struct Link {
    pub(super) send: SendRequest<Body>,
    pub(super) activity: Arc<Activity>,
    pub(super) task: AbortHandle,
    /// A duplicate of the connection's socket: shutting it down ends the
    /// connection, and fails every call on it.
    pub(super) killer: std::net::TcpStream,
}

/// Whether a TLS alert ended a connection before the server's SETTINGS:
/// how a server refuses a client certificate under TLS 1.3, once the
/// client's side of the handshake is done.
///
/// rustls reports the alert as an I/O error of kind `InvalidData` (its
/// text names the alert, but no type carries it); below HTTP/2 nothing
/// else fails that way (a reset is `ConnectionReset`, a close
/// `UnexpectedEof`, and HTTP/2's own errors are not I/O errors).
fn tls_refusal(error: &hyper::Error) -> Option<HandshakeFailed> {
    let refused = sinew_core::status::chain(error)
        .filter_map(|error| error.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::InvalidData);
    refused.then(|| HandshakeFailed::new(HandshakeFailure::CertificateRefused))
}

/// Aborts a connection's task that is dropped before its handshake is
/// done: a peer that never finishes it is not left holding a socket. The
/// task ends with the TLS alert that ended the connection, if one did.
struct AbortOnDrop(Option<tokio::task::JoinHandle<Option<HandshakeFailed>>>);

impl AbortOnDrop {
    /// Lets the task run on; a handle to abort it later.
    fn detach(mut self) -> Option<AbortHandle> {
        self.0.take().map(|task| task.abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The HTTP/2 settings of every connection; see the [module docs](super).
fn builder(keepalive: Duration) -> http2::Builder<BoxingExecutor> {
    let mut builder = http2::Builder::new(BoxingExecutor);
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .adaptive_window(false)
        .max_frame_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buf_size(1024 * 1024)
        .keep_alive_while_idle(false);
    if !keepalive.is_zero() {
        builder
            .keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive.min(MAX_KEEPALIVE_TIMEOUT));
    }
    builder
}
