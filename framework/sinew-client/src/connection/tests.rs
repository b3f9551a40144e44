//! `Connection` against a real tonic server on a loopback socket.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::{FutureExt as _, future::join_all};
use http::{HeaderValue, Request, Response, Uri, header::USER_AGENT};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, body::Body, server::NamedService};
use tower::{Service, ServiceExt};

use super::*;
use crate::{
    BoxError,
    {
        balance::{Target, is_connect_error},
        cause,
        retry::never_reached_server,
    },
};
use sinew_testing::ClosedPort;

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: Uri,
    user_agent: Option<HeaderValue>,
}

/// A gRPC service that answers every call with `OK` and records it.
#[derive(Clone, Default)]
struct Probe {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl NamedService for Probe {
    const NAME: &'static str = "sinew.test.Probe";
}

impl Service<Request<Body>> for Probe {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.seen.lock().unwrap().push(Seen {
            uri: request.uri().clone(),
            user_agent: request.headers().get(USER_AGENT).cloned(),
        });
        let response = Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .body(Body::empty())
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// A tonic server that counts the TCP connections it accepts.
struct Server {
    addr: SocketAddr,
    probe: Probe,
    accepted: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let incoming = futures_util::stream::unfold(
            (listener, accepted.clone()),
            |(listener, accepted)| async move {
                let stream = listener.accept().await.map(|(stream, _)| stream);
                accepted.fetch_add(1, Ordering::SeqCst);
                Some((stream, (listener, accepted)))
            },
        );
        let probe = Probe::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(probe.clone())
                .serve_with_incoming_shutdown(Box::pin(incoming), async {
                    let _ = stopped.await;
                })
                .map(|result| result.unwrap()),
        );
        Self {
            addr,
            probe,
            accepted,
            stop,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.probe.seen.lock().unwrap().clone()
    }

    /// Stops gracefully: `GOAWAY`, then the connections are closed.
    async fn stop(self) -> SocketAddr {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.addr
    }
}

fn target(connect: SocketAddr, origin: &str) -> Target {
    Target {
        key: format!("http://{connect}/"),
        connect: format!("http://{connect}").parse().unwrap(),
        origin: origin.parse().unwrap(),
    }
}

fn connection(addr: SocketAddr) -> Connection {
    Connection::lazy(
        &target(addr, &format!("http://{addr}")),
        ConnectSettings::default(),
    )
}

fn request() -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/sinew.test.Probe/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::empty())
        .unwrap()
}

async fn call(connection: &Connection) -> Result<Response<ResponseBody>, BoxError> {
    connection.clone().oneshot(request()).await
}

fn grpc_status(response: &Response<ResponseBody>) -> &str {
    response.headers()["grpc-status"].to_str().unwrap()
}

