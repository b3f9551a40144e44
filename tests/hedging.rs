//! Hedging through the generated client: a method the contract marks
//! NO_SIDE_EFFECTS and hedges sends another copy when the first is slow,
//! and the fast copy wins.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Running, Unary, UnaryEcho, echo_client};
use sinew::{Server, server::ServerConfig};
use sinew_workspace::proto::echo::v1::{EchoReply, EchoRequest, echo_server::EchoServer};
use tonic::{Request, Response, Status};

/// The first copy of each call is slow; later copies answer at once, saying
/// which copy they were.
#[derive(Clone, Default)]
struct SlowFirstCopy {
    copies: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Unary for SlowFirstCopy {
    async fn unary(
        &self,
        _method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        let previous = request
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .map(|v| v.to_str().unwrap().to_owned());
        self.copies.lock().unwrap().push(previous.clone());
        if previous.is_none() {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok(Response::new(EchoReply {
            message: format!("copy after {}", previous.unwrap_or_else(|| "0".to_owned())),
            payload: Vec::new(),
        }))
    }
}

async fn start() -> (Running, SlowFirstCopy) {
    let service = SlowFirstCopy::default();
    let server = Server::new("hedging")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(EchoServer::new(UnaryEcho(service.clone())));
    (Running::start(server).await, service)
}

fn request() -> EchoRequest {
    EchoRequest {
        message: "hedge".to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_fast_copy_wins() {
    let (server, service) = start().await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    // Get is NO_SIDE_EFFECTS and hedged by its contract: 3 copies, 20ms
    // apart, within its 250ms timeout.
    let reply = client
        .get(request())
        .await
        .expect("the second copy answers");
    // A hedged copy answers, not the slow first one: usually the second,
    // the third if the host stalled the second's answer past 20ms.
    let message = reply.into_inner().message;
    assert!(
        message == "copy after 1" || message == "copy after 2",
        "{message}"
    );
    let copies = service.copies.lock().unwrap().clone();
    assert_eq!(copies[..2], [None, Some("1".to_owned())]);
    assert!(copies.len() <= 3);
    server.stop().await;
}

#[tokio::test]
async fn methods_that_are_not_free_of_side_effects_are_never_hedged() {
    let (server, service) = start().await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    let mut request = Request::new(request());
    // Put (IDEMPOTENT) is slow on its only copy and times out; had it been
    // hedged like Get, copies 20ms apart would have reached the server.
    sinew::client::CallOptions::timeout(Duration::from_secs(1)).apply(&mut request);
    let status = client.put(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    // The first copy may be recorded after the deadline on a stalled host.
    let recorded = async {
        while service.copies.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), recorded)
        .await
        .expect("the call reaches the server");
    assert_eq!(*service.copies.lock().unwrap(), [None]);
    server.stop().await;
}
