//! Deadlines across hops: a handler's outgoing calls inherit what is left
//! of its incoming deadline, less a headroom, with no code from the user;
//! a call whose budget is spent fails locally without touching the network;
//! a call of any kind (streams included) ends at its deadline on the server.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Running, Unary, UnaryEcho, echo, echo_client};
use sinew::{
    Server,
    client::{CallOptions, DeadlineSpent},
    server::ServerConfig,
};
use sinew_workspace::proto::echo::v1::{
    EchoClient, EchoReply, EchoRequest,
    echo_client::EchoClient as RawEchoClient,
    echo_server::{Echo, EchoServer},
};
use tonic::{Code, Request, Response, Status, Streaming, transport::Channel};

/// A hop: records the `grpc-timeout` it was called with, waits
/// `delay_ms`, then calls the next hop (if any) with sinew's client.
#[derive(Clone)]
struct Hop {
    next: Option<EchoClient>,
    seen: Arc<Mutex<Vec<Duration>>>,
    /// For each failed outgoing call: was it refused locally because the
    /// budget was spent?
    spent: Arc<Mutex<Vec<bool>>>,
}

fn parse_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap();
    match unit {
        "n" => Duration::from_nanos(n),
        "u" => Duration::from_micros(n),
        "m" => Duration::from_millis(n),
        "S" => Duration::from_secs(n),
        other => panic!("unit {other}"),
    }
}

#[tonic::async_trait]
impl Unary for Hop {
    async fn unary(
        &self,
        _method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| parse_timeout(v.to_str().unwrap()))
            .expect("every hop is called with a deadline");
        self.seen.lock().unwrap().push(timeout);
        let request = request.into_inner();
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        }
        match &self.next {
            // The next call carries no timeout of its own beyond the
            // client's default: its deadline comes from this call's.
            Some(next) => {
                let result = next
                    .clone()
                    .put(EchoRequest {
                        delay_ms: 0,
                        ..request
                    })
                    .await;
                if let Err(status) = &result {
                    let spent = sinew::client::cause::<DeadlineSpent>(status).is_some();
                    self.spent.lock().unwrap().push(spent);
                }
                result
            }
            None => Ok(Response::new(EchoReply {
                message: request.message,
                payload: Vec::new(),
            })),
        }
    }
}

struct Started {
    server: Running,
    seen: Arc<Mutex<Vec<Duration>>>,
    spent: Arc<Mutex<Vec<bool>>>,
}

/// A hop whose client to `next` keeps `headroom` of inherited deadlines.
async fn hop(next: Option<SocketAddr>, headroom: Duration) -> Started {
    let next = match next {
        Some(addr) => Some(
            echo_client(&[addr], |c| {
                c.timeout(Duration::from_secs(60)).headroom(headroom)
            })
            .await,
        ),
        None => None,
    };
    let (seen, spent) = (Arc::default(), Arc::default());
    let server = Server::new("hop")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(EchoServer::new(UnaryEcho(Hop {
            next,
            seen: Arc::clone(&seen),
            spent: Arc::clone(&spent),
        })));
    Started {
        server: Running::start(server).await,
        seen,
        spent,
    }
}

fn first(seen: &Arc<Mutex<Vec<Duration>>>) -> Duration {
    seen.lock().unwrap()[0]
}

#[tokio::test]
async fn the_budget_shrinks_across_three_hops() {
    let headroom = Duration::from_millis(5);
    let c = hop(None, headroom).await;
    let b = hop(Some(c.server.addr), headroom).await;
    let a = hop(Some(b.server.addr), headroom).await;

    let mut client = echo_client(&[a.server.addr], |c| c).await;
    let mut request = Request::new(EchoRequest {
        message: "through".to_owned(),
        delay_ms: 20,
        ..Default::default()
    });
    CallOptions::timeout(Duration::from_secs(2)).apply(&mut request);
    let reply = client.put(request).await.unwrap();
    assert_eq!(reply.into_inner().message, "through");

    let (ta, tb, tc) = (first(&a.seen), first(&b.seen), first(&c.seen));
    assert!(
        ta <= Duration::from_secs(2),
        "A got at most the caller's 2s: {ta:?}"
    );
    // B's budget is A's, less A's 20ms of work and the 5ms headroom; the
    // 60s default of A's client never applies.
    assert!(
        tb + Duration::from_millis(25) <= ta,
        "A {ta:?} then B {tb:?}"
    );
    assert!(
        tc + Duration::from_millis(5) <= tb,
        "B {tb:?} then C {tc:?}"
    );
    for hop in [a, b, c] {
        hop.server.stop().await;
    }
}

