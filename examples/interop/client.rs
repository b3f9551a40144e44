//! The interop cases, run with sinew's generated clients against any
//! `grpc.testing.TestService`, each as gRPC's interop test descriptions
//! give its procedure and its client's assertions.
//!
//! A Rust caller cancels a call by dropping it, so the two cancellation
//! cases cannot see a `CANCELLED` status of their own: they check that the
//! call was still running when it was dropped. sinew's connection then
//! resets the call's HTTP/2 stream with `CANCEL`, which the server sees as
//! the call cancelled (`sinew-client`'s connection tests check that reset
//! on the wire).

use std::{future::Future, net::SocketAddr, task::Poll, time::Duration};

use futures_util::stream;
use sinew::client::{CallOptions, ClientConfig};
use sinew_workspace::proto::grpc::testing::{
    EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, StreamingInputCallRequest,
    StreamingOutputCallRequest, StreamingOutputCallResponse, TestServiceClient,
    UnimplementedServiceClient,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Request, Status, Streaming,
    metadata::{AsciiMetadataValue, BinaryMetadataValue},
};

/// Every case, in the order `all` runs them.
pub(crate) const CASES: [&str; 14] = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
];

/// How long one case may take before it counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);

const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";
const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";
const ECHO_TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

/// The status message of `special_status_message`: whitespace, and
/// characters in and beyond Unicode's basic plane.
const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";

/// Why a case failed.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self(format!(
            "unexpected status {:?}: {:?}",
            status.code(),
            status.message()
        ))
    }
}

type Outcome = Result<(), Failure>;

/// Fails with `message` unless `condition` holds.
fn ensure(condition: bool, message: impl FnOnce() -> String) -> Outcome {
    if condition {
        Ok(())
    } else {
        Err(Failure(message()))
    }
}

/// The clients the cases call with, to one server.
pub(crate) struct Clients {
    test: TestServiceClient,
    unimplemented: UnimplementedServiceClient,
}

impl Clients {
    /// Clients of the server at `addr`, with sinew's resilience layers on.
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self, sinew::client::ClientError> {
        let endpoint = || ClientConfig::endpoint(format!("http://{addr}"));
        Ok(Self {
            test: TestServiceClient::connect(endpoint()).await?,
            unimplemented: UnimplementedServiceClient::connect(endpoint()).await?,
        })
    }

    /// Runs the case called `name`, within [`CASE_TIMEOUT`].
    pub(crate) async fn run(&self, name: &str) -> Outcome {
        let mut test = self.test.clone();
        let case = async {
            match name {
                "empty_unary" => empty_unary(&mut test).await,
                "large_unary" => large_unary(&mut test).await,
                "client_streaming" => client_streaming(&mut test).await,
                "server_streaming" => server_streaming(&mut test).await,
                "ping_pong" => ping_pong(&mut test).await,
                "empty_stream" => empty_stream(&mut test).await,
                "custom_metadata" => custom_metadata(&mut test).await,
                "status_code_and_message" => status_code_and_message(&mut test).await,
                "special_status_message" => special_status_message(&mut test).await,
                "unimplemented_method" => unimplemented_method(&mut test).await,
                "unimplemented_service" => {
                    unimplemented_service(&mut self.unimplemented.clone()).await
                }
                "cancel_after_begin" => cancel_after_begin(&mut test).await,
                "cancel_after_first_response" => cancel_after_first_response(&mut test).await,
                "timeout_on_sleeping_server" => timeout_on_sleeping_server(&mut test).await,
                other => Err(Failure(format!("no case is called {other:?}"))),
            }
        };
        tokio::time::timeout(CASE_TIMEOUT, case)
            .await
            .unwrap_or_else(|_| Err(Failure(format!("did not finish within {CASE_TIMEOUT:?}"))))
    }
}

fn zeros(size: usize) -> Option<Payload> {
    Some(Payload {
        body: vec![0; size],
        ..Payload::default()
    })
}

fn sizes(size: i32) -> ResponseParameters {
    ResponseParameters {
        size,
        ..ResponseParameters::default()
    }
}

/// A FullDuplexCall request asking for one response of `response` bytes,
/// carrying `payload` bytes.
fn duplex_request(response: i32, payload: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![sizes(response)],
        payload: zeros(payload),
        ..StreamingOutputCallRequest::default()
    }
}

