//! gRPC's official interop test service, `grpc.testing.TestService`, served
//! on sinew's scaffold; and the interop cases, run with sinew's generated
//! clients against any server of it (sinew's, grpcio's, grpc-go's...).
//!
//! The contracts are gRPC's own, under `proto/grpc/testing/`; the service
//! is written as any sinew service is (`server.rs`), and the cases follow
//! gRPC's interop test descriptions (`client.rs`).
//!
//! Run with:
//!
//! - `cargo run --example interop -- server [--port 10000 | --addr 127.0.0.1:10000]`:
//!   serves `grpc.testing.TestService` until SIGTERM or Ctrl-C, then
//!   drains. (`UnimplementedService` is, as its name says, not served.)
//! - `cargo run --example interop -- client [--addr 127.0.0.1:10000] [--case all|NAME[,NAME...]]`:
//!   runs the cases against a running server, prints `case NAME: ok` or
//!   `case NAME: FAILED: why` for each, and exits 1 if any failed. The
//!   cases: empty_unary, large_unary, client_streaming, server_streaming,
//!   ping_pong, empty_stream, custom_metadata, status_code_and_message,
//!   special_status_message, unimplemented_method, unimplemented_service,
//!   cancel_after_begin, cancel_after_first_response,
//!   timeout_on_sleeping_server.
//!
//! `tests/interop_suite.rs` runs them both ways against Python's grpcio.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program talks to its user"
)]

mod client;
mod server;

use std::{net::SocketAddr, process::ExitCode};

use sinew::{Server, server::ServerConfig};
use sinew_workspace::proto::grpc::testing::test_service_server::TestServiceServer;

/// What to do, from the command line.
struct Args {
    mode: Option<String>,
    addr: Option<SocketAddr>,
    cases: Vec<String>,
}

const USAGE: &str = "usage: interop server [--port PORT | --addr HOST:PORT]\n       \
                     interop client [--addr HOST:PORT] [--case all|NAME[,NAME...]]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: None,
        addr: None,
        cases: Vec::new(),
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
            "--port" => {
                let value = rest.next().ok_or("--port needs a value")?;
                let port: u16 = value
                    .parse()
                    .map_err(|e| format!("--port {value:?}: {e}"))?;
                args.addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            "--case" => {
                let value = rest.next().ok_or("--case needs a value")?;
                args.cases.extend(value.split(',').map(str::to_owned));
            }
            "server" | "client" if args.mode.is_none() => args.mode = Some(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(args)
}

/// Serves the test service until SIGTERM or Ctrl-C.
async fn serve(addr: SocketAddr) -> Result<(), sinew::server::ServerError> {
    Server::new("interop")
        .config(ServerConfig::new().addr(addr))
        .add_service(TestServiceServer::new(server::Tester))
        .run()
        .await
}

/// Runs `cases` (all of them for none, or `all`) against the server at
/// `addr`; whether every one passed.
async fn run_cases(addr: SocketAddr, cases: &[String]) -> Result<bool, String> {
    let names: Vec<&str> = if cases.is_empty() || cases.iter().any(|c| c == "all") {
        client::CASES.to_vec()
    } else {
        cases.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = names.iter().find(|name| !client::CASES.contains(name)) {
        return Err(format!("no case is called {unknown:?}"));
    }
    let clients = client::Clients::connect(addr)
        .await
        .map_err(|e| format!("cannot make a client of {addr}: {e}"))?;
    let mut passed = true;
    for name in names {
        match clients.run(name).await {
            Ok(()) => println!("case {name}: ok"),
            Err(failure) => {
                passed = false;
                println!("case {name}: FAILED: {failure}");
            }
        }
    }
    Ok(passed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let addr = args
        .addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 10000)));
    match args.mode.as_deref() {
        Some("server") => {
            // Logs (and traces and metrics, with the OTEL_* variables).
            let telemetry = match sinew::telemetry::init("interop") {
                Ok(telemetry) => telemetry,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let served = serve(addr).await;
            if let Err(e) = telemetry.shutdown().await {
                eprintln!("telemetry: {e}");
            }
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("client") => match run_cases(addr, &args.cases).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
