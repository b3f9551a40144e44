//! The greeter example, run as a user runs it: the one-process demo, and a
//! server and a client in separate processes.

mod common;

use std::{process::Command, time::Duration};

use common::{GreeterProcess, example_binary};

#[test]
fn the_demo_serves_calls_reports_health_drains_and_exits_zero() {
    let output = Command::new(example_binary("greeter")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("Hello, sinew!"), "{stdout}");
    assert!(stdout.contains("health: SERVING"), "{stdout}");
    assert!(stdout.contains("drained"), "{stdout}");
}

#[tokio::test]
async fn a_client_process_calls_a_server_process() {
    let server = GreeterProcess::start(&[]).await;
    let (binary, target) = (example_binary("greeter"), server.addr.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["client", "--addr", &target, "--name", "process"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout.trim(), "Hello, process!");
}

#[test]
fn bad_arguments_exit_two_with_usage() {
    let output = Command::new(example_binary("greeter"))
        .args(["serve"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}

#[tokio::test]
async fn server_and_client_processes_export_one_trace() {
    use common::collector::Collector;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    let mut server =
        GreeterProcess::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]).await;

    let (binary, target, env) = (
        example_binary("greeter"),
        server.addr.to_string(),
        endpoint.clone(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["client", "--addr", &target, "--name", "traced"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");

    // The server flushes its spans as it drains.
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());

    let name = "greeter.v1.Greeter/SayHello";
    let both = collector
        .wait_for(
            |c| {
                let spans = c.spans_named(name);
                spans.iter().any(|s| s.kind() == SpanKind::Client)
                    && spans.iter().any(|s| s.kind() == SpanKind::Server)
            },
            Duration::from_secs(20),
        )
        .await;
    assert!(both, "spans: {:?}", collector.span_names());
    let spans = collector.spans_named(name);
    let client = spans.iter().find(|s| s.kind() == SpanKind::Client).unwrap();
    let server = spans.iter().find(|s| s.kind() == SpanKind::Server).unwrap();
    assert_eq!(client.service_name.as_deref(), Some("greeter-client"));
    assert_eq!(server.service_name.as_deref(), Some("greeter"));
    assert_eq!(server.trace_id(), client.trace_id(), "one trace");
    assert_eq!(server.parent_span_id(), Some(client.span_id()));
    collector.stop().await;
}
