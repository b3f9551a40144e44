//! `grpc.testing.TestService`, as gRPC's interop test descriptions ask a
//! server to implement it ("Server features"): sized payloads, echoed
//! status, echoed metadata, and response intervals.

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt as _, stream};
use sinew::server::TrailingMetadata;
use sinew_workspace::proto::grpc::testing::{
    EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse, test_service_server::TestService,
};
use tonic::{
    Code, Request, Response, Status, Streaming,
    metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataMap},
};

/// The metadata a caller sends to have it echoed as initial metadata.
const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// The metadata a caller sends to have it echoed as trailing metadata.
const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// The most requests HalfDuplexCall holds before it answers: beyond it,
/// `RESOURCE_EXHAUSTED`.
const HALF_DUPLEX_MAX_REQUESTS: usize = 1024;

/// The interop test service.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tester;

/// A stream of responses, as the streaming methods return.
type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send>>;

/// What a call asked to have echoed back ("Echo Metadata").
#[derive(Debug, Clone, Default)]
struct Echo {
    initial: Option<AsciiMetadataValue>,
    trailing: Option<BinaryMetadataValue>,
}

impl Echo {
    fn of(metadata: &MetadataMap) -> Self {
        Self {
            initial: metadata.get(ECHO_INITIAL).cloned(),
            trailing: metadata.get_bin(ECHO_TRAILING).cloned(),
        }
    }

    /// `message`, with the echoed metadata: the initial in its headers,
    /// the trailing in its trailers.
    fn respond<T>(self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Some(value) = self.initial {
            response.metadata_mut().insert(ECHO_INITIAL, value);
        }
        if let Some(value) = self.trailing {
            TrailingMetadata::of(&mut response).insert_bin(ECHO_TRAILING, value);
        }
        response
    }

    /// `status`, carrying the echoed metadata (a failure's headers and
    /// trailers are one block).
    fn fail(self, mut status: Status) -> Status {
        if let Some(value) = self.initial {
            status.metadata_mut().insert(ECHO_INITIAL, value);
        }
        if let Some(value) = self.trailing {
            status.metadata_mut().insert_bin(ECHO_TRAILING, value);
        }
        status
    }
}

/// A payload of `size` zeros.
fn payload(size: i32) -> Result<Payload, Status> {
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative payload size {size}")))?;
    Ok(Payload {
        r#type: PayloadType::Compressable.into(),
        body: vec![0; size],
    })
}

/// The status a request asks to end with ("Echo Status"), if any.
fn requested_status(status: Option<&EchoStatus>) -> Option<Status> {
    status
        .filter(|status| status.code != 0)
        .map(|status| Status::new(Code::from(status.code), status.message.clone()))
}

/// The responses to a stream of requests: for each request, one response
/// per `response_parameters`, each after its `interval_us`; a request with
/// a `response_status` ends the stream with it.
fn responses<S>(requests: S) -> ResponseStream
where
    S: Stream<Item = Result<StreamingOutputCallRequest, Status>> + Send + Unpin + 'static,
{
    struct State<S> {
        requests: S,
        pending: std::vec::IntoIter<ResponseParameters>,
        done: bool,
    }
    let state = State {
        requests,
        pending: Vec::new().into_iter(),
        done: false,
    };
    Box::pin(stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            if let Some(parameters) = state.pending.next() {
                let interval = u64::try_from(parameters.interval_us).unwrap_or(0);
                if interval > 0 {
                    tokio::time::sleep(Duration::from_micros(interval)).await;
                }
                let reply = payload(parameters.size).map(|payload| StreamingOutputCallResponse {
                    payload: Some(payload),
                });
                state.done = reply.is_err();
                return Some((reply, state));
            }
            let request = match state.requests.next().await? {
                Ok(request) => request,
                Err(status) => {
                    state.done = true;
                    return Some((Err(status), state));
                }
            };
            if let Some(status) = requested_status(request.response_status.as_ref()) {
                state.done = true;
                return Some((Err(status), state));
            }
            state.pending = request.response_parameters.into_iter();
        }
    }))
}

#[tonic::async_trait]
impl TestService for Tester {
    async fn empty_call(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Echo::of(request.metadata()).respond(Empty {}))
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let echo = Echo::of(request.metadata());
        let request = request.into_inner();
        if let Some(status) = requested_status(request.response_status.as_ref()) {
            return Err(echo.fail(status));
        }
        let payload = payload(request.response_size)?;
        Ok(echo.respond(SimpleResponse {
            payload: Some(payload),
            ..SimpleResponse::default()
        }))
    }

    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        self.unary_call(request).await
    }

    type StreamingOutputCallStream = ResponseStream;

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<Self::StreamingOutputCallStream>, Status> {
        let echo = Echo::of(request.metadata());
        let request = request.into_inner();
        Ok(echo.respond(responses(stream::iter([Ok(request)]))))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let echo = Echo::of(request.metadata());
        let mut requests = request.into_inner();
        let mut size = 0usize;
        while let Some(request) = requests.message().await? {
            size += request.payload.map_or(0, |payload| payload.body.len());
        }
        let aggregated_payload_size = i32::try_from(size)
            .map_err(|_| Status::out_of_range("aggregated payload size over 2 GiB"))?;
        Ok(echo.respond(StreamingInputCallResponse {
            aggregated_payload_size,
        }))
    }

    type FullDuplexCallStream = ResponseStream;

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::FullDuplexCallStream>, Status> {
        let echo = Echo::of(request.metadata());
        Ok(echo.respond(responses(request.into_inner())))
    }

    type HalfDuplexCallStream = ResponseStream;

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::HalfDuplexCallStream>, Status> {
        let echo = Echo::of(request.metadata());
        let mut requests = request.into_inner();
        let mut buffered = Vec::new();
        while let Some(request) = requests.message().await? {
            if buffered.len() == HALF_DUPLEX_MAX_REQUESTS {
                return Err(echo.fail(Status::resource_exhausted(format!(
                    "HalfDuplexCall holds at most {HALF_DUPLEX_MAX_REQUESTS} requests"
                ))));
            }
            buffered.push(Ok(request));
        }
        Ok(echo.respond(responses(stream::iter(buffered))))
    }

    /// Not implemented, as the contract says of it.
    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is not implemented",
        ))
    }
}
