//! TLS interop with an independent implementation: Python's grpcio (on
//! BoringSSL) against sinew (on rustls), both ways, with certificates made
//! at test time.
//!
//! - grpcio's client calls the greeter example's server process over TLS,
//!   and over mTLS with client certificates required: with a certificate
//!   it is served, without one (or with one another CA signed) it is
//!   refused, as it is in plain text, and the server goes on serving.
//! - sinew's client calls a grpcio server that requires a client
//!   certificate (`tests/interop/grpcio_tls.py serve`): served with its
//!   certificate, which grpcio sees; refused without one, or when it does
//!   not trust the server's authority.
//!
//! Needs `python3` with `grpcio`, `grpcio-tools` (the greeter's Python
//! types are compiled from `proto/` at run time) and
//! `grpcio-health-checking`; `.ci/run` installs them. Without them the
//! tests skip with a loud message, unless `SINEW_REQUIRE_SERVICES=1`,
//! where they fail.

#![allow(clippy::print_stderr, reason = "a skipped test says so loudly")]

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::tls_greeter::{TlsGreeter, path, tls_env, trusting};
use sinew::{
    client::ClientConfig,
    health::proto::{HealthCheckRequest, HealthClient, health_check_response::ServingStatus},
    tls::{ClientTlsConfig, HandshakeFailure},
};
use sinew_testing::pki::{CertFiles, TestPki};
use sinew_workspace::proto::greeter::v1::{GreeterClient, HelloRequest};
use tonic::Code;

/// How long a server process may take to come up.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one run of the grpcio client may take (its calls have 10 s
/// deadlines).
const CLIENT_RUN: Duration = Duration::from_secs(60);

fn script() -> String {
    format!("{}/tests/interop/grpcio_tls.py", env!("CARGO_MANIFEST_DIR"))
}

