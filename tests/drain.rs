//! The graceful drain: NOT_SERVING first, lame duck, stop accepting, let
//! calls in flight finish within the grace period, exit.

mod common;

use std::{process::Command, sync::Arc, time::Duration};

use common::{GreeterProcess, Running};
use sinew::{
    Server,
    health::{
        ServingStatus,
        proto::{HealthCheckRequest, health_client::HealthClient},
    },
    server::ServerConfig,
};
use sinew_workspace::proto::greeter::v1::{
    HelloReply, HelloRequest,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status};

/// A greeter that reports each call as it enters, then waits to be let go;
/// and reports each call that ends, however it ends (its future dropped).
struct Gate {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
    ended: mpsc::UnboundedSender<()>,
}

/// Reports on `ended` when dropped.
struct Ends(mpsc::UnboundedSender<()>);

impl Drop for Ends {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[tonic::async_trait]
impl Greeter for Gate {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let _ends = Ends(self.ended.clone());
        let _ = self.entered.send(());
        self.release.notified().await;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {}!", request.into_inner().name),
        }))
    }
}

/// A server of [`Gate`]: with the receivers of its calls entering and
/// ending, and what lets them go.
struct Gated {
    server: Server,
    entered: mpsc::UnboundedReceiver<()>,
    ended: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

fn gated(config: ServerConfig) -> Gated {
    let (entered, entered_rx) = mpsc::unbounded_channel();
    let (ended, ended_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = Server::new("gated")
        .config(config)
        .add_service(GreeterServer::new(Gate {
            entered,
            release: release.clone(),
            ended,
        }));
    Gated {
        server,
        entered: entered_rx,
        ended: ended_rx,
        release,
    }
}

#[tokio::test]
async fn in_flight_calls_finish_and_watchers_see_not_serving_first() {
    let config = ServerConfig::new()
        .lame_duck(Duration::from_millis(50))
        .grace_period(Duration::from_secs(30));
    let Gated {
        server,
        mut entered,
        release,
        ..
    } = gated(config);
    let mut running = Running::start(server).await;
    let channel = running.channel().await;

    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "greeter.v1.Greeter".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let mut client = GreeterClient::new(channel);
    let call = tokio::spawn(async move {
        client
            .say_hello(HelloRequest {
                name: "in flight".to_owned(),
            })
            .await
    });
    entered.recv().await.expect("the call reached the handler");

    running.begin_drain();
    let status = watch.message().await.unwrap().unwrap().status();
    assert_eq!(
        status,
        ServingStatus::NotServing,
        "watchers hear of the drain first"
    );
    // After the lame-duck delay the watch stream ends, and the server stops
    // accepting, while the call is still in its handler.
    assert!(watch.message().await.map(|m| m.is_none()).unwrap_or(true));
    assert!(
        !running.task.is_finished(),
        "the server waits for the call in flight"
    );

    release.notify_one();
    let reply = call.await.unwrap().expect("the in-flight call completes");
    assert_eq!(reply.into_inner().message, "Hello, in flight!");
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("the server exits once the call is done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn new_connections_are_refused_once_draining_stops_accepting() {
    let mut running = Running::echo().await;
    let addr = running.addr;
    running.begin_drain();
    tokio::time::timeout(Duration::from_secs(10), &mut running.task)
        .await
        .expect("an idle server drains at once")
        .unwrap()
        .unwrap();
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed after the drain");
}

// On worker threads, as a server runs: a call's task may run on another
// thread than the server's, and still be gone when `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_running_after_the_grace_period_are_abandoned() {
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .grace_period(Duration::from_millis(100));
    let Gated {
        server,
        mut entered,
        mut ended,
        release: _release,
    } = gated(config);
    let mut running = Running::start(server).await;
    let mut client = GreeterClient::new(running.channel().await);
    let call = tokio::spawn(async move {
        client
            .say_hello(HelloRequest {
                name: "stuck".to_owned(),
            })
            .await
    });
    entered.recv().await.unwrap();
    running.begin_drain();
    // The handler is never released: the grace period ends the wait.
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("run returns after the grace period")
        .unwrap()
        .unwrap();
    // The handler is not left running: its future is dropped with the
    // connection, by the time `run` has returned.
    assert!(
        ended.try_recv().is_ok(),
        "the abandoned handler was dropped before run returned"
    );
    // Nothing of the server is left to answer: the call fails rather than
    // hang on a connection no one serves.
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the abandoned call ends")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn sigterm_drains_the_greeter_process_and_it_exits_zero() {
    let greeter = GreeterProcess::start(&[("SINEW_LAME_DUCK", "100ms")]).await;
    let mut client = GreeterClient::connect(format!("http://{}", greeter.addr))
        .await
        .unwrap();
    let reply = client
        .say_hello(HelloRequest {
            name: "process".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "Hello, process!");

    let killed = Command::new("kill")
        .args(["-TERM", &greeter.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, stderr) = exit_of(greeter, "the process exits after SIGTERM").await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
    assert!(stderr.contains("lame duck 100ms: configured"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[tokio::test]
async fn a_second_sigterm_ends_the_drain_at_once() {
    // A drain that would take two minutes.
    let greeter =
        GreeterProcess::start(&[("SINEW_LAME_DUCK", "60s"), ("SINEW_GRACE_PERIOD", "60s")]).await;
    let pid = greeter.child.id().to_string();
    let term = || {
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
    };

    // The first starts the drain: the server reports NOT_SERVING.
    term();
    let mut health = HealthClient::connect(format!("http://{}", greeter.addr))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status());
        if matches!(status, Ok(ServingStatus::NotServing)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drain did not begin: {status:?}"
        );
        tokio::task::yield_now().await;
    }

    // The second ends it: the process exits long before the lame duck.
    term();
    let (status, stderr) = exit_of(greeter, "the second SIGTERM ends the drain").await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

/// Waits (20s at most, else fails with `why`) for the greeter to exit:
/// its exit status and everything it wrote to stderr.
async fn exit_of(mut greeter: GreeterProcess, why: &str) -> (std::process::ExitStatus, String) {
    let mut stderr_pipe = greeter.child.stderr.take().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let status = greeter.child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut stderr_pipe, &mut stderr).unwrap();
        (status, stderr)
    });
    tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect(why)
        .unwrap()
}

/// Sends SIGTERM to the greeter and returns how long after the signal it
/// exited, and its stderr.
async fn terminate(greeter: GreeterProcess) -> (Duration, String) {
    let started = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &greeter.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, stderr) = exit_of(greeter, "the process exits after SIGTERM").await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    (started.elapsed(), stderr)
}

#[tokio::test]
async fn on_a_developers_machine_there_is_no_lame_duck() {
    let greeter = GreeterProcess::start(&[]).await;
    let addr = greeter.addr;
    let (took, stderr) = terminate(greeter).await;
    assert!(
        stderr.contains("no lame duck: no orchestrator detected"),
        "{stderr}"
    );
    // Well under the 5s lame duck: the port is free at once.
    assert!(took < Duration::from_secs(3), "took {took:?}; {stderr}");
    std::net::TcpListener::bind(addr).expect("the port is free again");
}

#[tokio::test]
async fn under_kubernetes_the_lame_duck_is_kept_and_logged() {
    let mut greeter = GreeterProcess::start(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]).await;
    let pid = greeter.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // Half a second in, the process is still in its lame duck (without
    // one it exits within milliseconds: see the test above).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        greeter.child.try_wait().unwrap().is_none(),
        "the process exited without a lame duck"
    );
    // A second signal ends it, rather than waiting the 5s out.
    let (_, stderr) = terminate(greeter).await;
    assert!(
        stderr.contains("lame duck 5s: Kubernetes detected (KUBERNETES_SERVICE_HOST)"),
        "{stderr}"
    );
}
