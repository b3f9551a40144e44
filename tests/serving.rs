//! How the scaffold serves a connection before any layer sees a call:
//! routing by service name, the peer's address on every request, and
//! connections that fail without taking the server with them.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    Running, Unary, echo, echo_client, grpc_request, raw_call_on, serve_echo, serve_echo_with,
};
use sinew::server::ServerConfig;
use sinew_workspace::proto::echo::v1::{EchoReply, EchoRequest};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Request, Response, Status};

/// The local and remote addresses a call's request carries.
type Seen = (Option<SocketAddr>, Option<SocketAddr>);

/// Records the addresses each call's request carries.
#[derive(Clone, Default)]
struct Addresses(Arc<Mutex<Vec<Seen>>>);

#[tonic::async_trait]
impl Unary for Addresses {
    async fn unary(
        &self,
        _method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.0
            .lock()
            .unwrap()
            .push((request.local_addr(), request.remote_addr()));
        Ok(Response::new(EchoReply {
            message: request.into_inner().message,
            payload: Vec::new(),
        }))
    }
}

/// The response to a bodyless gRPC request for `path` on a connection of
/// its own: its HTTP status, its headers, and whether it ended with them
/// (trailers-only).
async fn raw_response(server: &Running, path: &str) -> (http::StatusCode, http::HeaderMap, bool) {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = grpc_request(path);
    let (response, _) = send
        .ready()
        .await
        .unwrap()
        .send_request(request, true)
        .unwrap();
    let response = response.await.unwrap();
    let ended = response.body().is_end_stream();
    driver.abort();
    (response.status(), response.headers().clone(), ended)
}

/// An HTTP/2 connection to `server`, spoken by hand, and the task that
/// drives it.
async fn h2_connection(
    server: &Running,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (send, driver)
}

/// Calls `Get` with an empty message on `send`; its `grpc-status`.
async fn empty_get(send: &mut h2::client::SendRequest<Bytes>) -> i32 {
    let (status, _) = raw_call_on(
        send,
        "/echo.v1.Echo/Get",
        Bytes::from_static(&[0, 0, 0, 0, 0]),
    )
    .await;
    status
}

