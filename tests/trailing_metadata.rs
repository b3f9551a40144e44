//! Custom trailing metadata from a handler (`sinew::server::TrailingMetadata`),
//! over real sockets: on a successful unary response, at the end of a
//! response stream, and on a stream that ends with an error status; the
//! status's own names cannot be overridden.

mod common;

use std::pin::Pin;

use common::Running;
use futures_util::{Stream, StreamExt as _, stream};
use sinew::{
    Server,
    server::{ServerConfig, TrailingMetadata},
};
use sinew_workspace::proto::echo::v1::{
    EchoReply, EchoRequest,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};
use tonic::{
    Code, Request, Response, Status, Streaming,
    metadata::{BinaryMetadataValue, MetadataMap, MetadataValue},
};

/// Echoes, adding trailing metadata: `x-served` and `x-digest-bin`, and
/// attempts at the reserved `grpc-status` and `grpc-message`. `Expand`
/// ends with the status `fail_with` names, if any, after its replies.
#[derive(Clone)]
struct Trailing;

fn with_trailers<T>(message: T) -> Response<T> {
    let mut response = Response::new(message);
    let trailing = TrailingMetadata::of(&mut response);
    trailing.insert("x-served", MetadataValue::from_static("yes"));
    trailing.insert_bin("x-digest-bin", BinaryMetadataValue::from_bytes(&[1, 2, 3]));
    trailing.insert("grpc-status", MetadataValue::from_static("13"));
    trailing.insert("grpc-message", MetadataValue::from_static("overridden"));
    response
}

type Replies = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Trailing {
    async fn get(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(with_trailers(EchoReply {
            message: request.into_inner().message,
            payload: Vec::new(),
        }))
    }

    async fn put(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.get(request).await
    }

    async fn post(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.get(request).await
    }

    type ExpandStream = Replies;

    async fn expand(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        let request = request.into_inner();
        let reply = EchoReply {
            message: request.message.clone(),
            payload: Vec::new(),
        };
        let replies = stream::repeat(Ok(reply)).take(request.count as usize);
        let end = (request.fail_with != 0).then(|| {
            let mut status = Status::new(Code::from(request.fail_with), "failed at the end");
            status
                .metadata_mut()
                .insert("x-served", MetadataValue::from_static("by the status"));
            Err(status)
        });
        Ok(with_trailers(Box::pin(replies.chain(stream::iter(end)))))
    }

    async fn collect(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type ChatStream = Replies;

    async fn chat(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

async fn server() -> Running {
    Running::start(
        Server::new("trailing")
            .config(ServerConfig::new().lame_duck(std::time::Duration::ZERO))
            .add_service(EchoServer::new(Trailing)),
    )
    .await
}

fn assert_custom_entries(metadata: &MetadataMap) {
    assert_eq!(metadata.get("x-served").unwrap(), "yes");
    let digest = metadata
        .get_bin("x-digest-bin")
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(&digest[..], [1, 2, 3]);
}

#[tokio::test]
async fn a_successful_unary_response_carries_custom_trailers_next_to_an_ok_status() {
    let running = server().await;
    let mut client = EchoClient::new(running.channel().await);
    let response = client
        .get(EchoRequest {
            message: "hi".to_owned(),
            ..Default::default()
        })
        .await
        .expect("OK: the handler's grpc-status does not override the call's");
    // tonic merges a unary response's trailers into its metadata.
    assert_custom_entries(response.metadata());
    assert!(response.metadata().get("grpc-message").is_none());
    assert_eq!(response.into_inner().message, "hi");
    running.stop().await;
}

#[tokio::test]
async fn a_response_stream_ends_with_custom_trailers() {
    let running = server().await;
    let mut client = EchoClient::new(running.channel().await);
    let response = client
        .expand(EchoRequest {
            message: "hi".to_owned(),
            count: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    // Trailing, not initial, metadata.
    assert!(response.metadata().get("x-served").is_none());
    let mut replies = response.into_inner();
    let mut count = 0;
    while replies.message().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 3);
    let trailers = replies.trailers().await.unwrap().expect("trailers");
    assert_custom_entries(&trailers);
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert!(trailers.get("grpc-message").is_none());
    running.stop().await;
}

#[tokio::test]
async fn a_stream_ending_with_an_error_keeps_its_status_and_its_own_values() {
    let running = server().await;
    let mut client = EchoClient::new(running.channel().await);
    let mut replies = client
        .expand(EchoRequest {
            message: "hi".to_owned(),
            count: 1,
            fail_with: Code::Aborted as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replies.message().await.unwrap().is_some());
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "failed at the end");
    // The status's value for a name wins; the handler's other entries are
    // there beside it.
    let values: Vec<_> = status.metadata().get_all("x-served").iter().collect();
    assert_eq!(values, ["by the status"]);
    let digest = status.metadata().get_bin("x-digest-bin").unwrap();
    assert_eq!(&digest.to_bytes().unwrap()[..], [1, 2, 3]);
    running.stop().await;
}
