//! The smallest sinew service: the `greeter.v1.Greeter` contract served on
//! the scaffold, and a client that calls it.
//!
//! Run with:
//!
//! - `cargo run --example greeter`: serves on a free port, calls the
//!   service, prints the reply and the health status, drains, and exits 0.
//! - `cargo run --example greeter -- server [--addr 127.0.0.1:50051]`:
//!   serves until SIGTERM or Ctrl-C, then drains.
//! - `cargo run --example greeter -- client [--addr 127.0.0.1:50051] [--name NAME]`:
//!   calls a running server and prints the reply.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set (say `http://localhost:4317`),
//! the server and the client export their spans and metrics; a collector
//! shows the client's call and the server's handling as one trace. The
//! server flushes on drain, the client before it exits.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program talks to its user"
)]

use std::{net::SocketAddr, process::ExitCode};

use sinew::{
    Server,
    client::ClientConfig,
    health::proto::{HealthCheckRequest, HealthClient},
    server::ServerConfig,
};
use sinew_workspace::proto::greeter::v1::{
    GreeterClient, HelloReply, HelloRequest,
    greeter_server::{Greeter, GreeterServer},
};
use tonic::{Request, Response, Status};

/// The service: greets whoever asks.
struct Greetings;

#[tonic::async_trait]
impl Greeter for Greetings {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        }))
    }
}

/// The scaffold hosting the service, with code-level settings on top of the
/// environment's.
fn server(config: ServerConfig) -> Server {
    Server::new("greeter")
        .config(config)
        .add_service(GreeterServer::new(Greetings))
}

/// Calls the service at `addr` with the generated client, which comes with
/// deadlines, retries, a circuit breaker, a bulkhead and load balancing
/// on, and prints the reply.
async fn call(addr: SocketAddr, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut client =
        GreeterClient::connect(ClientConfig::endpoint(format!("http://{addr}"))).await?;
    let reply = client
        .say_hello(HelloRequest {
            name: name.to_owned(),
        })
        .await?;
    println!("{}", reply.into_inner().message);
    Ok(())
}

/// Prints the server's overall health.
async fn print_health(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut health =
        HealthClient::connect(ClientConfig::endpoint(format!("http://{addr}"))).await?;
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    println!("health: {}", status.as_str_name());
    Ok(())
}

/// Serve, call, print, drain: the whole round trip in one process.
async fn demo(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Nobody balances load in front of this demo: no lame-duck wait.
    let config = ServerConfig::new().lame_duck(std::time::Duration::ZERO);
    let running = tokio::spawn(server(config).serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    println!("serving greeter.v1.Greeter on {addr}");

    call(addr, name).await?;
    print_health(addr).await?;

    let _ = stop.send(());
    running.await??;
    println!("drained; bye");
    Ok(())
}

struct Args {
    mode: Option<String>,
    addr: Option<SocketAddr>,
    name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: None,
        addr: None,
        name: "sinew".to_owned(),
    };
    let mut rest = std::env::args().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--addr" => {
                let value = rest.next().ok_or("--addr needs a value")?;
                args.addr = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--addr {value:?}: {e}"))?,
                );
            }
            "--name" => args.name = rest.next().ok_or("--name needs a value")?,
            "server" | "client" if args.mode.is_none() => args.mode = Some(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\nusage: greeter [server|client] [--addr HOST:PORT] [--name NAME]");
            return ExitCode::from(2);
        }
    };
    // Traces, metrics and logs, from the standard OTEL_* variables.
    let service = match args.mode.as_deref() {
        Some("client") => "greeter-client",
        _ => "greeter",
    };
    let telemetry = match sinew::telemetry::init(service) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let default_addr = SocketAddr::from(([127, 0, 0, 1], 50051));
    let result = match args.mode.as_deref() {
        Some("server") => {
            let mut config = ServerConfig::new();
            if let Some(addr) = args.addr {
                config = config.addr(addr);
            }
            server(config).run().await.map_err(Into::into)
        }
        Some("client") => call(args.addr.unwrap_or(default_addr), &args.name).await,
        _ => demo(&args.name).await,
    };
    if let Err(e) = telemetry.shutdown().await {
        eprintln!("telemetry: {e}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