#[tokio::test]
async fn a_call_to_an_unknown_service_is_unimplemented_trailers_only() {
    let server = serve_echo(Addresses::default()).await;
    let (status, headers, ended) = raw_response(&server, "/nope.v1.Nope/Get").await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(headers["grpc-status"], "12");
    assert!(ended, "trailers-only: the headers end the stream");
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_is_not_grpc_protobuf_gets_415_and_the_server_keeps_serving() {
    let server = serve_echo(Addresses::default()).await;
    let (mut send, driver) = h2_connection(&server).await;
    for content_type in [
        None,
        Some("application/json"),
        Some("application/grpc+json"),
    ] {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("http://localhost/echo.v1.Echo/Get")
            .header("te", "trailers");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (response, _) = send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(request.body(()).unwrap(), true)
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(
            response.status(),
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(response.headers()["grpc-status"], "13", "{content_type:?}");
    }
    // gRPC with protobuf messages, by either name, is served.
    assert_eq!(empty_get(&mut send).await, 0);
    driver.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_path_is_unimplemented() {
    let server = serve_echo(Addresses::default()).await;
    for path in ["/", "/echo.v1.Echo", "/echo.v1.Echo/", "//Get"] {
        let (status, headers, _) = raw_response(&server, path).await;
        assert_eq!(status, http::StatusCode::OK, "{path}");
        assert_eq!(headers["grpc-status"], "12", "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_method_of_a_hosted_service_is_unimplemented() {
    let server = serve_echo(Addresses::default()).await;
    let (_, headers, _) = raw_response(&server, "/echo.v1.Echo/Nope").await;
    assert_eq!(headers["grpc-status"], "12");
    server.stop().await;
}

#[tokio::test]
async fn every_request_carries_the_connection_addresses() {
    let seen = Addresses::default();
    let server = serve_echo(seen.clone()).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    for _ in 0..2 {
        assert_eq!(empty_get(&mut send).await, 0);
    }
    driver.abort();
    assert_eq!(
        *seen.0.lock().unwrap(),
        [(Some(server.addr), Some(client_addr)); 2]
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_that_fail_do_not_stop_the_server() {
    let server = serve_echo(Addresses::default()).await;

    // Closed at once.
    drop(TcpStream::connect(server.addr).await.unwrap());
    // Not HTTP/2 at all.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage
        .write_all(b"\x00\x01\x02 not a preface\r\n\r\n")
        .await
        .unwrap();
    // HTTP/1: the server speaks HTTP/2 only, and closes the connection.
    let mut http1 = TcpStream::connect(server.addr).await.unwrap();
    http1
        .write_all(b"POST /echo.v1.Echo/Get HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = http1.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/1"),
        "no HTTP/1 answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(garbage);

    let mut client = echo_client(&[server.addr], |c| c).await;
    client
        .get(echo("still here"))
        .await
        .expect("the server keeps serving");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_does_not_finish_the_handshake_is_closed_after_the_timeout() {
    let config = ServerConfig::new().handshake_timeout(Duration::from_millis(200));
    let server = serve_echo_with(config, Addresses::default()).await;

    // Silent: the server closes it once the timeout has passed (having
    // sent its own SETTINGS, as an HTTP/2 server does at once).
    let begun = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut answer))
        .await
        .expect("the server closes a silent connection");
    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        begun.elapsed() >= Duration::from_millis(200),
        "closed before the timeout: {:?}",
        begun.elapsed()
    );

    // One that sends the preface and then nothing (no SETTINGS) is
    // closed too: the timeout covers the whole handshake.
    let begun = Instant::now();
    let mut preface_only = TcpStream::connect(server.addr).await.unwrap();
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        preface_only.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes a connection that stops after the preface");
    assert!(closed.is_ok(), "{closed:?}");
    assert!(begun.elapsed() >= Duration::from_millis(200));

    // One that completed the handshake stays open past the timeout.
    let (mut send, driver) = h2_connection(&server).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(empty_get(&mut send).await, 0);
    driver.abort();
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_sent_away_and_frees_its_slot() {
    let config = ServerConfig::new()
        .max_connections(1)
        .max_connection_idle(Duration::from_millis(300));
    let server = serve_echo_with(config, Addresses::default()).await;

    // The only slot: one call, then silence (h2 answers the server's
    // pings, as an idle client library does).
    let (mut first, first_driver) = h2_connection(&server).await;
    assert_eq!(empty_get(&mut first).await, 0);
    tokio::time::timeout(Duration::from_secs(10), first_driver)
        .await
        .expect("the idle connection is sent away and closed")
        .unwrap();

    // Its slot is free: a new client is served.
    let (mut second, second_driver) = h2_connection(&server).await;
    let status = tokio::time::timeout(Duration::from_secs(10), empty_get(&mut second))
        .await
        .expect("served once the idle connection is gone");
    assert_eq!(status, 0);
    second_driver.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_connection_with_a_call_open_is_not_idle() {
    let config = ServerConfig::new().max_connection_idle(Duration::from_millis(200));
    let server = Running::start(common::echo_server(config.lame_duck(Duration::ZERO))).await;
    let (mut send, driver) = h2_connection(&server).await;

    // A slow call stays open through three idle periods and more...
    let slow = EchoRequest {
        delay_ms: 3000,
        ..EchoRequest::default()
    };
    let mut slow_send = send.clone();
    let slow_call = tokio::spawn(async move {
        raw_call_on(&mut slow_send, "/echo.v1.Echo/Get", framed(&slow))
            .await
            .0
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    // ...so the connection was not sent away: it still takes new calls
    // (after a GOAWAY, the client would refuse to start one).
    assert_eq!(empty_get(&mut send).await, 0);
    assert_eq!(slow_call.await.unwrap(), 0);
    driver.abort();
    server.stop().await;
}

#[tokio::test]
async fn an_old_connection_is_sent_away_once_its_calls_finish() {
    let config = ServerConfig::new()
        .max_connection_age(Duration::from_millis(300))
        .max_connection_age_grace(Duration::from_secs(10));
    let server = Running::start(common::echo_server(config.lame_duck(Duration::ZERO))).await;
    let (mut send, driver) = h2_connection(&server).await;

    // A call still running when the connection comes of age finishes.
    let slow = EchoRequest {
        message: "slow".to_owned(),
        delay_ms: 1000,
        ..EchoRequest::default()
    };
    let begun = Instant::now();
    let (status, _) = raw_call_on(&mut send, "/echo.v1.Echo/Get", framed(&slow)).await;
    assert_eq!(status, 0, "the call in flight finishes");
    // Then the connection closes.
    tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the old connection is closed")
        .unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(270));
    server.stop().await;
}

/// `request` as a gRPC message: the 5-byte prefix, then its encoding.
fn framed(request: &EchoRequest) -> Bytes {
    use prost::Message as _;

    let encoded = request.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&encoded);
    Bytes::from(framed)
}

#[tokio::test]
async fn past_max_connections_a_new_connection_waits_for_one_to_close() {
    let config = ServerConfig::new().max_connections(1);
    let server = serve_echo_with(config, Addresses::default()).await;
    let (mut first, first_driver) = h2_connection(&server).await;
    assert_eq!(empty_get(&mut first).await, 0);

    // The second is connected by the kernel but not accepted: a call on
    // it gets no answer while the first is open.
    let (mut second, second_driver) = h2_connection(&server).await;
    let mut call = tokio::spawn(async move { empty_get(&mut second).await });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut call).await;
    assert!(waited.is_err(), "served past max_connections");

    // Once the first closes, the second is served.
    first_driver.abort();
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the second connection is served once the first closes")
        .unwrap();
    assert_eq!(status, 0);
    second_driver.abort();
    server.stop().await;
}

/// A greeter process's stderr, read as it comes on a thread of its own.
#[derive(Clone, Default)]
struct Stderr(Arc<Mutex<String>>);

impl Stderr {
    fn read_from(pipe: std::process::ChildStderr) -> Self {
        let stderr = Self::default();
        let text = Arc::clone(&stderr.0);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        stderr
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A `SayHello` on its own HTTP/2 connection to `addr`: its
/// `grpc-status`, and the connection (kept open until dropped).
async fn hello_on_a_new_connection(
    addr: SocketAddr,
) -> (
    i32,
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let hello = prost::Message::encode_to_vec(&sinew_workspace::proto::greeter::v1::HelloRequest {
        name: "you".to_owned(),
    });
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(hello.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&hello);
    let (status, _) = raw_call_on(&mut send, "/greeter.v1.Greeter/SayHello", framed.into()).await;
    (status, send, driver)
}

#[tokio::test]
async fn reaching_max_connections_is_logged_as_a_warning() {
    let mut greeter = common::GreeterProcess::start(&[("SINEW_MAX_CONNECTIONS", "3")]).await;
    let stderr = Stderr::read_from(greeter.child.stderr.take().unwrap());

    // Two connections at most (the one `start` checked health on may not
    // be closed yet): below the limit, served, nothing said.
    let (status, _first, first_driver) = hello_on_a_new_connection(greeter.addr).await;
    assert_eq!(status, 0);
    assert!(
        !stderr.text().contains("max_connections"),
        "{}",
        stderr.text()
    );

    // Two more: the limit is reached, and the server says so, as a
    // warning with the limit.
    let (status, _second, second_driver) = hello_on_a_new_connection(greeter.addr).await;
    assert_eq!(status, 0);
    let (status, _third, third_driver) = hello_on_a_new_connection(greeter.addr).await;
    assert_eq!(status, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let text = stderr.text();
        if let Some(line) = text
            .lines()
            .find(|line| line.contains("max_connections reached"))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no warning that max_connections was reached; stderr:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("max_connections=3"), "{warning}");

    for driver in [first_driver, second_driver, third_driver] {
        driver.abort();
    }
}