#[tokio::test]
async fn a_spent_budget_fails_locally_without_calling_the_next_hop() {
    let c = hop(None, Duration::from_millis(5)).await;
    // B keeps 1.5s of headroom: after 2s of work on a 3s budget it has
    // about 1s left, less than its headroom, well before its own server
    // would give up on the call. The margins are wide so that a loaded
    // machine oversleeping the work by up to a second changes nothing.
    let b = hop(Some(c.server.addr), Duration::from_millis(1500)).await;

    let mut client = echo_client(&[b.server.addr], |c| c).await;
    let mut request = Request::new(EchoRequest {
        message: "late".to_owned(),
        delay_ms: 2000,
        ..Default::default()
    });
    CallOptions::timeout(Duration::from_secs(3)).apply(&mut request);
    let status = client.put(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    assert_eq!(
        *b.spent.lock().unwrap(),
        [true],
        "B's call was refused as spent"
    );
    assert!(c.seen.lock().unwrap().is_empty(), "C was never called");
    for hop in [b, c] {
        hop.server.stop().await;
    }
}

#[tokio::test]
async fn the_contract_timeout_applies_when_the_caller_sets_none() {
    let c = hop(None, Duration::from_millis(5)).await;
    let mut client = echo_client(&[c.server.addr], |c| c).await;
    client.get(echo("contract")).await.unwrap();
    let timeout = first(&c.seen);
    // Get's contract says 250ms.
    // Not the client's default (far longer); the lower bound leaves the
    // call 150ms to reach C on a loaded host.
    assert!(
        timeout <= Duration::from_millis(250) && timeout > Duration::from_millis(100),
        "{timeout:?}"
    );
    c.server.stop().await;
}

/// An echo service whose streams never end by themselves: `Expand`
/// replies every 20ms for ever, `Collect` and `Chat` read their request
/// stream until the caller ends it.
#[derive(Clone, Copy)]
struct Endless;

type Replies =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Endless {
    async fn get(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    async fn put(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    async fn post(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    type ExpandStream = Replies;

    async fn expand(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        let message = request.into_inner().message;
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
            Duration::from_millis(20),
        ));
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            ticks,
            move |_| {
                Ok(EchoReply {
                    message: message.clone(),
                    payload: Vec::new(),
                })
            },
        ))))
    }

    async fn collect(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = request.into_inner();
        let mut message = String::new();
        while let Some(item) = stream.message().await? {
            message.push_str(&item.message);
        }
        Ok(Response::new(EchoReply {
            message,
            payload: Vec::new(),
        }))
    }

    type ChatStream = Replies;

    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let stream = request.into_inner();
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            stream,
            |item| {
                item.map(|request| EchoReply {
                    message: request.message,
                    payload: Vec::new(),
                })
            },
        ))))
    }
}

/// The endless service on a scaffold whose ceiling is `request_timeout`,
/// and a plain tonic client of it (which bounds no stream: only the
/// server ends these calls).
async fn endless(request_timeout: Duration) -> (Running, RawEchoClient<Channel>) {
    let server = Running::start(
        Server::new("endless")
            .config(
                ServerConfig::new()
                    .lame_duck(Duration::ZERO)
                    .grace_period(Duration::from_secs(1))
                    .request_timeout(request_timeout),
            )
            .add_service(EchoServer::new(Endless)),
    )
    .await;
    let client = RawEchoClient::new(server.channel().await);
    (server, client)
}

/// Waits at most 10s (a bound for a test that would otherwise hang) for
/// the stream's next message or error.
async fn next<T>(stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends by the deadline, not never")
}

/// A request stream that stays open until the sender is dropped.
fn held_open() -> (
    tokio::sync::mpsc::Sender<EchoRequest>,
    tokio_stream::wrappers::ReceiverStream<EchoRequest>,
) {
    let (send, receive) = tokio::sync::mpsc::channel(4);
    (send, tokio_stream::wrappers::ReceiverStream::new(receive))
}

#[tokio::test]
async fn a_response_stream_still_running_at_the_ceiling_ends_with_deadline_exceeded() {
    let (server, mut client) = endless(Duration::from_millis(300)).await;
    let start = Instant::now();
    let mut stream = client.expand(echo("tick")).await.unwrap().into_inner();
    let mut replies = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => replies += 1,
                Ok(None) => panic!("the stream ended OK after {replies} replies"),
                Err(status) => break status,
            }
        }
    });
    let status = ended
        .await
        .expect("the stream ends by the deadline, not never");
    let took = start.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(replies > 0, "the stream ran until the deadline");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "ended after {took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bidirectional_stream_ends_at_the_callers_grpc_timeout() {
    // The ceiling is far; the caller's 300ms deadline ends the call.
    let (server, mut client) = endless(Duration::from_secs(60)).await;
    let (send, requests) = held_open();
    send.send(echo("hello")).await.unwrap();
    let mut request = Request::new(requests);
    request.set_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let mut replies = client.chat(request).await.unwrap().into_inner();
    let first = next(&mut replies).await.unwrap().expect("an echo");
    assert_eq!(first.message, "hello");
    // The request stream stays open; the handler would echo for ever.
    let status = next(&mut replies).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "ended after {took:?}"
    );
    // The handler's stream was dropped with the call: the request stream
    // it read is closed.
    tokio::time::timeout(Duration::from_secs(5), send.closed())
        .await
        .expect("the server let go of the request stream");
    server.stop().await;
}

#[tokio::test]
async fn a_request_stream_still_open_at_the_ceiling_fails_with_deadline_exceeded() {
    let (server, mut client) = endless(Duration::from_millis(300)).await;
    let (send, requests) = held_open();
    send.send(echo("part")).await.unwrap();
    let start = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), client.collect(requests))
        .await
        .expect("the call ends by the deadline, not never")
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "ended after {took:?}"
    );
    drop(send);
    server.stop().await;
}
