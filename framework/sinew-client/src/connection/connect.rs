//! Dialing an endpoint: TCP, then the HTTP/2 handshake.

use std::{io, time::Duration};

use http::Uri;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tonic::body::Body;

use crate::connection::executor::BoxingExecutor;

/// The longest keepalive ping answer deadline: a longer interval still
/// gives up on a ping after this.
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How a [`Connection`](super::Connection) connects and keeps its
/// connection alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectSettings {
    /// How long a TCP connect and HTTP/2 handshake may take (default 1s).
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings while calls are in flight
    /// (default 60s; zero turns them off). A ping unanswered for the
    /// interval, or 20s if that is shorter, closes the connection.
    pub keepalive: Duration,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
        }
    }
}

/// Makes connections to one address with one set of HTTP/2 settings.
pub(super) struct Dialer {
    /// Without the brackets of an IPv6 literal, as a socket address wants.
    host: Box<str>,
    port: u16,
    timeout: Duration,
    builder: http2::Builder<BoxingExecutor>,
}

// === impl Dialer ===

impl Dialer {
    /// A dialer of `connect`'s host and port (the scheme's port if it has
    /// none).
    pub(super) fn new(connect: &Uri, settings: ConnectSettings) -> Self {
        let host = connect.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = connect.port_u16().unwrap_or_else(|| {
            if connect.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            }
        });
        Self {
            host: host.into(),
            port,
            timeout: settings.connect_timeout,
            builder: builder(settings.keepalive),
        }
    }

    /// A new connection, its task spawned: the handle to send on.
    ///
    /// The error is the I/O error of the connect (`TimedOut` past the
    /// timeout), or the handshake's error wrapped in one.
    pub(super) async fn dial(&self) -> io::Result<SendRequest<Body>> {
        let connect = async {
            let stream = TcpStream::connect((&*self.host, self.port)).await?;
            stream.set_nodelay(true)?;
            let (send, connection) = self
                .builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(io::Error::other)?;
            tokio::spawn(async move {
                // The connection ends when the server closes it, a
                // keepalive ping goes unanswered, or every handle to send
                // on is dropped and its streams are done.
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "client connection closed with an error");
                }
            });
            Ok(send)
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
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