/// The size of a streamed response's payload, checked to be zeros.
fn payload_size(response: &StreamingOutputCallResponse) -> Result<usize, Failure> {
    let body = response.payload.as_ref().map_or(&[][..], |p| &p.body[..]);
    ensure(body.iter().all(|&b| b == 0), || {
        "a response payload is not all zeros".to_owned()
    })?;
    Ok(body.len())
}

/// Every message of a response stream, by payload size.
async fn all_sizes(
    mut responses: Streaming<StreamingOutputCallResponse>,
) -> Result<Vec<usize>, Failure> {
    let mut seen = Vec::new();
    while let Some(response) = responses.message().await? {
        seen.push(payload_size(&response)?);
    }
    Ok(seen)
}

/// A request stream fed by the case, one message at a time.
fn request_channel() -> (
    mpsc::Sender<StreamingOutputCallRequest>,
    ReceiverStream<StreamingOutputCallRequest>,
) {
    let (send, receive) = mpsc::channel(1);
    (send, ReceiverStream::new(receive))
}

async fn empty_unary(client: &mut TestServiceClient) -> Outcome {
    client.empty_call(Empty {}).await?;
    Ok(())
}

async fn large_unary(client: &mut TestServiceClient) -> Outcome {
    let reply = client
        .unary_call(SimpleRequest {
            response_size: 314_159,
            payload: zeros(271_828),
            ..SimpleRequest::default()
        })
        .await?
        .into_inner();
    let body = reply.payload.map(|p| p.body).unwrap_or_default();
    ensure(body.len() == 314_159, || {
        format!("response payload of {} bytes, not 314159", body.len())
    })?;
    ensure(body.iter().all(|&b| b == 0), || {
        "response payload is not all zeros".to_owned()
    })
}

async fn client_streaming(client: &mut TestServiceClient) -> Outcome {
    let requests = [27_182, 8, 1_828, 45_904].map(|size| StreamingInputCallRequest {
        payload: zeros(size),
        ..StreamingInputCallRequest::default()
    });
    let reply = client
        .streaming_input_call(stream::iter(requests))
        .await?
        .into_inner();
    ensure(reply.aggregated_payload_size == 74_922, || {
        format!(
            "aggregated_payload_size {}, not 74922",
            reply.aggregated_payload_size
        )
    })
}

async fn server_streaming(client: &mut TestServiceClient) -> Outcome {
    let request = StreamingOutputCallRequest {
        response_parameters: [31_415, 9, 2_653, 58_979].map(sizes).to_vec(),
        ..StreamingOutputCallRequest::default()
    };
    let responses = client.streaming_output_call(request).await?.into_inner();
    let seen = all_sizes(responses).await?;
    ensure(seen == [31_415, 9, 2_653, 58_979], || {
        format!("response sizes {seen:?}")
    })
}

async fn ping_pong(client: &mut TestServiceClient) -> Outcome {
    let exchanges = [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)];
    let (send, requests) = request_channel();
    let (first_response, first_payload) = exchanges[0];
    send.send(duplex_request(first_response, first_payload))
        .await
        .map_err(|_| Failure("the request stream closed".to_owned()))?;
    let mut responses = client.full_duplex_call(requests).await?.into_inner();
    for (i, &(response_size, payload)) in exchanges.iter().enumerate() {
        if i > 0 {
            send.send(duplex_request(response_size, payload))
                .await
                .map_err(|_| Failure("the request stream closed".to_owned()))?;
        }
        let response = responses
            .message()
            .await?
            .ok_or_else(|| Failure(format!("the stream ended after {i} responses")))?;
        let size = payload_size(&response)?;
        ensure(size == response_size as usize, || {
            format!("response {i} has {size} bytes, not {response_size}")
        })?;
    }
    // Half-close; the call ends with OK and no more responses.
    drop(send);
    let rest = all_sizes(responses).await?;
    ensure(rest.is_empty(), || {
        format!("{} responses more than four", rest.len())
    })
}

async fn empty_stream(client: &mut TestServiceClient) -> Outcome {
    let responses = client
        .full_duplex_call(stream::empty::<StreamingOutputCallRequest>())
        .await?
        .into_inner();
    let seen = all_sizes(responses).await?;
    ensure(seen.is_empty(), || {
        format!("{} responses, not none", seen.len())
    })
}

