//! gRPC's official interop cases, both ways, against Python's grpcio:
//!
//! - grpcio's client (`tests/interop/interop_client.py`) runs every case
//!   against the `interop` example's server process, gRPC's own
//!   `grpc.testing.TestService` served on sinew's scaffold;
//! - sinew's generated client (the `interop` example's client mode) runs
//!   every case against a grpcio `TestService`
//!   (`tests/interop/interop_server.py`).
//!
//! The cases, from gRPC's interop test descriptions: empty_unary,
//! large_unary, client_streaming, server_streaming, ping_pong,
//! empty_stream, custom_metadata, status_code_and_message,
//! special_status_message, unimplemented_method, unimplemented_service,
//! cancel_after_begin, cancel_after_first_response,
//! timeout_on_sleeping_server.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (the Python stubs are
//! generated from `proto/grpc/testing/` at run time); `.ci/run` installs
//! them. Without them the tests skip with a loud message, unless
//! `SINEW_REQUIRE_SERVICES=1`, where they fail. Build the example first
//! when running this file alone: `cargo build --example interop`.

#![allow(clippy::print_stderr, reason = "a skipped test says so loudly")]

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::example_binary;

/// Every case, as both clients name it.
const CASES: [&str; 14] = [
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

/// How long a server may take to come up (the Python one generates its
/// stubs first).
const STARTUP: Duration = Duration::from_secs(30);
/// How long a client run may take: every case at once, or one.
const CLIENT_RUN: Duration = Duration::from_secs(120);

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether the Python side can run (else skipped loudly).
fn python_ready() -> bool {
    common::python_ready(
        "the gRPC interop suite",
        &["grpc", "grpc_tools.protoc"],
        "grpcio grpcio-tools",
    )
}

/// A child process, killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines a child writes to stdout, as they come, read on a thread of
/// their own (which ends with the pipe).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Runs `command` to its end, within `limit` (killed past it), and
/// returns whether it succeeded, its stdout and its stderr.
fn run_bounded(command: &mut Command, limit: Duration) -> (bool, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Its stdout closes when it exits: that is what the limit waits for.
    let (out_send, out) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = out_send.send(text);
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut child = Killed(child);
    match out.recv_timeout(limit) {
        Ok(stdout) => {
            let status = child.0.wait().expect("the client can be waited for");
            (status.success(), stdout, err.join().unwrap())
        }
        Err(_) => {
            drop(child);
            let stdout = out.recv().unwrap_or_default();
            let stderr = err.join().unwrap();
            (false, stdout, format!("{stderr}\n(killed after {limit:?})"))
        }
    }
}

/// The `interop` example serving on a free loopback port, its logs in a
/// file; killed when dropped.
struct SinewServer {
    addr: SocketAddr,
    _process: Killed,
    log: tempfile::NamedTempFile,
}

impl SinewServer {
    async fn start() -> Self {
        let addr: SocketAddr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let log = tempfile::NamedTempFile::new().unwrap();
        let process = Command::new(example_binary("interop"))
            .args(["server", "--addr", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let server = Self {
            addr,
            _process: Killed(process),
            log,
        };
        let until = Instant::now() + STARTUP;
        while Instant::now() < until {
            if server.serving().await {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the interop server did not come up on {addr}:\n{}",
            server.logs()
        );
    }

    /// Whether it answers a health check with `SERVING`.
    async fn serving(&self) -> bool {
        use sinew::health::proto::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let Ok(mut health) = HealthClient::connect(format!("http://{}", self.addr)).await else {
            return false;
        };
        let asked = HealthCheckRequest {
            service: "grpc.testing.TestService".to_owned(),
        };
        health
            .check(asked)
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

/// What grpcio's client reported of each case, by name: `None` for a
/// pass, the error for a failure.
fn grpcio_results(stdout: &str) -> Vec<(String, Option<String>)> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|result| {
            let name = result["case"].as_str().unwrap_or_default().to_owned();
            let error = (result["ok"] != true).then(|| result["error"].to_string());
            (name, error)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_runs_every_interop_case_against_a_sinew_server() {
    if !python_ready() {
        return;
    }
    let server = SinewServer::start().await;
    let port = server.addr.port().to_string();
    let client = script("interop_client.py");
    let (succeeded, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_bounded(
            Command::new("python3").args([
                client.as_str(),
                "--server_host",
                "127.0.0.1",
                "--server_port",
                &port,
                "--test_case",
                &CASES.join(","),
            ]),
            CLIENT_RUN,
        )
    })
    .await
    .unwrap();

    let results = grpcio_results(&stdout);
    let mut failures = Vec::new();
    for case in CASES {
        match results.iter().find(|(name, _)| name == case) {
            Some((_, None)) => eprintln!("grpcio -> sinew: {case}: ok"),
            Some((_, Some(error))) => failures.push(format!("{case}: {error}")),
            None => failures.push(format!("{case}: not reported")),
        }
    }
    assert!(
        failures.is_empty() && succeeded,
        "grpcio's interop client against sinew's server:\n{}\n\nclient stdout:\n{stdout}\n\
         client stderr:\n{stderr}\nserver log:\n{}",
        failures.join("\n"),
        server.logs()
    );
}

/// A grpcio `TestService` on a free port; killed when dropped.
struct GrpcioServer {
    addr: SocketAddr,
    _process: Killed,
}

impl GrpcioServer {
    fn start() -> Self {
        let mut process = Command::new("python3")
            .args([script("interop_server.py").as_str(), "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut process);
        let process = Killed(process);
        let line = lines
            .recv_timeout(STARTUP)
            .expect("the grpcio server says where it listens");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("not an address line: {line:?}"));
        Self {
            addr,
            _process: process,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sinew_client_runs_every_interop_case_against_a_grpcio_server() {
    if !python_ready() {
        return;
    }
    let interop = example_binary("interop");
    tokio::task::spawn_blocking(move || {
        let server = GrpcioServer::start();
        let addr = server.addr.to_string();
        let mut failures = Vec::new();
        // One client process per case: each case on a fresh client and
        // connection, as gRPC's interop runner runs them.
        for case in CASES {
            let (succeeded, stdout, stderr) = run_bounded(
                Command::new(&interop).args(["client", "--addr", &addr, "--case", case]),
                CLIENT_RUN,
            );
            let reported = format!("case {case}: ok");
            if !succeeded || stdout.trim() != reported {
                failures.push(format!("{case}:\n{stdout}{stderr}"));
                continue;
            }
            eprintln!("sinew -> grpcio: {case}: ok");
        }
        assert!(
            failures.is_empty(),
            "sinew's interop client against grpcio's server:\n{}",
            failures.join("\n")
        );
    })
    .await
    .unwrap();
}
