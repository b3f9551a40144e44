//! The echo service of `proto/echo/v1/echo.proto`, with knobs for tests
//! and benchmarks.

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::proto::echo::v1::{EchoReply, EchoRequest, echo_server::Echo};

/// Echoes requests; `delay_ms` waits, `fail_with` fails, a message of
/// `"panic"` panics in the handler, and `"panic in stream"` panics in
/// `Expand`'s stream after its first reply.
#[derive(Debug, Clone, Default)]
pub struct EchoService;

fn answer(request: &EchoRequest) -> Result<EchoReply, Status> {
    if request.message == "panic" {
        panic!("the echo handler was asked to panic");
    }
    if request.fail_with != 0 {
        return Err(Status::new(Code::from(request.fail_with), "asked to fail"));
    }
    Ok(EchoReply {
        message: request.message.clone(),
        payload: request.payload.clone(),
    })
}

async fn delayed(request: &EchoRequest) -> Result<EchoReply, Status> {
    if request.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
    }
    answer(request)
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn get(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        delayed(request.get_ref()).await.map(Response::new)
    }

    async fn put(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        delayed(request.get_ref()).await.map(Response::new)
    }

    async fn post(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        delayed(request.get_ref()).await.map(Response::new)
    }

    type ExpandStream = ReplyStream;

    async fn expand(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        let request = request.into_inner();
        let reply = answer(&request)?;
        let count = request.count as usize;
        // "panic in stream" sends one reply, then panics inside the stream.
        let panics = request.message == "panic in stream";
        Ok(Response::new(Box::pin(
            futures_util::stream::repeat(reply)
                .take(count)
                .enumerate()
                .map(move |(i, reply)| {
                    assert!(!(panics && i == 1), "the echo stream was asked to panic");
                    Ok(reply)
                }),
        )))
    }

    async fn collect(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = request.into_inner();
        let mut message = String::new();
        while let Some(item) = stream.next().await {
            message.push_str(&item?.message);
        }
        Ok(Response::new(EchoReply {
            message,
            payload: Vec::new(),
        }))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let stream = request.into_inner();
        Ok(Response::new(Box::pin(
            stream.map(|item| item.and_then(|r| answer(&r))),
        )))
    }
}
