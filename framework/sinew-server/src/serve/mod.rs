//! Serving HTTP/2 connections with hyper, below the scaffold's layers.
//!
//! The scaffold does what a call needs between the socket and its layers,
//! and nothing else:
//!
//! - **Accept.** Each connection gets `TCP_NODELAY` and TCP keepalive (the
//!   `tcp_keepalive` setting). At most `max_connections` (10,000) are open
//!   at once; more wait in the listen backlog until one closes. An accept error never stops the server: one
//!   that concerns a single connection is logged and the next is accepted;
//!   running out of resources (`EMFILE`) pauses accepting for 100ms.
//! - **HTTP/2 only**, with prior knowledge, as gRPC speaks it: a client
//!   speaking HTTP/1 gets its connection closed, and so does one that has
//!   not sent its side of the HTTP/2 handshake (the preface and its whole
//!   SETTINGS frame) within the `handshake_timeout` setting (10s), so that
//!   connections that never speak, or stop after the preface, cannot hold
//!   sockets.
//! - **Lifetime.** A connection with no call open for `max_connection_idle`
//!   (5m) gets `GOAWAY` and closes, so that idle connections, which
//!   answer pings for ever, cannot hold the slots `max_connections`
//!   counts; one older than `max_connection_age` (off by default; each
//!   connection's drawn within 10%) gets `GOAWAY` too, and is closed
//!   `max_connection_age_grace` (30s) later if its calls are still
//!   running. Reaching `max_connections` is logged as a warning.
//! - **Request memory.** Each request's body is wrapped as it is handed
//!   on, so that the bytes of its partial message (arrived, not yet a
//!   whole message) are held against the server's budget
//!   (`max_request_buffer`, 256 MiB) and its connection's
//!   (`max_request_buffer_per_connection`, 16 MiB); past either, the
//!   request fails with `RESOURCE_EXHAUSTED`. Without it, the decoder
//!   reading (and releasing window for) everything would let a peer make
//!   the server hold `connections × streams × message limit`.
//! - **Header lists.** A request whose header list (counted as HTTP/2
//!   counts it: each name and value and 32 bytes, pseudo-headers
//!   included) is over `max_header_list_size` (16 KiB) is answered
//!   `RESOURCE_EXHAUSTED`, trailers-only, before any layer sees it, and
//!   the connection goes on. h2 itself takes lists up to four times the
//!   setting (64 KiB by default), so that the scaffold can answer with a
//!   gRPC status (clients report h2's own answer, HTTP 431, as
//!   `UNKNOWN`); past that, h2 answers 431. Memory per stream stays
//!   bounded by the larger limit.
//! - **One request message.** A request to a method whose requests are
//!   not a stream (unary or server-streaming, as the hosted contracts'
//!   method tables say, health's included) that carries a second message
//!   fails with `INTERNAL`, as grpc-java answers; tonic alone would decode
//!   the extra messages and drop them. It is noticed in the same walk of
//!   the framing as the budgets, when the second message's header
//!   arrives.
//! - **Per call.** The connection's [`TcpConnectInfo`] goes into the
//!   request's extensions, the call goes through the layers to the service
//!   its path names (`/package.Service/Method`), and a path that names no
//!   hosted service gets `UNIMPLEMENTED`; one whose content type is not
//!   `application/grpc` (or `application/grpc+proto`) gets HTTP 415, with
//!   `INTERNAL` for gRPC clients that read only the status. A layer's
//!   error becomes a status where one fits: a `Status` is answered as it is, anything else as
//!   `INTERNAL` with no detail, an injected abort resets the stream. Each
//!   stream's task is spawned boxed. No `grpc-timeout` handling here:
//!   sinew's deadline layer enforces it, once.
//! - **Drain.** `Connections::go_away` has every connection send
//!   `GOAWAY` and close once its calls are done; `Connections::abandon`
//!   then closes those still open and waits (a second at most) until the
//!   calls of every connection have ended, each stream's task being
//!   counted as it is spawned.
//!
//! # HTTP/2 settings
//!
//! | setting | value | why |
//! |---|---|---|
//! | max concurrent streams | `max_concurrent_streams` (200) | calls one connection may have open |
//! | max local error reset streams | `max_local_error_reset_streams` (1024) | guard against reset floods |
//! | max pending accept reset streams | `max_pending_accept_reset_streams` (20) | guard against rapid reset (CVE-2023-44487) |
//! | max header list size | 4 × `max_header_list_size` (64 KiB) | h2's hard limit (HTTP 431); the scaffold answers `RESOURCE_EXHAUSTED` past the setting |
//! | keepalive interval | `http2_keepalive_interval` (60s; zero turns pings off) | find a dead peer the kernel would not report for minutes |
//! | keepalive timeout | `http2_keepalive_timeout` (20s) | the ping answer deadline; an unanswered ping closes the connection |
//! | initial stream window | 1 MiB | a large message is not stalled at 64 KiB per round trip |
//! | initial connection window | 1 MiB | shared by the connection's streams |
//! | adaptive window | off | fixed windows |
//! | max frame size | 16 KiB | the HTTP/2 default, which every peer sends |
//! | max send buffer size | 400 KiB | what one stream may queue before the peer's window opens |
//! | `date` header | on | on every response, as before |
//!
//! The fixed ones are what tonic's server used (its defaults are
//! hyper's), made explicit so that a change of hyper's defaults does not
//! change them.
//!
//! [`TcpConnectInfo`]: tonic::transport::server::TcpConnectInfo

mod accept;
mod checks;
mod connections;
pub(crate) mod executor;
mod http2;
mod preface;
mod recover;
mod routes;
mod service;

pub(crate) use accept::Acceptor;
pub(crate) use checks::RequestChecks;
pub(crate) use connections::Connections;
pub(crate) use preface::{Spoken, Watched};
pub(crate) use recover::Recover;
pub(crate) use routes::{DuplicateService, RoutesBuilder};
pub use routes::{Routing, RoutingFuture};
pub(crate) use service::{ConnectionService, RequestBody};
