//! The greeter example, run as a user runs it: the one-process demo, and a
//! server and a client in separate processes.

mod common;

use std::process::Command;

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
