//! Safe limits and bad input: oversized and malformed requests get the
//! right status, a panicking handler fails only its own call, the deadline
//! ceiling holds, and the server keeps serving through all of it.

mod common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Running, echo_server, raw_call_on};
use sinew::server::ServerConfig;
use sinew_workspace::proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tonic::{Code, transport::Channel};

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..Default::default()
    }
}

async fn still_serves(client: &mut EchoClient<Channel>) {
    let reply = client
        .get(request("still here"))
        .await
        .expect("the server keeps serving");
    assert_eq!(reply.into_inner().message, "still here");
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted() {
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .max_receive_message_size(1024);
    let server = Running::start(echo_server(config)).await;
    let mut client = EchoClient::new(server.channel().await);

    let big = EchoRequest {
        payload: vec![7; 4096],
        ..Default::default()
    };
    let status = client.get(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn the_default_receive_limit_is_four_mebibytes() {
    let server = Running::echo().await;
    let mut client = EchoClient::new(server.channel().await)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let just_under = EchoRequest {
        payload: vec![1; 4 * 1024 * 1024 - 64],
        ..Default::default()
    };
    client.put(just_under).await.expect("under 4 MiB passes");
    let over = EchoRequest {
        payload: vec![1; 4 * 1024 * 1024 + 1],
        ..Default::default()
    };
    let status = client.put(over).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_response_is_resource_exhausted() {
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .max_send_message_size(1024);
    let server = Running::start(echo_server(config)).await;
    let mut client = EchoClient::new(server.channel().await);
    let echoed_big = EchoRequest {
        payload: vec![9; 2048],
        ..Default::default()
    };
    let status = client.get(echoed_big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_call() {
    let server = Running::echo().await;
    let channel = server.channel().await;
    let mut client = EchoClient::new(channel.clone());

    // Another call on the same connection, in flight while the handler panics.
    let mut neighbour = EchoClient::new(channel);
    let slow = tokio::spawn(async move {
        neighbour
            .get(EchoRequest {
                message: "neighbour".to_owned(),
                delay_ms: 200,
                ..Default::default()
            })
            .await
    });

    let status = client.post(request("panic")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "internal error", "no panic detail leaks");

    let reply = slow.await.unwrap().expect("the neighbouring call survives");
    assert_eq!(reply.into_inner().message, "neighbour");
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_response_stream_ends_its_call_with_internal() {
    let server = Running::echo().await;
    let mut client = EchoClient::new(server.channel().await);
    let mut stream = client
        .expand(EchoRequest {
            message: "panic in stream".to_owned(),
            count: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // tonic batches replies that are ready together, so the one before the
    // panic may be lost with it; the call must end with INTERNAL either way.
    let status = loop {
        match stream.message().await {
            Ok(Some(reply)) => assert_eq!(reply.message, "panic in stream"),
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "internal error");
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn the_request_timeout_caps_what_a_caller_asks_for() {
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .request_timeout(Duration::from_millis(100));
    let server = Running::start(echo_server(config)).await;
    let mut client = EchoClient::new(server.channel().await);
    let mut slow = tonic::Request::new(EchoRequest {
        delay_ms: 60_000,
        ..Default::default()
    });
    // The caller is willing to wait a minute; the server is not.
    slow.set_timeout(Duration::from_secs(60));
    let status = client.get(slow).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let server = Running::echo().await;
    let (status, _) = raw_call(&server, "/echo.v1.Echo/Nope", Bytes::new()).await;
    assert_eq!(status, Code::Unimplemented as i32);
    let (status, _) = raw_call(&server, "/no.Such/Service", Bytes::new()).await;
    assert_eq!(status, Code::Unimplemented as i32);
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_message_is_rejected_and_the_server_keeps_serving() {
    let server = Running::echo().await;
    // Field 1 declared length-delimited with a length far past the end.
    let garbage = Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    let (status, _) = raw_call(&server, "/echo.v1.Echo/Get", garbage).await;
    assert_eq!(
        status,
        Code::Internal as i32,
        "a message that does not decode"
    );
    let mut client = EchoClient::new(server.channel().await);
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn http2_limits_are_advertised() {
    let server = Running::echo().await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    // The server's SETTINGS arrive with the first exchange.
    send = send.ready().await.unwrap();
    let _ = raw_call_on(&mut send, "/echo.v1.Echo/Get", encode(&[])).await;
    assert_eq!(send.current_max_send_streams(), 200);
    driver.abort();
    server.stop().await;
}

/// A gRPC message frame: uncompressed flag, length, bytes.
fn encode(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap());
    frame.put_slice(message);
    frame.freeze()
}

/// Sends one raw gRPC request and returns its `grpc-status` and body.
async fn raw_call(server: &Running, path: &str, message: Bytes) -> (i32, Bytes) {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let result = raw_call_on(&mut send, path, encode(&message)).await;
    driver.abort();
    result
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The attack the budget is for: two connections, a hundred streams each,
/// each sending 1 MiB of a message it declares at 4 MiB (under the message
/// limit) and never ending it. Without a budget the server reads and holds
/// all 200 MiB; with one of 32 MiB it refuses the streams past it with
/// `RESOURCE_EXHAUSTED`, its resident memory stays well under what was
/// sent, and other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_messages_on_many_streams_cannot_hold_unbounded_memory() {
    use common::{GreeterProcess, grpc_request};
    use sinew_workspace::proto::greeter::v1::{HelloRequest, greeter_client::GreeterClient};

    const STREAMS: usize = 100;
    const SENT: usize = 1024 * 1024;
    let budget = (32 * 1024 * 1024).to_string();
    let greeter = GreeterProcess::start(&[("SINEW_MAX_REQUEST_BUFFER", budget.as_str())]).await;
    let pid = greeter.child.id();
    let before = rss_kib(pid);

    let mut responses = Vec::new();
    let mut streams = Vec::new();
    let mut drivers = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(greeter.addr).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        drivers.push(tokio::spawn(async move {
            let _ = connection.await;
        }));
        for _ in 0..STREAMS {
            let mut send = send.clone().ready().await.unwrap();
            let (response, mut stream) = send
                .send_request(grpc_request("/greeter.v1.Greeter/SayHello"), false)
                .unwrap();
            let mut data = BytesMut::with_capacity(5 + SENT);
            data.put_u8(0);
            data.put_u32(4 * 1024 * 1024);
            data.put_bytes(b'x', SENT);
            stream.send_data(data.freeze(), false).unwrap();
            responses.push(response);
            streams.push(stream);
        }
    }

    // The streams past the budget are answered: RESOURCE_EXHAUSTED. (The
    // ones within it wait for the rest of their messages.)
    let mut answers: futures_util::stream::FuturesUnordered<_> = responses.into_iter().collect();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused < STREAMS {
        use futures_util::StreamExt as _;
        let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await else {
            break;
        };
        let Ok(response) = answer else { continue };
        if response.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"8") {
            refused += 1;
        }
    }
    let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(
        refused >= STREAMS,
        "only {refused} of {} streams were refused",
        2 * STREAMS
    );
    // 200 MiB was sent; the budget is 32 MiB, plus the connections'
    // flow-control windows and what the allocator keeps.
    assert!(grown_mib < 100, "the server grew by {grown_mib} MiB");

    // Meanwhile, another client is served.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", greeter.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: "still here".to_owned(),
        })
        .await
        .expect("another client is served");
    assert_eq!(reply.into_inner().message, "Hello, still here!");
    drop(streams);
    drivers.iter().for_each(tokio::task::JoinHandle::abort);
}

/// Two messages, each an encoded `EchoRequest` with `message`.
fn two_messages(message: &str) -> Bytes {
    let one = prost::Message::encode_to_vec(&request(message));
    [encode(&one), encode(&one)].concat().into()
}

#[tokio::test]
async fn a_second_request_message_on_a_method_that_takes_one_is_internal() {
    let server = Running::echo().await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);

    // Unary and server-streaming methods take one request message: a
    // second is INTERNAL, as grpc-java answers (tonic alone would drop it
    // and answer OK).
    for path in ["/echo.v1.Echo/Get", "/echo.v1.Echo/Expand"] {
        let (status, _) = raw_call_on(&mut send, path, two_messages("twice")).await;
        assert_eq!(status, Code::Internal as i32, "{path}");
    }
    // Health's Check too: the scaffold's own services are held to it.
    let check = prost::Message::encode_to_vec(&sinew::health::proto::HealthCheckRequest {
        service: String::new(),
    });
    let (status, _) = raw_call_on(
        &mut send,
        "/grpc.health.v1.Health/Check",
        [encode(&check), encode(&check)].concat().into(),
    )
    .await;
    assert_eq!(status, Code::Internal as i32);

    // A client stream takes both; one message alone is fine everywhere.
    let (status, _) = raw_call_on(&mut send, "/echo.v1.Echo/Collect", two_messages("ab")).await;
    assert_eq!(status, 0);
    let one = prost::Message::encode_to_vec(&request("once"));
    let (status, _) = raw_call_on(&mut send, "/echo.v1.Echo/Get", encode(&one)).await;
    assert_eq!(status, 0);
    driver.abort();

    let mut client = EchoClient::new(server.channel().await);
    still_serves(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_metadata_is_resource_exhausted() {
    let server = Running::echo().await;
    let mut client = EchoClient::new(server.channel().await);
    let with_metadata = |bytes: usize| {
        let mut call = tonic::Request::new(request("big headers"));
        call.metadata_mut()
            .insert("x-big", "a".repeat(bytes).parse().unwrap());
        call
    };
    // Under the 16 KiB default, with the other headers: served.
    client.get(with_metadata(12 * 1024)).await.unwrap();
    // Over it: RESOURCE_EXHAUSTED (h2 alone answers HTTP 431, which the
    // client reports as UNKNOWN).
    let status = client.get(with_metadata(20 * 1024)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("16384"), "{}", status.message());
    // The connection and the server go on.
    still_serves(&mut client).await;
    server.stop().await;
}