#[tokio::test]
async fn connects_at_the_first_call_only() {
    let server = Server::start().await;
    let connection = connection(server.addr);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.accepted(), 0, "making it does not connect");

    let response = call(&connection).await.unwrap();
    assert_eq!(grpc_status(&response), "0");
    for _ in 0..5 {
        call(&connection).await.unwrap();
    }
    assert_eq!(server.accepted(), 1, "later calls reuse the connection");
    assert_eq!(server.seen().len(), 6);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_first_calls_share_one_connect() {
    let server = Server::start().await;
    let connection = connection(server.addr);
    let calls = (0..16).map(|_| call(&connection));
    for result in join_all(calls).await {
        assert_eq!(grpc_status(&result.unwrap()), "0");
    }
    assert_eq!(server.accepted(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_connect_is_a_typed_connect_failure_and_the_next_call_retries() {
    let port = ClosedPort::new();
    let connection = connection(port.addr());
    let waiting = join_all((0..3).map(|_| call(&connection))).await;
    for result in waiting {
        let error = result.unwrap_err();
        assert!(is_connect_error(&*error));
        assert!(never_reached_server(&*error));
        let status = Status::from_error(error);
        assert_eq!(status.code(), Code::Unavailable);
        let failed = cause::<ConnectFailed>(&status).expect("a ConnectFailed cause");
        assert_eq!(failed.kind(), std::io::ErrorKind::ConnectionRefused);
        let io = cause::<std::io::Error>(&status).expect("the io::Error in the chain");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    // Something listens now: the next call dials again.
    let server = Server::on(port.listen());
    call(&connection).await.unwrap();
    assert_eq!(server.accepted(), 1);
    server.stop().await;
}

#[tokio::test]
async fn after_a_failed_connect_it_connects_again_in_the_background() {
    let port = ClosedPort::new();
    let connection = connection(port.addr());
    let (told, mut reconnected) = tokio::sync::mpsc::unbounded_channel();
    connection.on_reconnect(move || {
        let _ = told.send(());
    });
    call(&connection).await.unwrap_err();
    assert!(!connection.is_connected());

    // The server comes up; no call is made.
    let server = Server::on(port.listen());
    tokio::time::timeout(std::time::Duration::from_secs(5), reconnected.recv())
        .await
        .expect("a background connect within the backoff")
        .unwrap();
    assert!(connection.is_connected());
    assert_eq!(server.accepted(), 1);
    // The next call goes on that connection, and the redialing is over.
    call(&connection).await.unwrap();
    assert_eq!(server.accepted(), 1);
    assert!(reconnected.try_recv().is_err(), "told once");
    server.stop().await;
}

#[tokio::test]
async fn after_the_server_restarts_the_next_call_reconnects() {
    let server = Server::start().await;
    let connection = connection(server.addr);
    call(&connection).await.unwrap();
    let addr = server.stop().await;

    let server = Server::on(TcpListener::bind(addr).await.unwrap());
    // The old connection may not have been seen closed yet: a call on it
    // fails as one that never reached the server (the retry layer sends it
    // again), and the one after goes on a new connection.
    if let Err(error) = call(&connection).await {
        assert!(never_reached_server(&*error), "{error:?}");
        call(&connection).await.unwrap();
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(server.seen().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn calls_name_the_origin_and_sinew_as_user_agent() {
    let server = Server::start().await;
    let connection = Connection::lazy(
        &target(server.addr, "http://greeter.internal:8443"),
        ConnectSettings::default(),
    );
    call(&connection).await.unwrap();
    let mut own = request();
    own.headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static("mine/1"));
    connection.clone().oneshot(own).await.unwrap();

    let seen = server.seen();
    assert_eq!(seen[0].uri.scheme_str(), Some("http"));
    assert_eq!(
        seen[0].uri.authority().map(|a| a.as_str()),
        Some("greeter.internal:8443")
    );
    assert_eq!(seen[0].uri.path(), "/sinew.test.Probe/Call");
    assert_eq!(
        seen[0].user_agent.as_ref().unwrap(),
        concat!("sinew/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(seen[1].user_agent.as_ref().unwrap(), "mine/1");
    server.stop().await;
}

#[tokio::test]
async fn a_connect_that_outlasts_the_timeout_fails_as_timed_out() {
    // A listener that never accepts, with its accept queue filled: the
    // kernel drops further SYNs, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(std::time::Duration::from_millis(50), connect).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    let connection = Connection::lazy(
        &target(addr, &format!("http://{addr}")),
        ConnectSettings {
            connect_timeout: std::time::Duration::from_millis(100),
            ..ConnectSettings::default()
        },
    );
    // Bounded, so that a kernel that completes the connect anyway fails
    // the test instead of hanging it.
    let error = tokio::time::timeout(std::time::Duration::from_secs(5), call(&connection))
        .await
        .expect("the connect timeout ends the call")
        .unwrap_err();
    assert!(is_connect_error(&*error));
    assert!(never_reached_server(&*error));
    let status = Status::from_error(error);
    assert_eq!(status.code(), Code::Unavailable);
    let failed = cause::<ConnectFailed>(&status).expect("a ConnectFailed cause");
    assert_eq!(failed.kind(), std::io::ErrorKind::TimedOut);
    drop((listener, queued));
}

/// Calls `addr` with a 200ms connect timeout; the error, within 5s.
async fn call_with_short_connect_timeout(addr: SocketAddr) -> BoxError {
    let connection = Connection::lazy(
        &target(addr, &format!("http://{addr}")),
        ConnectSettings {
            connect_timeout: std::time::Duration::from_millis(200),
            ..ConnectSettings::default()
        },
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), call(&connection))
        .await
        .expect("the connect timeout ends the call")
        .unwrap_err()
}

fn assert_timed_out_connect(error: &BoxError) {
    assert!(is_connect_error(&**error), "{error}");
    assert!(never_reached_server(&**error));
}

#[tokio::test]
async fn a_peer_that_accepts_but_never_sends_settings_fails_the_connect() {
    // It accepts the TCP connection and reads the preface, but never
    // answers: hyper's handshake alone would call that connected.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 24];
            let _ = tokio::io::AsyncReadExt::read_exact(&mut stream, &mut preface).await;
            held.push(stream);
        }
    });
    let error = call_with_short_connect_timeout(addr).await;
    assert_timed_out_connect(&error);
    let status = Status::from_error(error);
    assert_eq!(status.code(), Code::Unavailable);
    let failed = cause::<ConnectFailed>(&status).expect("a ConnectFailed cause");
    assert_eq!(failed.kind(), std::io::ErrorKind::TimedOut);
    silent.abort();
}

#[tokio::test]
async fn a_full_accept_backlog_is_a_failed_connect_not_a_hung_call() {
    // A listener no one accepts from: the kernel completes the TCP
    // handshake for the first connections it queues, so the connect
    // succeeds and nothing answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let error = call_with_short_connect_timeout(addr).await;
    assert_timed_out_connect(&error);
    let status = Status::from_error(error);
    assert_eq!(status.code(), Code::Unavailable);
    assert!(cause::<ConnectFailed>(&status).is_some());
    drop(listener);
}

#[tokio::test]
async fn a_default_response_body_is_empty_and_ended() {
    use http_body_util::BodyExt as _;

    let body = ResponseBody::default();
    assert!(http_body::Body::is_end_stream(&body));
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(0));
    let collected = body.collect().await.expect("an empty body").to_bytes();
    assert!(collected.is_empty());
}

/// A server that takes the HTTP/2 handshake and one request, then drops
/// the connection without answering.
async fn dropping_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(tcp).await.unwrap();
                // The first request arrives; then the socket is gone.
                let _request = connection.accept().await;
                drop(connection);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_that_breaks_under_a_call_fails_it_unavailable() {
    let addr = dropping_server().await;
    let error = call(&connection(addr)).await.unwrap_err();
    let status = Status::from_error(error);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A server that answers the first call's headers and one message, then
/// reports how the call's request stream ended: `Ok(())` for an end of
/// stream (a half-close), the reset's reason for a reset.
async fn answering_server() -> (
    SocketAddr,
    oneshot::Receiver<Result<(), Option<h2::Reason>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reported) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(tcp).await.unwrap();
        let (request, mut respond) = connection.accept().await.unwrap().unwrap();
        tokio::spawn(async move { while connection.accept().await.is_some() {} });
        let response = Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut send = respond.send_response(response, false).unwrap();
        send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false)
            .unwrap();
        let mut body = request.into_body();
        let ended = loop {
            match body.data().await {
                Some(Ok(_)) => {}
                None => break Ok(()),
                Some(Err(error)) => break Err(error.reason()),
            }
        };
        let _ = report.send(ended);
    });
    (addr, reported)
}