/// Whether the Python side can run (else skipped loudly).
fn grpcio_ready() -> bool {
    common::python_ready(
        "grpcio TLS interop",
        &["grpc", "grpc_tools.protoc", "grpc_health.v1"],
        "grpcio grpcio-tools grpcio-health-checking",
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

/// Runs the grpcio client (`grpcio_tls.py call ADDR ARGS...`) to its end,
/// within [`CLIENT_RUN`], and returns the JSON object it printed.
async fn grpcio_call(addr: String, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new("python3");
    command.arg(script()).args(["call", &addr]).args(args);
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let child = Killed(child);
        // Its stdout closes when it exits: that is what the limit waits for.
        let (send, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            let _ = send.send(text);
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let Ok(stdout) = out.recv_timeout(CLIENT_RUN) else {
            drop(child);
            panic!(
                "the grpcio client did not finish in {CLIENT_RUN:?}:\n{}",
                err.join().unwrap()
            );
        };
        let mut child = child;
        let status = child.0.wait().unwrap();
        let stderr = err.join().unwrap();
        assert!(
            status.success(),
            "the grpcio client failed ({status}):\n{stdout}\n{stderr}"
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"))
    })
    .await
    .unwrap()
}

/// Asserts that grpcio's call and health checks went through.
fn assert_served(seen: &serde_json::Value, name: &str) {
    assert_eq!(seen["ok"], true, "grpcio was not served: {seen}");
    assert_eq!(seen["reply"], format!("Hello, {name}!"), "{seen}");
    assert_eq!(seen["check_overall"], "SERVING", "{seen}");
    assert_eq!(seen["check_greeter"], "SERVING", "{seen}");
}

/// Asserts that grpcio's first call failed with `UNAVAILABLE`.
fn assert_unavailable(seen: &serde_json::Value) {
    assert_eq!(seen["ok"], false, "grpcio was served: {seen}");
    assert_eq!(seen["code"], "UNAVAILABLE", "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_calls_a_sinew_server_over_tls() {
    if !grpcio_ready() {
        return;
    }
    let pki = TestPki::new("interop CA");
    let server = pki.server(&["localhost"]);
    let greeter = TlsGreeter::start(&tls_env(&server), trusting(&pki)).await;
    let ca = path(pki.ca());

    // By IP, expecting the certificate's name (`localhost`).
    let seen = grpcio_call(greeter.addr(), &["--ca", ca, "--name", "tls"]).await;
    assert_served(&seen, "tls");

    // grpcio checks sinew's certificate: not for another name, and not
    // from an authority it does not trust.
    let seen = grpcio_call(greeter.addr(), &["--ca", ca, "--server-name", "other.test"]).await;
    assert_unavailable(&seen);
    let other = TestPki::new("another CA");
    let seen = grpcio_call(greeter.addr(), &["--ca", path(other.ca())]).await;
    assert_unavailable(&seen);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_needs_its_certificate_when_sinew_requires_mtls() {
    if !grpcio_ready() {
        return;
    }
    let pki = TestPki::new("interop CA");
    let server = pki.server(&["localhost"]);
    let client = pki.client("grpcio", Some("spiffe://interop.test/ns/test/sa/grpcio"));
    let mut env = tls_env(&server);
    env.push(("SINEW_TLS_CLIENT_AUTH", "required".to_owned()));
    env.push(("SINEW_TLS_CLIENT_CA", path(pki.ca()).to_owned()));
    let ready = trusting(&pki).identity(&client.cert, &client.key);
    let mut greeter = TlsGreeter::start(&env, ready).await;
    let ca = path(pki.ca());
    let with_certificate = [
        "--ca",
        ca,
        "--cert",
        path(&client.cert),
        "--key",
        path(&client.key),
        "--name",
        "mtls",
    ];

    let seen = grpcio_call(greeter.addr(), &with_certificate).await;
    assert_served(&seen, "mtls");

    // No certificate: refused at the handshake.
    let seen = grpcio_call(greeter.addr(), &["--ca", ca]).await;
    assert_unavailable(&seen);
    // A certificate another CA signed: refused too.
    let other = TestPki::new("another CA");
    let stranger = other.client("stranger", None);
    let seen = grpcio_call(
        greeter.addr(),
        &[
            "--ca",
            ca,
            "--cert",
            path(&stranger.cert),
            "--key",
            path(&stranger.key),
        ],
    )
    .await;
    assert_unavailable(&seen);

    // The same process goes on serving the good client.
    assert_eq!(greeter.exited(), None, "{}", greeter.logs());
    let seen = grpcio_call(greeter.addr(), &with_certificate).await;
    assert_served(&seen, "mtls");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_in_plain_text_to_a_sinew_tls_port_is_unavailable() {
    if !grpcio_ready() {
        return;
    }
    let pki = TestPki::new("interop CA");
    let server = pki.server(&["localhost"]);
    let mut greeter = TlsGreeter::start(&tls_env(&server), trusting(&pki)).await;

    let seen = grpcio_call(greeter.addr(), &["--plaintext"]).await;
    assert_unavailable(&seen);

    // TLS clients are still served, by the same process.
    assert_eq!(greeter.exited(), None, "{}", greeter.logs());
    let seen = grpcio_call(greeter.addr(), &["--ca", path(pki.ca()), "--name", "after"]).await;
    assert_served(&seen, "after");
}

/// The grpcio greeter and health services over TLS, requiring a client
/// certificate (`grpcio_tls.py serve`); killed when dropped.
struct GrpcioTlsServer {
    addr: SocketAddr,
    _process: Killed,
}

impl GrpcioTlsServer {
    fn start(server: &CertFiles, ca: &std::path::Path) -> Self {
        let mut process = Command::new("python3")
            .arg(script())
            .args(["serve", "--cert", path(&server.cert)])
            .args(["--key", path(&server.key), "--ca", path(ca)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().expect("piped");
        let process = Killed(process);
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
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

    /// A sinew greeter client of it over `https://`.
    async fn client(&self, tls: ClientTlsConfig) -> GreeterClient {
        GreeterClient::connect(
            ClientConfig::endpoint(format!("https://{}", self.addr))
                .tls(tls)
                .timeout(Duration::from_secs(5))
                .seed(7),
        )
        .await
        .unwrap()
    }
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.to_owned(),
    }
}

fn failure_of(status: &tonic::Status) -> Option<HandshakeFailure> {
    sinew::client::cause::<sinew::client::ConnectFailed>(status)
        .and_then(|failed| failed.handshake())
        .map(|handshake| handshake.failure())
}

#[tokio::test(flavor = "multi_thread")]
async fn sinew_client_calls_a_grpcio_server_over_mtls() {
    if !grpcio_ready() {
        return;
    }
    let pki = TestPki::new("interop CA");
    let server_cert = pki.server(&["localhost"]);
    let orders = pki.client("orders", Some("spiffe://interop.test/ns/test/sa/orders"));
    let ca = pki.ca().to_owned();
    let server = tokio::task::spawn_blocking(move || GrpcioTlsServer::start(&server_cert, &ca))
        .await
        .unwrap();

    // With its certificate: served, and grpcio saw who called.
    let mut client = server
        .client(trusting(&pki).identity(&orders.cert, &orders.key))
        .await;
    let reply = client.say_hello(hello("sinew")).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello, sinew! (orders)");
    // grpcio's health service, on the same TLS connection.
    let config = ClientConfig::endpoint(format!("https://{}", server.addr))
        .tls(trusting(&pki).identity(&orders.cert, &orders.key))
        .timeout(Duration::from_secs(5));
    let mut health = HealthClient::connect(config).await.unwrap();
    let asked = HealthCheckRequest {
        service: "greeter.v1.Greeter".to_owned(),
    };
    let status = health.check(asked).await.unwrap().into_inner().status();
    assert_eq!(status, ServingStatus::Serving);

    // Without a certificate: refused. Under TLS 1.3 the client's side of
    // the handshake is done before BoringSSL checks for its certificate,
    // so its `certificate_required` alert comes after. BoringSSL closes at
    // once, and sinew's HTTP/2 preface meets a broken pipe before the
    // alert is read: only the code is certain here (against rustls, the
    // alert is read and named; see tests/tls.rs).
    let mut anonymous = server.client(trusting(&pki)).await;
    let status = anonymous.say_hello(hello("anonymous")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Not trusting grpcio's authority: sinew refuses the server.
    let other = TestPki::new("another CA");
    let mut wary = server
        .client(
            ClientTlsConfig::new()
                .ca(other.ca())
                .server_name("localhost")
                .identity(&orders.cert, &orders.key),
        )
        .await;
    let status = wary.say_hello(hello("wary")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        failure_of(&status),
        Some(HandshakeFailure::UnknownIssuer),
        "{status:?}"
    );

    // And the server still serves the client with its certificate.
    let reply = client.say_hello(hello("again")).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello, again! (orders)");
}
