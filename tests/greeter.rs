//! The greeter example, run as a user runs it: the one-process demo, and a
//! server and a client in separate processes.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::example_binary;

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

/// Kills the server process when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_client_process_calls_a_server_process() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _server = KillOnDrop(
        Command::new(example_binary("greeter"))
            .args(["server", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The client fails until the server listens; try for up to ten seconds.
    let mut last = None;
    for _ in 0..100 {
        let (binary, target) = (example_binary("greeter"), addr.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(["client", "--addr", &target, "--name", "process"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(stdout.trim(), "Hello, process!");
            return;
        }
        last = Some(output);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the client never got a reply: {last:?}");
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
