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