#[tokio::test]
async fn a_streaming_call_dropped_after_its_headers_is_reset_with_cancel() {
    use http_body_util::BodyExt as _;

    let (addr, reported) = answering_server().await;
    // A request stream the caller still holds open.
    let (_sender, frames) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, Infallible>>(1);
    let body = http_body_util::StreamBody::new(futures_util::stream::unfold(
        frames,
        |mut frames| async move { frames.recv().await.map(|frame| (frame, frames)) },
    ));
    let mut request = request();
    *request.body_mut() = Body::new(body);
    let response = connection(addr).oneshot(request).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("a message");
    assert!(first.is_data());
    // The caller gives up on the response; its request stream stays open.
    drop(body);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), reported)
        .await
        .expect("the server saw the call end while the request stream was open")
        .unwrap();
    assert_eq!(ended, Err(Some(h2::Reason::CANCEL)));
}

#[tokio::test]
async fn a_streaming_call_read_to_its_end_is_not_reset() {
    // The request ends by itself: the server sees its end of stream.
    let (addr, reported) = answering_server().await;
    let frames = futures_util::stream::iter([Ok::<_, Infallible>(http_body::Frame::data(
        bytes::Bytes::from_static(&[0, 0, 0, 0, 0]),
    ))]);
    let mut request = request();
    *request.body_mut() = Body::new(http_body_util::StreamBody::new(frames));
    let response = connection(addr).oneshot(request).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), reported)
        .await
        .expect("the server saw the request end")
        .unwrap();
    assert_eq!(ended, Ok(()));
    drop(response);
}
