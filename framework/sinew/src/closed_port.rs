//! A loopback port nothing listens on, for tests of refused connections.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// A loopback port held bound but not listening: connections to it are
/// refused at once, and while it lives no other test running in parallel
/// can take the port (as it could one found free and let go).
pub(crate) struct ClosedPort(TcpSocket);

impl ClosedPort {
    pub(crate) fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("a loopback port");
        Self(socket)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("a bound socket's address")
    }

    /// Starts listening on the port, as a server that has come up.
    pub(crate) fn listen(self) -> TcpListener {
        self.0.listen(1024).expect("listening on the held port")
    }
}
