//! Accepting TCP connections: their socket options, and the errors that
//! must not stop the server.

use std::{io, time::Duration};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpConnectInfo;

/// How long the listener rests after an error that is not one
/// connection's, such as running out of file descriptors: long enough not
/// to spin on a full descriptor table, short enough that a freed one is
/// used soon.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// The listen socket, and the options every accepted connection gets.
///
/// Dropping it closes the listen socket: the kernel refuses new
/// connections from then on, instead of completing them into a backlog no
/// one reads.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: TcpListener,
    keepalive: Option<TcpKeepalive>,
}

// === impl Acceptor ===

impl Acceptor {
    /// Accepts on `listener`; a zero `tcp_keepalive` leaves TCP keepalive
    /// off.
    pub(crate) fn new(listener: TcpListener, tcp_keepalive: Duration) -> Self {
        Self {
            listener,
            keepalive: (!tcp_keepalive.is_zero())
                .then(|| TcpKeepalive::new().with_time(tcp_keepalive)),
        }
    }

    /// The next connection, with `TCP_NODELAY` on (a gRPC message is
    /// written whole, and should not wait for an acknowledgement of the
    /// last) and TCP keepalive as configured, and its addresses.
    ///
    /// Never fails: an error that concerns one connection (it was reset
    /// before it was accepted) is logged and the next one is accepted; any
    /// other (no file descriptors left) is logged and accepting pauses for
    /// a moment. A server must outlive a burst of either. Cancel-safe: a
    /// drain may drop the future at any point.
    pub(crate) async fn accept(&self) -> (TcpStream, TcpConnectInfo) {
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    self.configure(&stream);
                    let info = TcpConnectInfo {
                        local_addr: stream.local_addr().ok(),
                        remote_addr: Some(remote),
                    };
                    return (stream, info);
                }
                Err(error) => match backoff(&error) {
                    None => tracing::debug!(%error, "a connection failed before it was accepted"),
                    Some(pause) => {
                        tracing::warn!(%error, ?pause, "cannot accept connections; pausing");
                        tokio::time::sleep(pause).await;
                    }
                },
            }
        }
    }

    /// Sets the options of an accepted connection. A failure leaves the
    /// connection usable, so it is logged rather than refused.
    fn configure(&self, stream: &TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        if let Some(keepalive) = &self.keepalive
            && let Err(error) = SockRef::from(stream).set_tcp_keepalive(keepalive)
        {
            tracing::warn!(%error, "cannot set TCP keepalive");
        }
    }
}

/// How long to pause after `error` before accepting again: not at all when
/// it concerns only the connection that failed, [`RESOURCE_BACKOFF`] for
/// anything else (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, and what is not
/// known), which accepting again at once would only meet again.
fn backoff(error: &io::Error) -> Option<Duration> {
    use io::ErrorKind::{
        ConnectionAborted, ConnectionRefused, ConnectionReset, HostUnreachable, Interrupted,
        NetworkDown, NetworkUnreachable, PermissionDenied, TimedOut, WouldBlock,
    };
    match error.kind() {
        // accept(2) reports these for the one connection: it was aborted or
        // reset in the backlog, a firewall refused it (EPERM), or its
        // network failed.
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
        | TimedOut | PermissionDenied | HostUnreachable | NetworkUnreachable | NetworkDown => None,
        _ => Some(RESOURCE_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_one_connection_do_not_pause_accepting() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Interrupted,
            io::ErrorKind::PermissionDenied,
        ] {
            assert_eq!(backoff(&io::Error::from(kind)), None, "{kind:?}");
        }
    }

    #[test]
    fn running_out_of_resources_pauses_accepting() {
        // EMFILE and ENFILE have no kind of their own.
        let emfile = io::Error::other("Too many open files");
        assert_eq!(backoff(&emfile), Some(RESOURCE_BACKOFF));
        let enomem = io::Error::from(io::ErrorKind::OutOfMemory);
        assert_eq!(backoff(&enomem), Some(RESOURCE_BACKOFF));
    }

    #[tokio::test]
    async fn accepted_connections_carry_their_addresses_and_options() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::new(listener, Duration::from_secs(30));
        let client = TcpStream::connect(addr).await.unwrap();
        let (stream, info) = acceptor.accept().await;
        assert_eq!(info.local_addr, Some(addr));
        assert_eq!(info.remote_addr, Some(client.local_addr().unwrap()));
        assert!(stream.nodelay().unwrap());
        let sock = SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_zero_keepalive_leaves_tcp_keepalive_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::new(listener, Duration::ZERO);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = acceptor.accept().await;
        assert!(!SockRef::from(&stream).keepalive().unwrap());
    }
}
