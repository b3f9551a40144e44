//! The client's HTTP/2 connection to one endpoint.
//!
//! A [`Connection`] is what the balancer sends an endpoint's calls to: one
//! HTTP/2 connection, made on [`hyper::client::conn::http2`], shared by
//! every clone. It does only what a call needs below sinew's layers:
//!
//! - **Lazy connect.** The first call dials [`Target::connect`] with
//!   `TCP_NODELAY`, runs the HTTP/2 handshake and spawns the connection's
//!   task. The connect timeout bounds all of it, up to the server's
//!   SETTINGS: a peer that accepts the TCP connection and then says
//!   nothing (a hung process, a black hole, a server whose full accept
//!   backlog the kernel completed the TCP handshake for) is a failed
//!   connect, not a connection that calls wait on until their deadline. Calls that arrive during
//!   the attempt wait for that attempt: one endpoint never has two
//!   connections. An attempt that fails fails its waiting calls with
//!   `UNAVAILABLE` and a [`ConnectFailed`] cause (the balancer then backs
//!   the endpoint off; the retry layer knows the call never left); the
//!   next call dials again.
//! - **Reconnect in the background.** After a failed connect, a task of
//!   the connection's own dials again, waiting the reconnect backoff
//!   (100ms doubling to 10s, jittered) between attempts, until a connect
//!   succeeds or the connection is dropped. The first connection made
//!   after failures calls the [`on_reconnect`](Connection::on_reconnect)
//!   hook: the client's half-opens the endpoint's breaker, so that a
//!   restarted server gets calls as soon as it accepts connections rather
//!   than when the breaker's recovery timeout runs out.
//! - **Reconnect.** Once the connection is closed (the server went away,
//!   a keepalive ping went unanswered, the server sent `GOAWAY`), the next
//!   call dials a new one. A request hyper hands back unsent, because the
//!   connection closed under it, is sent once more on a fresh connection;
//!   if that fails the same way, the call fails with `UNAVAILABLE` and a
//!   [`NotSent`] cause, which the retry layer retries transparently. A
//!   call that has waited for three connects, each closed before the call
//!   could go on it, fails as on a failed connect (`ConnectionAborted`)
//!   rather than dial until its deadline.
//! - **A watchdog for silence.** While calls wait for their response
//!   headers on a connection that has read nothing for a third of the time
//!   to the most urgent one's deadline (50ms to 10s), the endpoint is
//!   probed with a new connect. If the probe fails, the connection is
//!   failed at once: its calls end `UNAVAILABLE` with time left to be
//!   retried elsewhere, instead of waiting out their deadlines on a peer
//!   that stopped answering. See `watchdog.rs` for why a connect and not
//!   a PING.
//! - **Per call.** The generated client gives a path-only URI: the
//!   endpoint's origin ([`Target::origin`]: scheme and authority, parsed
//!   once) is set on it, and `user-agent: sinew/<version>` if the caller
//!   set none. Nothing else: no `grpc-timeout` parsing and no timer, since
//!   sinew's deadline layer above enforces the deadline, and no buffer
//!   task, since the connection is driven by its own task.
//! - **Cancel.** A call whose response body is dropped before its end
//!   while its request stream may still be open (a streaming call the
//!   caller gave up on) has its HTTP/2 stream reset with `CANCEL`, which
//!   hyper does only for a response dropped before its headers. A request
//!   of known size (a single message) costs nothing for it.
//!
//! # HTTP/2 settings
//!
//! | setting | value | why |
//! |---|---|---|
//! | keepalive interval | `ClientConfig::keepalive` (60s; zero turns pings off) | find a dead peer the kernel would not report for minutes |
//! | keepalive timeout | the interval, at most 20s | the ping answer deadline; an unanswered ping closes the connection |
//! | keepalive while idle | off | an idle client pinging every server is what `ENHANCE_YOUR_CALM` is for |
//! | max header list size | 16 KiB | the response headers and trailers accepted; as large as the server side accepts from clients |
//! | initial stream window | 2 MiB | hyper's default: a large message is not stalled at 64 KiB per round trip |
//! | initial connection window | 5 MiB | hyper's default, for several such streams at once |
//! | max frame size | 16 KiB | the HTTP/2 default, which every peer accepts |
//! | max send buffer size | 1 MiB | hyper's default: what one stream may queue before the peer's window opens |
//!
//! These are what tonic's `Channel` used (its defaults are hyper's), made
//! explicit so that a change of hyper's defaults does not change them.
//!
//! [`Target::connect`]: crate::balance::Target::connect
//! [`Target::origin`]: crate::balance::Target::origin

mod body;
mod cancel;
mod connect;
mod error;
mod executor;
mod service;
mod watch;
mod watchdog;

/// The status of a call whose connection failed under it: what an HTTP/2
/// error in its chain says where there is one (a stream refused or
/// cancelled), else `UNAVAILABLE` ("connection error"): a transport
/// failure, which the gRPC spec maps to `UNAVAILABLE`, where tonic would
/// say `UNKNOWN`. The error stays the status's source, for the layers that
/// look for a `GOAWAY` or a refused stream in it.
pub(crate) fn transport_status(error: hyper::Error) -> tonic::Status {
    let known = tonic::Status::try_from_error(Box::new(error));
    known.unwrap_or_else(|error| {
        let mut status = tonic::Status::unavailable("connection error");
        status.set_source(std::sync::Arc::from(error));
        status
    })
}

#[cfg(test)]
mod tests;

pub use body::ResponseBody;
pub use connect::ConnectSettings;
pub use error::{ConnectFailed, NotSent};
pub(crate) use service::Dialed;
pub use service::{Connection, ResponseFuture};
