//! The HTTP/2 settings of every connection the server accepts.

use hyper::server::conn::http2;
use hyper_util::rt::TokioTimer;

use crate::Settings;
use crate::serve::RequestChecks;
use crate::serve::executor::TrackingExecutor;

/// Flow-control window of each stream: a large message is not stalled at
/// the protocol's 64 KiB per round trip.
const STREAM_WINDOW: u32 = 1024 * 1024;

/// Flow-control window of a connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Largest frame the server accepts: the protocol's default, which every
/// peer can send.
const MAX_FRAME_SIZE: u32 = 16 * 1024;

/// What one stream may queue for sending before the peer's window opens.
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// The builder of every connection, with the configured limits and the
/// settings tonic's server used, set explicitly so that a change of
/// hyper's defaults does not change them; the calls' tasks are spawned by
/// `executor`. See the [module docs](super).
pub(crate) fn builder(
    settings: &Settings,
    executor: TrackingExecutor,
) -> http2::Builder<TrackingExecutor> {
    let mut builder = http2::Builder::new(executor);
    builder
        // Keepalive pings need a timer.
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_local_error_reset_streams(settings.max_local_error_reset_streams)
        .max_pending_accept_reset_streams(settings.max_pending_accept_reset_streams)
        // h2 answers a list past its limit with HTTP 431, which gRPC
        // clients report as UNKNOWN: its limit is set above the setting,
        // which the scaffold checks itself (`RESOURCE_EXHAUSTED`).
        .max_header_list_size(RequestChecks::h2_header_list_limit(
            settings.max_header_list_size,
        ))
        .keep_alive_interval(
            (!settings.http2_keepalive_interval.is_zero())
                .then_some(settings.http2_keepalive_interval),
        )
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        // Fixed windows, as tonic's server had them: the adaptive window
        // (BDP pings) is off.
        .adaptive_window(false)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buf_size(MAX_SEND_BUFFER)
        // The `date` header every response carried under tonic.
        .auto_date_header(true);
    builder
}
