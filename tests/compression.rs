//! Compression: the scaffold accepts gzip and zstd by default; it and
//! sinew's client send compressed (and the client accepts compressed)
//! only when configured to; size limits count
//! in decompressed bytes, both ways (a small message that decompresses
//! past the limit fails with `RESOURCE_EXHAUSTED`).

mod common;

use std::sync::{Arc, Mutex};

use common::{Running, Unary, serve_echo_with};
use sinew::{
    client::CompressionEncoding,
    server::{Encodings, ServerConfig},
};
use sinew_workspace::proto::echo::v1::{
    EchoReply, EchoRequest, echo_client::EchoClient as RawEchoClient,
};
use tonic::{Code, Request, Response, Status};

/// Echoes the request, recording the `grpc-encoding` it came with.
#[derive(Clone, Default)]
struct Recording {
    encodings: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Unary for Recording {
    async fn unary(
        &self,
        _method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        self.encodings.lock().unwrap().push(encoding);
        let request = request.into_inner();
        Ok(Response::new(EchoReply {
            message: request.message,
            payload: request.payload,
        }))
    }
}

impl Recording {
    fn last(&self) -> Option<String> {
        self.encodings.lock().unwrap().last().cloned().flatten()
    }
}

/// A request worth compressing: 64 KiB of one repeated line.
fn compressible(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        payload: b"the same line, again and again\n".repeat(2048),
        ..Default::default()
    }
}

fn encoding_of<T>(response: &Response<T>) -> Option<&str> {
    response
        .metadata()
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap())
}

async fn serve(send_compressed: Encodings) -> (Running, Recording) {
    let recording = Recording::default();
    let server = serve_echo_with(
        ServerConfig::new().send_compressed(send_compressed),
        recording.clone(),
    )
    .await;
    (server, recording)
}

#[tokio::test]
async fn gzip_and_zstd_both_ways_between_sinews_client_and_the_scaffold() {
    for (encoding, name) in [
        (CompressionEncoding::Gzip, "gzip"),
        (CompressionEncoding::Zstd, "zstd"),
    ] {
        let (server, recording) = serve(Encodings::from(encoding)).await;
        let mut client = common::echo_client(&[server.addr], |c| c.send_compressed(encoding)).await;
        let request = compressible(name);
        let reply = client.post(request.clone()).await.unwrap();
        assert_eq!(
            recording.last().as_deref(),
            Some(name),
            "request compressed"
        );
        assert_eq!(encoding_of(&reply), Some(name), "reply compressed");
        let reply = reply.into_inner();
        assert_eq!(
            (reply.message, reply.payload),
            (request.message, request.payload)
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn sending_and_accepting_compressed_are_choices() {
    // Neither side set to send: nothing is compressed.
    let (server, recording) = serve(Encodings::NONE).await;
    let mut client = common::echo_client(&[server.addr], |c| c).await;
    let reply = client.post(compressible("plain")).await.unwrap();
    assert_eq!(recording.last(), None);
    assert_eq!(encoding_of(&reply), None);

    // Per method: a clone that compresses, for the calls made on it; the
    // original still sends plain.
    let mut compressing = client.clone().send_compressed(CompressionEncoding::Zstd);
    compressing.post(compressible("zstd")).await.unwrap();
    assert_eq!(recording.last().as_deref(), Some("zstd"));
    client.post(compressible("plain again")).await.unwrap();
    assert_eq!(recording.last(), None);
    server.stop().await;

    // A server set to send gzip answers compressed a sinew client that
    // accepts compressed responses, and uncompressed one that does not: a
    // default client (which says nothing of it, to save every call a
    // header), or plain tonic.
    let (server, _recording) = serve(Encodings::from(CompressionEncoding::Gzip)).await;
    let mut accepting = common::echo_client(&[server.addr], |c| c.accept_compressed(true)).await;
    let reply = accepting.post(compressible("to sinew")).await.unwrap();
    assert_eq!(encoding_of(&reply), Some("gzip"));
    let mut default = common::echo_client(&[server.addr], |c| c).await;
    let reply = default.post(compressible("to sinew")).await.unwrap();
    assert_eq!(encoding_of(&reply), None);
    let mut plain = RawEchoClient::new(server.channel().await);
    let reply = plain.post(compressible("to plain tonic")).await.unwrap();
    assert_eq!(encoding_of(&reply), None);
    server.stop().await;
}

/// A zero-filled payload of `bytes`: a few KiB once compressed.
fn bomb(bytes: usize) -> EchoRequest {
    EchoRequest {
        message: "bomb".to_owned(),
        payload: vec![0; bytes],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_small_compressed_request_past_the_receive_limit_is_resource_exhausted() {
    let (server, recording) = serve(Encodings::NONE).await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        // Plain tonic, so that nothing but the server judges the size.
        let mut client = RawEchoClient::new(server.channel().await).send_compressed(encoding);
        // 5 MiB of zeros, a few KiB on the wire: past the 4 MiB limit
        // only once decompressed.
        let status = client.post(bomb(5 << 20)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{encoding:?}: {status:?}"
        );
        // Under the limit decompressed, the same kind of message passes.
        let reply = client.post(bomb(3 << 20)).await.unwrap();
        assert_eq!(reply.into_inner().payload.len(), 3 << 20);
    }
    // The handler saw only the two that passed.
    assert_eq!(
        *recording.encodings.lock().unwrap(),
        [Some("gzip".to_owned()), Some("zstd".to_owned())]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_small_compressed_response_past_the_clients_limit_is_resource_exhausted() {
    // The server takes and sends 8 MiB messages and answers with gzip;
    // the client keeps the default 4 MiB receive limit.
    let recording = Recording::default();
    let server = serve_echo_with(
        ServerConfig::new()
            .max_receive_message_size(8 << 20)
            .max_send_message_size(8 << 20)
            .max_request_buffer_per_connection(16 << 20)
            .send_compressed(Encodings::from(CompressionEncoding::Gzip)),
        recording,
    )
    .await;
    let mut client = common::echo_client(&[server.addr], |c| {
        c.send_compressed(CompressionEncoding::Gzip)
    })
    .await;
    let status = client.post(bomb(5 << 20)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let reply = client.post(bomb(3 << 20)).await.unwrap();
    assert_eq!(reply.into_inner().payload.len(), 3 << 20);
    server.stop().await;
}

#[tokio::test]
async fn a_compressed_response_counts_decompressed_against_the_send_limit() {
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        // The server sends at most 1 MiB a message, compressed; its
        // replies echo 2 MiB of zeros, a few KiB once compressed.
        let server = serve_echo_with(
            ServerConfig::new()
                .max_send_message_size(1 << 20)
                .send_compressed(Encodings::from(encoding)),
            Recording::default(),
        )
        .await;
        let mut client = common::echo_client(&[server.addr], |c| c.send_compressed(encoding)).await;
        let status = client.post(bomb(2 << 20)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{encoding:?}: {status:?}"
        );
        assert!(
            status.message().contains("response message"),
            "refused by the server's send limit: {status:?}"
        );
        // Within the limit decompressed, it is sent compressed.
        let reply = client.post(bomb(1 << 19)).await.unwrap();
        assert!(encoding_of(&reply).is_some());
        assert_eq!(reply.into_inner().payload.len(), 1 << 19);
        server.stop().await;
    }
}