/// Adds the metadata `custom_metadata` asks the server to echo.
fn with_echo_metadata<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        ECHO_INITIAL,
        AsciiMetadataValue::from_static(ECHO_INITIAL_VALUE),
    );
    request.metadata_mut().insert_bin(
        ECHO_TRAILING,
        BinaryMetadataValue::from_bytes(&ECHO_TRAILING_VALUE),
    );
    request
}

fn check_initial(metadata: &tonic::metadata::MetadataMap, call: &str) -> Outcome {
    let initial = metadata.get(ECHO_INITIAL);
    ensure(initial.is_some_and(|v| v == ECHO_INITIAL_VALUE), || {
        format!("{call}: initial metadata {ECHO_INITIAL} is {initial:?}")
    })
}

fn check_trailing(metadata: &tonic::metadata::MetadataMap, call: &str) -> Outcome {
    let trailing = metadata.get_bin(ECHO_TRAILING).map(|v| v.to_bytes());
    ensure(
        matches!(&trailing, Some(Ok(bytes)) if bytes[..] == ECHO_TRAILING_VALUE),
        || format!("{call}: trailing metadata {ECHO_TRAILING} is {trailing:?}"),
    )
}

async fn custom_metadata(client: &mut TestServiceClient) -> Outcome {
    // Unary: tonic merges a unary response's trailers into its metadata.
    let reply = client
        .unary_call(with_echo_metadata(SimpleRequest {
            response_size: 314_159,
            payload: zeros(271_828),
            ..SimpleRequest::default()
        }))
        .await?;
    check_initial(reply.metadata(), "UnaryCall")?;
    check_trailing(reply.metadata(), "UnaryCall")?;

    // Streaming: the headers and the trailers apart.
    let request = StreamingOutputCallRequest {
        response_parameters: vec![sizes(314_159)],
        payload: zeros(271_828),
        ..StreamingOutputCallRequest::default()
    };
    let response = client
        .full_duplex_call(with_echo_metadata(stream::iter([request])))
        .await?;
    check_initial(response.metadata(), "FullDuplexCall")?;
    ensure(response.metadata().get_bin(ECHO_TRAILING).is_none(), || {
        format!("FullDuplexCall: {ECHO_TRAILING} came in the initial metadata")
    })?;
    let mut responses = response.into_inner();
    let mut seen = Vec::new();
    while let Some(response) = responses.message().await? {
        seen.push(payload_size(&response)?);
    }
    ensure(seen == [314_159], || {
        format!("FullDuplexCall: response sizes {seen:?}")
    })?;
    let trailers = responses
        .trailers()
        .await?
        .ok_or_else(|| Failure("FullDuplexCall: no trailers".to_owned()))?;
    check_trailing(&trailers, "FullDuplexCall")
}

/// Checks that `result` failed with `code` and `message`.
fn expect_status<T>(result: Result<T, Status>, code: Code, message: &str, call: &str) -> Outcome {
    match result {
        Ok(_) => Err(Failure(format!("{call}: succeeded; expected {code:?}"))),
        Err(status) => ensure(status.code() == code && status.message() == message, || {
            format!(
                "{call}: got {:?} {:?}; expected {code:?} {message:?}",
                status.code(),
                status.message()
            )
        }),
    }
}

async fn status_code_and_message(client: &mut TestServiceClient) -> Outcome {
    let message = "test status message";
    let echo_status = || {
        Some(EchoStatus {
            code: 2,
            message: message.to_owned(),
        })
    };
    let unary = client
        .unary_call(SimpleRequest {
            response_status: echo_status(),
            ..SimpleRequest::default()
        })
        .await;
    expect_status(unary, Code::Unknown, message, "UnaryCall")?;

    let request = StreamingOutputCallRequest {
        response_status: echo_status(),
        ..StreamingOutputCallRequest::default()
    };
    // The status may come at once (trailers-only) or end the stream.
    let duplex = async {
        let mut responses = client
            .full_duplex_call(stream::iter([request]))
            .await?
            .into_inner();
        while responses.message().await?.is_some() {}
        Ok::<_, Status>(())
    }
    .await;
    expect_status(duplex, Code::Unknown, message, "FullDuplexCall")
}

