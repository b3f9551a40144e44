//! Interop with an independent implementation: Python's grpcio calls the
//! greeter example's server process (with and without gzip), checks its
//! health and reads its reflection.
//!
//! Needs `python3` with `grpcio`, `grpcio-health-checking` and
//! `grpcio-reflection` (`.ci/run` installs them). Without them the test
//! skips with a loud message, unless `SINEW_REQUIRE_SERVICES=1`, where it
//! fails.

#![allow(clippy::print_stderr, reason = "a skipped test says so loudly")]

mod common;

use std::process::Command;

use common::GreeterProcess;

/// Runs the grpcio client against a greeter process started with `env`,
/// and returns what it saw; `None` (after saying so loudly) when grpcio is
/// not installed.
async fn grpcio_sees(env: &[(&str, &str)]) -> Option<serde_json::Value> {
    if !common::python_ready(
        "grpcio interop",
        &["grpc", "grpc_health.v1", "grpc_reflection.v1alpha"],
        "grpcio grpcio-health-checking grpcio-reflection",
    ) {
        return None;
    }
    // The greeter example, as its own process.
    let greeter = GreeterProcess::start(env).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/grpcio_client.py"
    );
    let addr = greeter.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &addr])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio client failed:\n{stdout}\n{stderr}"
    );
    Some(serde_json::from_str(stdout.trim()).unwrap())
}

#[tokio::test]
async fn grpcio_calls_checks_health_and_reads_reflection() {
    let Some(seen) = grpcio_sees(&[]).await else {
        return;
    };
    assert_eq!(seen["reply"], "Hello, python!");
    assert_eq!(seen["empty_name"], "INVALID_ARGUMENT");
    // A request compressed with gzip is accepted by default.
    assert_eq!(seen["gzip_reply"], "Hello, gzip!");
    assert_eq!(seen["check_overall"], "SERVING");
    assert_eq!(seen["check_greeter"], "SERVING");
    assert_eq!(seen["check_unknown"], "NOT_FOUND");
    assert_eq!(seen["watch_greeter"], "SERVING");
    assert_eq!(seen["watch_unknown"], "SERVICE_UNKNOWN");
    assert_eq!(
        seen["services"],
        serde_json::json!([
            "greeter.v1.Greeter",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ])
    );
}

/// With `send_compressed = "gzip"`, the server answers grpcio (which
/// accepts gzip) with compressed replies, health's included; grpcio reads
/// them all.
#[tokio::test]
async fn grpcio_reads_replies_compressed_with_gzip() {
    let Some(seen) = grpcio_sees(&[("SINEW_SEND_COMPRESSED", "gzip")]).await else {
        return;
    };
    assert_eq!(seen["reply"], "Hello, python!");
    assert_eq!(seen["empty_name"], "INVALID_ARGUMENT");
    assert_eq!(seen["gzip_reply"], "Hello, gzip!");
    assert_eq!(seen["check_greeter"], "SERVING");
    assert_eq!(seen["watch_greeter"], "SERVING");
}
