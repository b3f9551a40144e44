//! Helpers for sinew's own tests: [`ClosedPort`], a loopback port nothing
//! listens on, for refused connections; [`ChaosProxy`], a fault-injecting
//! TCP proxy; [`pki`], certificates made at test time.

pub mod pki;
mod proxy;

pub use proxy::{ChaosProxy, Fault};

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// A loopback port held bound but not listening: connections to it are
/// refused at once, and while it lives no other test running in parallel
/// can take the port (as it could one found free and let go).
pub struct ClosedPort(TcpSocket);

impl ClosedPort {
    /// Binds a free loopback port, without listening.
    #[allow(clippy::new_without_default)] // binding a socket is not a default
    pub fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("a loopback port");
        Self(socket)
    }

    /// The held port's address.
    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("a bound socket's address")
    }

    /// Starts listening on the port, as a server that has come up.
    pub fn listen(self) -> TcpListener {
        self.0.listen(1024).expect("listening on the held port")
    }
}
