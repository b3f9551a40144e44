//! The `sinew` command, run as a user runs it: the binary, against a
//! scaffolded server on a real socket (gRPC's interop `TestService`, which
//! has every streaming kind, beside the echo service), against a server
//! that is not sinew's (Python's grpcio, with its reflection and health),
//! and over TLS.

mod common;
#[path = "../examples/interop/server.rs"]
mod interop_server;

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use common::{ClosedPort, Running};
use sinew::{Server, server::ServerConfig};
use sinew_testing::pki::TestPki;
use sinew_workspace::{
    echo::EchoService,
    proto::{
        echo::v1::echo_server::EchoServer, grpc::testing::test_service_server::TestServiceServer,
    },
};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// The longest any one command may take here.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The `sinew` binary beside this test's own, built (or found up to date)
/// once per run: this package does not depend on the binary, so cargo
/// would not rebuild it for this test alone.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "sinew-cli", "--bin", "sinew"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p sinew-cli failed");
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test> -> target/<profile>/sinew
        exe.parent()
            .and_then(Path::parent)
            .unwrap()
            .join(format!("sinew{}", std::env::consts::EXE_SUFFIX))
    })
}

/// The next line of a child's output, within a bound.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<String> {
    tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
        .await
        .expect("a line within the bound")
        .unwrap()
}

/// What a run of `sinew` printed, and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `sinew args`, with `stdin` as its standard input.
async fn sinew_with(args: &[&str], stdin: &str) -> Run {
    let mut child = tokio::process::Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("sinew {args:?} did not finish"))
        .unwrap()
        .into()
}

/// Runs `sinew args`.
async fn sinew(args: &[&str]) -> Run {
    sinew_with(args, "").await
}

/// The interop `TestService` and the echo service on the scaffold.
fn test_server(config: ServerConfig) -> Server {
    Server::new("cli-test")
        .config(config)
        .add_service(TestServiceServer::new(interop_server::Tester))
        .add_service(EchoServer::new(EchoService))
}