async fn special_status_message(client: &mut TestServiceClient) -> Outcome {
    let unary = client
        .unary_call(SimpleRequest {
            response_status: Some(EchoStatus {
                code: 2,
                message: SPECIAL_MESSAGE.to_owned(),
            }),
            ..SimpleRequest::default()
        })
        .await;
    expect_status(unary, Code::Unknown, SPECIAL_MESSAGE, "UnaryCall")
}

/// Checks that `result` failed with `UNIMPLEMENTED`, whatever its message.
fn expect_unimplemented<T>(result: Result<T, Status>, call: &str) -> Outcome {
    match result {
        Ok(_) => Err(Failure(format!(
            "{call}: succeeded; expected Unimplemented"
        ))),
        Err(status) => ensure(status.code() == Code::Unimplemented, || {
            format!("{call}: got {:?}; expected Unimplemented", status.code())
        }),
    }
}

async fn unimplemented_method(client: &mut TestServiceClient) -> Outcome {
    let result = client.unimplemented_call(Empty {}).await;
    expect_unimplemented(result, "TestService/UnimplementedCall")
}

async fn unimplemented_service(client: &mut UnimplementedServiceClient) -> Outcome {
    let result = client.unimplemented_call(Empty {}).await;
    expect_unimplemented(result, "UnimplementedService/UnimplementedCall")
}

/// Runs `call` until `begun` fires, then drops it: the call is cancelled
/// (its stream reset). Fails if the call ends first.
async fn cancel_when<T>(
    call: impl Future<Output = Result<T, Status>>,
    begun: impl Future<Output = ()>,
) -> Outcome {
    tokio::select! {
        ended = call => Err(match ended {
            Ok(_) => Failure("the call succeeded before it was cancelled".to_owned()),
            Err(status) => Failure(format!(
                "the call ended with {:?} before it was cancelled",
                status.code()
            )),
        }),
        () = begun => Ok(()),
    }
}

async fn cancel_after_begin(client: &mut TestServiceClient) -> Outcome {
    // A request stream that sends nothing, and says when the call first
    // asks it for a message: the request's headers are on their way.
    let (started, begun) = oneshot::channel::<()>();
    let mut started = Some(started);
    let requests = stream::poll_fn(move |_| {
        if let Some(started) = started.take() {
            let _ = started.send(());
        }
        Poll::<Option<StreamingInputCallRequest>>::Pending
    });
    let call = client.streaming_input_call(requests);
    cancel_when(call, async {
        let _ = begun.await;
    })
    .await
}

async fn cancel_after_first_response(client: &mut TestServiceClient) -> Outcome {
    let (send, requests) = request_channel();
    send.send(duplex_request(31_415, 27_182))
        .await
        .map_err(|_| Failure("the request stream closed".to_owned()))?;
    let call = async {
        let mut responses = client.full_duplex_call(requests).await?.into_inner();
        let first = responses.message().await?;
        Ok::<_, Status>((first, responses))
    };
    let (first, responses) = call.await?;
    let first = first.ok_or_else(|| Failure("the stream ended with no response".to_owned()))?;
    let size = payload_size(&first)?;
    ensure(size == 31_415, || {
        format!("first response has {size} bytes")
    })?;
    // Cancel: drop the call while its request stream is still open (the
    // stream is reset with CANCEL, not half-closed).
    drop(responses);
    drop(send);
    Ok(())
}

async fn timeout_on_sleeping_server(client: &mut TestServiceClient) -> Outcome {
    let (send, requests) = request_channel();
    send.send(StreamingOutputCallRequest {
        payload: zeros(27_182),
        ..StreamingOutputCallRequest::default()
    })
    .await
    .map_err(|_| Failure("the request stream closed".to_owned()))?;
    let mut request = Request::new(requests);
    CallOptions::timeout(Duration::from_millis(1)).apply(&mut request);
    let outcome = async {
        let mut responses = client.full_duplex_call(request).await?.into_inner();
        while responses.message().await?.is_some() {}
        Ok::<_, Status>(())
    }
    .await;
    // The request stream stays open until the call has ended.
    drop(send);
    match outcome {
        Ok(()) => Err(Failure(
            "the call succeeded; expected DeadlineExceeded".to_owned(),
        )),
        Err(status) => ensure(status.code() == Code::DeadlineExceeded, || {
            format!("got {:?}; expected DeadlineExceeded", status.code())
        }),
    }
}
