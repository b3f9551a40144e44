//! TLS for sinew's servers, clients and exporters, on rustls with the
//! `ring` provider: one stack, configured once, reloaded without a
//! restart.
//!
//! - [`ServerTls`]: a certificate chain and key from PEM files, ALPN `h2`,
//!   TLS 1.2 and 1.3, and client certificates `off`, `optional` or
//!   `required` against a CA bundle ([`ClientAuth`]).
//! - [`ClientTls`]: the system's roots or a CA bundle, a client
//!   certificate for mTLS, and a server-name override.
//! - [`PeerIdentity`]: what a verified peer certificate says of its holder
//!   (subject, DNS and URI names, SPIFFE id).
//! - [`HandshakeFailed`]: why a handshake failed, in words a caller can act
//!   on (an unknown CA, an expired certificate, a name mismatch, a peer
//!   that does not speak TLS).
//!
//! # Reloading
//!
//! Both [`ServerTls`] and [`ClientTls`] hold the files they were loaded
//! from, and [`Reload::reload`] reads them again: when their bytes changed,
//! a new rustls configuration is built and used for every handshake from
//! then on, while connections already open keep theirs. A reload that
//! fails (a certificate written before its key, mid-rotation) keeps the
//! configuration in use and is retried at the next check.
//! [`ServerTls::watch`] and [`ClientTls::watch`] do that on an interval and
//! on `SIGHUP`; the server scaffold and the client start it for the TLS
//! they are given.
//!
//! ```
//! use sinew_core::tls::{ClientAuth, ServerTlsConfig};
//!
//! let config = ServerTlsConfig::new("/etc/svc/tls.crt", "/etc/svc/tls.key")
//!     .client_auth(ClientAuth::Required, Some("/etc/svc/ca.crt".into()));
//! // A missing file fails the load, naming its setting.
//! let error = sinew_core::tls::ServerTls::load(config).unwrap_err();
//! assert_eq!(error.key(), Some("tls_cert"));
//! ```

mod client;
mod error;
mod files;
mod identity;
mod reload;
mod server;

use std::sync::Arc;

pub use client::{ClientTls, ClientTlsConfig};
pub use error::{HandshakeFailed, HandshakeFailure, TlsError};
pub use identity::PeerIdentity;
pub use reload::Reload;
pub use server::{ClientAuth, ServerTls, ServerTlsConfig};

/// rustls itself, for what the configurations hand out.
pub use rustls;

/// The ALPN protocol gRPC speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Whether `uri`'s host is this machine (`localhost`, `127.0.0.0/8`,
/// `::1`): where plain text cannot be read on the way, so credentials and
/// keys may travel without TLS.
pub fn is_loopback(uri: &http::Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The crypto provider of every configuration: `ring`, as async-nats
/// already brings it (one crypto library in the tree).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls deprecates ring's provider for lacking post-quantum key
    // exchange; aws-lc-rs would be a second crypto library (and a C build)
    // for it. Revisit when ring gains ML-KEM.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}