async fn start() -> Running {
    Running::start(test_server(ServerConfig::new().lame_duck(Duration::ZERO))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_describe_read_the_servers_reflection() {
    let server = start().await;
    let addr = server.addr.to_string();

    let run = sinew(&["list", &addr]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let services: Vec<&str> = run.stdout.lines().collect();
    for service in [
        "echo.v1.Echo",
        "grpc.health.v1.Health",
        "grpc.testing.TestService",
    ] {
        assert!(services.contains(&service), "{run:?}");
    }

    let run = sinew(&["list", &addr, "grpc.testing.TestService"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l == "grpc.testing.TestService/FullDuplexCall"),
        "{run:?}"
    );

    let run = sinew(&["describe", &addr, "grpc.testing.SimpleRequest"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("message grpc.testing.SimpleRequest {"),
        "{run:?}"
    );
    assert!(run.stdout.contains("  int32 response_size = 2;"), "{run:?}");
    assert!(
        run.stdout
            .contains("  grpc.testing.EchoStatus response_status = 7;"),
        "{run:?}"
    );

    let run = sinew(&[
        "describe",
        &addr,
        "grpc.testing.TestService/StreamingOutputCall",
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with(
            "rpc StreamingOutputCall(grpc.testing.StreamingOutputCallRequest) returns (stream grpc.testing.StreamingOutputCallResponse);"
        ),
        "{run:?}"
    );

    let run = sinew(&["describe", &addr, "grpc.testing.SimpleReqest"]).await;
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("did you mean grpc.testing.SimpleRequest?"),
        "{run:?}"
    );
    let run = sinew(&["list", &addr, "grpc.testing.TestServise"]).await;
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("did you mean grpc.testing.TestService?"),
        "{run:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_reflection_the_contracts_come_from_proto_files() {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let test_proto = format!("{proto}/grpc/testing/test.proto");
    // No server is needed to list what the files hold.
    let closed = ClosedPort::new();
    let addr = closed.addr().to_string();
    let run = sinew(&["list", &addr, "--proto", &test_proto, "-I", proto]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "grpc.testing.TestService",
            "grpc.testing.UnimplementedService"
        ],
        "{run:?}"
    );

    // A server without reflection: said so, with the way out.
    let bare = bare_echo_server().await;
    let addr = bare.to_string();
    let run = sinew(&["list", &addr]).await;
    assert_eq!(run.code, 65, "{run:?}");
    assert!(run.stderr.contains("does not serve reflection"), "{run:?}");
    assert!(run.stderr.contains("--proto"), "{run:?}");
    let echo_proto = format!("{proto}/echo/v1/echo.proto");
    let run = sinew(&[
        "call",
        &addr,
        "echo.v1.Echo/Put",
        r#"{"message": "from a file"}"#,
        "--proto",
        &echo_proto,
        "-I",
        proto,
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("\"from a file\""), "{run:?}");
}

/// The echo service on a bare tonic server: no reflection, no health.
async fn bare_echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn call_speaks_every_streaming_kind_in_json() {
    let server = start().await;
    let addr = server.addr.to_string();

    // Unary: one pretty-printed document.
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseSize": 3}"#,
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let reply: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(reply["payload"]["body"], "AAAA", "3 zero bytes in base64");

    // Server streaming: one document per line.
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/StreamingOutputCall",
        r#"{"responseParameters": [{"size": 1}, {"size": 2}, {"size": 3}]}"#,
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let bodies: Vec<String> = run
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"]["body"].to_string()
        })
        .collect();
    assert_eq!(bodies, [r#""AA==""#, r#""AAA=""#, r#""AAAA""#]);

    // Client streaming, from standard input, one message per line.
    let run = sinew_with(
        &[
            "call",
            &addr,
            "grpc.testing.TestService/StreamingInputCall",
            "@-",
        ],
        "{\"payload\": {\"body\": \"AAA=\"}}\n{\"payload\": {\"body\": \"AAAAAA==\"}}\n",
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let reply: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(reply["aggregatedPayloadSize"], 6);

    // Bidirectional, from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.ndjson");
    std::fs::write(
        &file,
        "{\"responseParameters\": [{\"size\": 1}]}\n{\"responseParameters\": [{\"size\": 4}]}\n",
    )
    .unwrap();
    let data = format!("@{}", file.display());
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/FullDuplexCall",
        &data,
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 2, "{run:?}");
    assert!(
        run.stdout.lines().nth(1).unwrap().contains("\"AAAAAA==\""),
        "{run:?}"
    );

    // --emit-defaults prints what a default message holds.
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        "{}",
        "--emit-defaults",
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("\"username\": \"\""), "{run:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_have_stable_exit_codes_and_clear_messages() {
    let server = start().await;
    let addr = server.addr.to_string();

    // The server's status: 100 + its code, with the message.
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseStatus": {"code": 9, "message": "not now"}}"#,
    ])
    .await;
    assert_eq!(run.code, 109, "{run:?}");
    assert!(
        run.stderr.contains("FAILED_PRECONDITION (9): not now"),
        "{run:?}"
    );

    // The deadline, carried to the server.
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/StreamingOutputCall",
        r#"{"responseParameters": [{"size": 1, "intervalUs": 5000000}]}"#,
        "--timeout",
        "200ms",
    ])
    .await;
    assert_eq!(run.code, 104, "{run:?}");
    assert!(run.stderr.contains("DEADLINE_EXCEEDED"), "{run:?}");

    // JSON that does not fit names the field and the type it wants.
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseSize": "big"}"#,
    ])
    .await;
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr.contains("field `responseSize` is int32"),
        "{run:?}"
    );
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseSise": 1}"#,
    ])
    .await;
    assert_eq!(run.code, 65, "{run:?}");
    assert!(run.stderr.contains("did you mean responseSize?"), "{run:?}");

    // An unknown method, with the closest name.
    let run = sinew(&["call", &addr, "grpc.testing.TestService/UnaryCal", "{}"]).await;
    assert_eq!(run.code, 65, "{run:?}");
    assert!(run.stderr.contains("did you mean UnaryCall?"), "{run:?}");

    // An address nothing listens on.
    let closed = ClosedPort::new();
    let run = sinew(&["call", &closed.addr().to_string(), "a.B/C", "{}"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("connection was refused"), "{run:?}");

    // Arguments that do not parse.
    let run = sinew(&["call", &addr]).await;
    assert_eq!(run.code, 64, "{run:?}");
    let run = sinew(&["call", &addr, "a.B/C", "{}", "-H", "no-colon"]).await;
    assert_eq!(run.code, 64, "{run:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_exit_codes_fit_a_container_probe() {
    let mut server = Running::start(test_server(
        ServerConfig::new().lame_duck(Duration::from_secs(30)),
    ))
    .await;
    let addr = server.addr.to_string();

    let run = sinew(&["health", &addr]).await;
    assert_eq!((run.code, run.stdout.trim()), (0, "SERVING"), "{run:?}");
    let run = sinew(&["health", &addr, "--service", "grpc.testing.TestService"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = sinew(&["health", &addr, "--service", "no.such.Service"]).await;
    assert_eq!(run.code, 5, "{run:?}");
    let closed = ClosedPort::new();
    let run = sinew(&["health", &closed.addr().to_string()]).await;
    assert_eq!(run.code, 2, "{run:?}");

    // --watch hears the drain begin.
    let mut watch = tokio::process::Command::new(binary())
        .args([
            "health",
            &addr,
            "--watch",
            "--service",
            "grpc.testing.TestService",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("SERVING"));

    // Draining (its lame duck): still answering, no longer serving.
    server.begin_drain();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("NOT_SERVING"));
    let run = sinew(&["health", &addr]).await;
    assert_eq!((run.code, run.stdout.trim()), (4, "NOT_SERVING"), "{run:?}");
    watch.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_reports_counts_that_add_up() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = sinew(&[
        "bench",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseSize": 8}"#,
        "-c",
        "4",
        "-n",
        "300",
        "--connections",
        "2",
        "--json",
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["requests"], 300, "{run:?}");
    let codes = summary["codes"].as_object().unwrap();
    let counted: u64 = codes.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(counted, 300, "{run:?}");
    assert_eq!(codes["OK"], 300, "{run:?}");
    let latency = &summary["latency_us"];
    assert!(
        latency["p50"].as_u64().unwrap() <= latency["p99"].as_u64().unwrap(),
        "{run:?}"
    );

    // Errors are counted by their code.
    let run = sinew(&[
        "bench",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseStatus": {"code": 8}}"#,
        "-c",
        "2",
        "-n",
        "50",
        "--json",
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["codes"]["RESOURCE_EXHAUSTED"], 50, "{run:?}");

    // A streaming method is refused.
    let run = sinew(&[
        "bench",
        &addr,
        "grpc.testing.TestService/FullDuplexCall",
        "-n",
        "1",
    ])
    .await;
    assert_eq!(run.code, 64, "{run:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_options_reach_a_tls_server_and_a_failed_check_is_named() {
    let pki = TestPki::new("cli CA");
    let cert = pki.server(&["localhost"]);
    let server = Running::start(test_server(
        ServerConfig::new()
            .lame_duck(Duration::ZERO)
            .tls(&cert.cert, &cert.key),
    ))
    .await;
    let addr = server.addr.to_string();
    let ca = pki.ca().to_str().unwrap();

    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/EmptyCall",
        "{}",
        "--cacert",
        ca,
        "--server-name",
        "localhost",
    ])
    .await;
    assert_eq!((run.code, run.stdout.trim()), (0, "{}"), "{run:?}");

    // The system's roots do not know the test CA.
    let run = sinew(&["health", &addr, "--tls", "--server-name", "localhost"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown authority"), "{run:?}");
    // The right CA, the wrong name.
    let run = sinew(&[
        "health",
        &addr,
        "--cacert",
        ca,
        "--server-name",
        "elsewhere",
    ])
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("not valid for the server name"),
        "{run:?}"
    );
    // --insecure: encrypted, not checked.
    let run = sinew(&["health", &addr, "--insecure"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    // Plain text to a TLS port.
    let run = sinew(&["health", &addr]).await;
    assert_eq!(run.code, 2, "{run:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn call_list_and_health_work_against_grpcio() {
    if !common::python_ready(
        "sinew against grpcio",
        &[
            "grpc",
            "grpc_tools.protoc",
            "grpc_health.v1",
            "grpc_reflection.v1alpha",
        ],
        "grpcio grpcio-tools grpcio-health-checking grpcio-reflection",
    ) {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/interop_server.py"
    );
    let mut python = tokio::process::Command::new("python3")
        .args([script, "--port", "0", "--reflection"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(python.stdout.take().unwrap()).lines();
    let line = next_line(&mut lines)
        .await
        .expect("the grpcio server starts");
    let addr = line
        .strip_prefix("listening on ")
        .expect("an address line")
        .to_owned();

    // grpcio answers reflection v1alpha only: the fallback is taken.
    let run = sinew(&["list", &addr]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l == "grpc.testing.TestService"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l == "grpc.reflection.v1alpha.ServerReflection"),
        "{run:?}"
    );

    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseSize": 2}"#,
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("\"AAA=\""), "{run:?}");
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/StreamingOutputCall",
        r#"{"responseParameters": [{"size": 1}, {"size": 1}]}"#,
    ])
    .await;
    assert_eq!((run.code, run.stdout.lines().count()), (0, 2), "{run:?}");
    let run = sinew(&[
        "call",
        &addr,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseStatus": {"code": 5, "message": "from python"}}"#,
    ])
    .await;
    assert_eq!(run.code, 105, "{run:?}");
    assert!(run.stderr.contains("NOT_FOUND (5): from python"), "{run:?}");

    let run = sinew(&["health", &addr, "--service", "grpc.testing.TestService"]).await;
    assert_eq!((run.code, run.stdout.trim()), (0, "SERVING"), "{run:?}");
    let run = sinew(&["health", &addr, "--service", "no.such.Service"]).await;
    assert_eq!(run.code, 5, "{run:?}");
    python.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn help_and_completions_are_there_for_every_command() {
    for command in [
        "new",
        "list",
        "describe",
        "call",
        "health",
        "bench",
        "breaking",
        "completions",
    ] {
        let run = sinew(&[command, "--help"]).await;
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("Example"),
            "sinew {command} --help has examples: {run:?}"
        );
    }
    let run = sinew(&["completions", "bash"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("_sinew()"), "{run:?}");
    assert!(run.stdout.contains("breaking"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_makes_a_crate_that_builds_without_warnings_and_passes_its_test() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();

    // Names that cannot be crates, and a folder that exists, are refused.
    let run = sinew(&["new", "1st", "--dir", parent]).await;
    assert_eq!(run.code, 64, "{run:?}");
    assert!(run.stderr.contains("starts with a digit"), "{run:?}");
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let run = sinew(&["new", "taken", "--dir", parent]).await;
    assert_eq!(run.code, 73, "{run:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("taken")).unwrap().count(),
        0
    );

    let run = sinew(&["new", "inventory", "--dir", parent, "--path", root]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let krate = dir.path().join("inventory");
    for file in [
        "Cargo.toml",
        "build.rs",
        "src/main.rs",
        "src/lib.rs",
        "README.md",
        "tests/inventory.rs",
    ] {
        assert!(krate.join(file).is_file(), "{file} written");
    }
    let contract =
        std::fs::read_to_string(krate.join("proto/inventory/v1/inventory.proto")).unwrap();
    assert!(
        contract.contains("idempotency_level = NO_SIDE_EFFECTS"),
        "{contract}"
    );

    // Built and tested as its user would, with the workspace's lock file
    // and target folder (so that sinew is not compiled again).
    std::fs::copy(format!("{root}/Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    let cargo = |args: &'static [&'static str]| {
        let krate = krate.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO"))
                .args(args)
                .current_dir(&krate)
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTFLAGS")
                .output()
                .unwrap()
        })
    };
    let build = cargo(&["build", "--all-targets"]).await.unwrap();
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "the new crate builds without warnings:\n{stderr}"
    );
    let test = cargo(&["test"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(stdout.contains("test result: ok. 2 passed"), "{stdout}");
}
