//! Why a request could not be sent on a connection.
//!
//! Both are causes of an `UNAVAILABLE` status (find them with
//! [`cause`](crate::cause)), and both prove that the request never
//! reached the server.

use std::{error::Error, fmt, io, sync::Arc};

use sinew_core::tls::HandshakeFailed;

/// The connection to the endpoint could not be made: the TCP connect was
/// refused, failed or timed out, or the HTTP/2 handshake failed.
///
/// Its source is the [`io::Error`]; its kind tells a refusal
/// (`ConnectionRefused`) from a timeout (`TimedOut`). Every call that
/// waited for the same attempt gets a clone that shares it.
#[derive(Debug, Clone)]
pub struct ConnectFailed {
    source: Arc<io::Error>,
}

// === impl ConnectFailed ===

impl ConnectFailed {
    pub(crate) fn new(source: io::Error) -> Self {
        Self {
            source: Arc::new(source),
        }
    }

    /// The TLS handshake's failure, when that is why the connect failed:
    /// [`HandshakeFailed::failure`] says why (an unknown CA, an expired
    /// certificate, a name mismatch, a plain-text peer).
    pub fn handshake(&self) -> Option<&HandshakeFailed> {
        self.source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<HandshakeFailed>())
    }

    /// The kind of the I/O error the attempt failed with.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("could not connect to the endpoint")
    }
}

// Written out rather than derived: the source must be the `io::Error`
// itself, not the `Arc` that shares it (an `Arc`'s own `Error` impl would
// hide the `io::Error` from a `downcast_ref` walk of the chain).
impl Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The connection closed before the request was written, on a fresh
/// connection too: the request never left the client.
#[derive(Debug, thiserror::Error)]
#[error("the connection closed before the request was sent")]
pub struct NotSent {
    #[source]
    source: hyper::Error,
}

// === impl NotSent ===

impl NotSent {
    pub(crate) fn new(source: hyper::Error) -> Self {
        Self { source }
    }
}
