//! `sinew bench` against h2load, nghttp2's HTTP/2 load generator (C, on
//! nghttp2): both load the same bare tonic server, in one run, with the
//! same unary request, concurrency and connections. The load generator
//! shares the machine with the server, so the one that costs less per call
//! leaves the server more CPU: the ratio of their requests per second is
//! the ratio of what each can drive.
//!
//! Run with: `cargo bench --bench cli`. It builds the `sinew` binary in
//! release mode and needs `h2load` (Debian's `nghttp2-client`). The last
//! line is `RESULT bench_ratio=<sinew bench rps / h2load rps>`; the target
//! is 0.9 or more.
//!
//! - `SINEW_BENCH_ROUNDS` (3): rounds of both, alternating; medians are
//!   compared.
//! - `SINEW_BENCH_REQUESTS` (100000): calls per round.
//! - `SINEW_BENCH_CONCURRENCY` (50) and `SINEW_BENCH_CONNECTIONS` (1).
//! - `SINEW_BENCH_SERVER_THREADS` (1): the server's tokio worker threads.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark prints its results"
)]

#[path = "common/mod.rs"]
mod common;

use std::{net::SocketAddr, path::PathBuf, process::Command};

use common::env_number;
use prost::Message as _;
use sinew_workspace::{
    echo::EchoService,
    proto::echo::v1::{EchoRequest, echo_server::EchoServer},
};
use tonic::transport::server::TcpIncoming;

/// The request, as JSON for `sinew bench`; the same message, encoded, for
/// h2load.
const MESSAGE: &str = "benchmark";

/// Starts the bare tonic echo server on its own runtime, for the life of
/// the process.
fn bare_tonic_server(threads: usize) -> SocketAddr {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("the server's runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        runtime.block_on(
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(EchoService))
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
        )
    });
    addr
}

/// The `sinew` binary, built in release mode.
fn sinew_binary() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "sinew-cli", "--bin", "sinew"])
        .current_dir(root)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build --release -p sinew-cli failed"
    );
    let exe = std::env::current_exe().expect("this benchmark's path");
    // target/release/deps/<bench> -> target/release/sinew
    exe.ancestors()
        .nth(2)
        .expect("a target folder")
        .join(format!("sinew{}", std::env::consts::EXE_SUFFIX))
}

/// The gRPC frame of the request: h2load's request body.
fn framed_request() -> Vec<u8> {
    let message = EchoRequest {
        message: MESSAGE.to_owned(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// Requests per second of one `sinew bench` run, checking every call
/// answered OK.
fn sinew_round(
    sinew: &PathBuf,
    addr: SocketAddr,
    requests: u64,
    concurrency: u64,
    connections: u64,
) -> f64 {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let output = Command::new(sinew)
        .args([
            "bench",
            &addr.to_string(),
            "echo.v1.Echo/Get",
            &format!(r#"{{"message": "{MESSAGE}"}}"#),
            "-n",
            &requests.to_string(),
            "-c",
            &concurrency.to_string(),
            "--connections",
            &connections.to_string(),
            "--json",
            "--proto",
            &format!("{proto}/echo/v1/echo.proto"),
            "-I",
            proto,
        ])
        .output()
        .expect("sinew runs");
    assert!(
        output.status.success(),
        "sinew bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        summary["codes"]["OK"], requests,
        "every call answered OK: {summary}"
    );
    summary["rps"].as_f64().expect("rps")
}

/// Requests per second of one h2load run over the same calls.
fn h2load_round(
    addr: SocketAddr,
    body: &std::path::Path,
    requests: u64,
    concurrency: u64,
    connections: u64,
) -> f64 {
    let output = Command::new("h2load")
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            &connections.to_string(),
            "-m",
            &(concurrency / connections).to_string(),
            "-t",
            "1",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            body.to_str().expect("a UTF-8 path"),
            &format!("http://{addr}/echo.v1.Echo/Get"),
        ])
        .output()
        .expect("h2load runs (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "h2load failed: {text}");
    // "status codes: 100000 2xx, ..." and "finished in 1.23s, 81234.56 req/s, ...".
    // h2load does not read grpc-status: that every call of this request
    // succeeds is checked by sinew bench's rounds, which count codes.
    assert!(
        text.contains(&format!("{requests} 2xx")),
        "every call answered 200: {text}"
    );
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("finished in ")?;
            let rps = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            rps.parse().ok()
        })
        .unwrap_or_else(|| panic!("no req/s in h2load's output: {text}"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if Command::new("h2load").arg("--version").output().is_err() {
        eprintln!("h2load is missing: apt-get install nghttp2-client");
        std::process::exit(1);
    }
    let rounds = env_number("SINEW_BENCH_ROUNDS", 3);
    let requests = env_number("SINEW_BENCH_REQUESTS", 100_000);
    let concurrency = env_number("SINEW_BENCH_CONCURRENCY", 50);
    let connections = env_number("SINEW_BENCH_CONNECTIONS", 1);
    let threads = usize::try_from(env_number("SINEW_BENCH_SERVER_THREADS", 1)).expect("a count");
    // h2load runs `-m` streams on each of its `-c` connections.
    assert!(
        connections > 0 && concurrency.is_multiple_of(connections),
        "SINEW_BENCH_CONCURRENCY must be a multiple of SINEW_BENCH_CONNECTIONS"
    );

    let sinew = sinew_binary();
    let addr = bare_tonic_server(threads);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let body = dir.path().join("request.bin");
    std::fs::write(&body, framed_request()).expect("the request file");
    println!(
        "unary echo.v1.Echo/Get on bare tonic ({threads} server thread(s)): {requests} calls a round, \
         concurrency {concurrency} on {connections} connection(s)"
    );

    // A warm-up of each, not counted.
    sinew_round(&sinew, addr, requests / 10, concurrency, connections);
    h2load_round(addr, &body, requests / 10, concurrency, connections);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 1..=rounds {
        let h2load = h2load_round(addr, &body, requests, concurrency, connections);
        let bench = sinew_round(&sinew, addr, requests, concurrency, connections);
        println!(
            "round {round}: h2load {h2load:.0} rps, sinew bench {bench:.0} rps, ratio {:.3}",
            bench / h2load
        );
        ours.push(bench);
        theirs.push(h2load);
    }
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!("median: h2load {theirs:.0} rps, sinew bench {ours:.0} rps");
    println!("RESULT bench_ratio={:.3}", ours / theirs);
}
