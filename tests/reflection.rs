//! gRPC reflection, v1 and v1alpha: the services are listed and their
//! contracts can be fetched, so grpcurl-style tools work.

mod common;

use std::time::Duration;

use common::{Running, echo_server};
use prost::Message;
use sinew::server::ServerConfig;
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED: [&str; 4] = [
    "echo.v1.Echo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test]
async fn v1_lists_services_and_serves_their_contracts() {
    use v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = Running::echo().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let ask = |request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = tokio_stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "echo.v1.Echo".to_owned(),
        )),
    ]);
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED);

    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let decoded: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let echo = decoded
        .iter()
        .find(|f| f.name() == "echo/v1/echo.proto")
        .expect("the echo contract is served");
    let service = &echo.service[0];
    assert_eq!(service.name(), "Echo");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["Get", "Put", "Post", "Expand", "Collect", "Chat"]);
    server.stop().await;
}

#[tokio::test]
async fn v1alpha_lists_the_same_services() {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = Running::echo().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED);
    server.stop().await;
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .reflection(false);
    let server = Running::start(echo_server(config)).await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let status = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    server.stop().await;
}
