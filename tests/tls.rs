//! TLS and mTLS on the scaffold and the client, with certificates made at
//! test time: calls over TLS and mTLS, the peer's identity in handlers,
//! handshakes refused for the right reason while the server keeps
//! serving, certificates reloaded under load, and files that fail the
//! start naming their setting.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Running, echo};
use sinew::{
    Server,
    client::ClientConfig,
    server::{ServerConfig, ServerError},
    tls::{ClientAuth, ClientTlsConfig, HandshakeFailure},
};
use sinew_testing::pki::{CertFiles, TestPki, Validity};
use sinew_workspace::{
    echo::EchoService,
    proto::echo::v1::{EchoClient, echo_server::EchoServer},
};
use tonic::Code;

fn tls_config(server: &CertFiles) -> ServerConfig {
    ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .tls(&server.cert, &server.key)
}

/// The echo service, recording the SPIFFE id (or subject) of each caller's
/// certificate, as a handler's interceptor reads it.
fn recording_server(config: ServerConfig, seen: Arc<Mutex<Vec<Option<String>>>>) -> Server {
    Server::new("echo")
        .config(config)
        .add_service(EchoServer::with_interceptor(
            EchoService,
            move |request: tonic::Request<()>| {
                let peer = sinew::server::peer_identity(request.extensions()).map(|peer| {
                    peer.spiffe_id
                        .clone()
                        .unwrap_or_else(|| peer.subject.clone())
                });
                seen.lock().unwrap().push(peer);
                Ok(request)
            },
        ))
}

async fn client(addr: SocketAddr, tls: ClientTlsConfig) -> EchoClient {
    EchoClient::connect(
        ClientConfig::endpoint(format!("https://{addr}"))
            .tls(tls)
            .timeout(Duration::from_secs(5))
            .seed(7),
    )
    .await
    .unwrap()
}

/// A call that must fail, and its status.
async fn refused(addr: SocketAddr, tls: ClientTlsConfig) -> tonic::Status {
    let mut client = client(addr, tls).await;
    client.get(echo("refused")).await.unwrap_err()
}

fn failure_of(status: &tonic::Status) -> HandshakeFailure {
    sinew::client::cause::<sinew::client::ConnectFailed>(status)
        .and_then(|failed| failed.handshake())
        .map(|handshake| handshake.failure())
        .unwrap_or_else(|| panic!("no handshake failure in {status:?}"))
}

#[tokio::test]
async fn a_call_over_tls_is_served() {
    let pki = TestPki::new("test CA");
    let cert = pki.server(&["localhost"]);
    let server = Running::start(common::echo_server(tls_config(&cert))).await;
    // By IP, with the name the certificate is for.
    let mut client = client(
        server.addr,
        ClientTlsConfig::new().ca(pki.ca()).server_name("localhost"),
    )
    .await;
    let reply = client.get(echo("over tls")).await.unwrap();
    assert_eq!(reply.into_inner().message, "over tls");
    server.stop().await;
}

#[tokio::test]
async fn mtls_gives_handlers_the_callers_verified_identity() {
    let pki = TestPki::new("test CA");
    let cert = pki.server(&["localhost"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = tls_config(&cert).mtls(ClientAuth::Required, pki.ca());
    let server = Running::start(recording_server(config, Arc::clone(&seen))).await;

    let orders = pki.client("orders", Some("spiffe://shop.test/ns/prod/sa/orders"));
    let mut client = client(
        server.addr,
        ClientTlsConfig::new()
            .ca(pki.ca())
            .server_name("localhost")
            .identity(&orders.cert, &orders.key),
    )
    .await;
    client.get(echo("with a certificate")).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Some("spiffe://shop.test/ns/prod/sa/orders".to_owned())]
    );

    // Required: a client without a certificate is refused at the handshake
    // (under TLS 1.3, by an alert after the client's side of it), and told
    // why.
    let status = refused(
        server.addr,
        ClientTlsConfig::new().ca(pki.ca()).server_name("localhost"),
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        failure_of(&status),
        HandshakeFailure::CertificateRefused,
        "{status:?}"
    );
    // And one whose certificate another CA signed.
    let other = TestPki::new("another CA");
    let stranger = other.client("stranger", None);
    let status = refused(
        server.addr,
        ClientTlsConfig::new()
            .ca(pki.ca())
            .server_name("localhost")
            .identity(&stranger.cert, &stranger.key),
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        failure_of(&status),
        HandshakeFailure::CertificateRefused,
        "{status:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no refused call reached the handler"
    );
    // The server keeps serving.
    client.get(echo("still")).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn optional_mtls_lets_clients_without_a_certificate_in_without_an_identity() {
    let pki = TestPki::new("test CA");
    let cert = pki.server(&["localhost"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = tls_config(&cert).mtls(ClientAuth::Optional, pki.ca());
    let server = Running::start(recording_server(config, Arc::clone(&seen))).await;
    let mut anonymous = client(
        server.addr,
        ClientTlsConfig::new().ca(pki.ca()).server_name("localhost"),
    )
    .await;
    anonymous.get(echo("anonymous")).await.unwrap();
    let billing = pki.client("billing", None);
    let mut known = client(
        server.addr,
        ClientTlsConfig::new()
            .ca(pki.ca())
            .server_name("localhost")
            .identity(&billing.cert, &billing.key),
    )
    .await;
    known.get(echo("known")).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [None, Some("CN=billing".to_owned())]
    );
    server.stop().await;
}

#[tokio::test]
async fn refused_handshakes_say_why_and_the_server_keeps_serving() {
    let pki = TestPki::new("test CA");
    let good = pki.server(&["localhost"]);
    let server = Running::start(common::echo_server(tls_config(&good))).await;
    let trusted = || ClientTlsConfig::new().ca(pki.ca()).server_name("localhost");

    // A CA the client does not trust.
    let other = TestPki::new("another CA");
    let status = refused(server.addr, ClientTlsConfig::new().ca(other.ca())).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(failure_of(&status), HandshakeFailure::UnknownIssuer);
    assert!(status.message().contains("unknown authority"), "{status:?}");

    // A name the certificate is not for.
    let status = refused(
        server.addr,
        ClientTlsConfig::new()
            .ca(pki.ca())
            .server_name("payments.internal"),
    )
    .await;
    assert_eq!(
        failure_of(&status),
        HandshakeFailure::NameMismatch,
        "{status:?}"
    );

    // Plain text to the TLS port: the server closes it.
    let mut plain = EchoClient::connect(
        ClientConfig::endpoint(format!("http://{}", server.addr)).timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let status = plain.get(echo("plain")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Through all of it, a good client is served.
    let mut client = client(server.addr, trusted()).await;
    client.get(echo("still")).await.unwrap();
    server.stop().await;

    // Expired, and not yet valid.
    for (validity, failure) in [
        (Validity::Expired, HandshakeFailure::Expired),
        (Validity::NotYetValid, HandshakeFailure::NotYetValid),
    ] {
        let cert = pki.server_with(&["localhost"], validity);
        let server = Running::start(common::echo_server(tls_config(&cert))).await;
        let status = refused(server.addr, trusted()).await;
        assert_eq!(failure_of(&status), failure, "{status:?}");
        server.stop().await;
    }
}

#[test]
fn the_mtls_example_lets_in_only_the_granted_workload() {
    let output = std::process::Command::new(common::example_binary("mtls"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("orders: charged for spiffe://shop.test/sa/orders"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reports: PermissionDenied: missing scope payments.write"),
        "{stdout}"
    );
    assert!(stdout.contains("anonymous: Unavailable"), "{stdout}");
    assert!(stdout.contains("TLS handshake failed"), "{stdout}");
}

#[tokio::test]
async fn tls_for_a_plain_text_endpoint_fails_the_build() {
    let pki = TestPki::new("test CA");
    let error = EchoClient::connect(
        ClientConfig::endpoint("http://127.0.0.1:50051").tls(ClientTlsConfig::new().ca(pki.ca())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, sinew::client::ClientError::TlsWithoutHttps { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn tls_to_a_plain_port_is_not_tls() {
    let pki = TestPki::new("test CA");
    let server = Running::echo().await;
    let status = refused(server.addr, ClientTlsConfig::new().ca(pki.ca())).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(failure_of(&status), HandshakeFailure::NotTls, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_reloaded_certificate_reaches_new_handshakes_and_no_call_fails() {
    let pki = TestPki::new("test CA");
    let first = pki.server(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .tls(&cert, &key)
        .tls_reload_interval(Duration::from_millis(50));
    let server = Running::start(common::echo_server(config)).await;

    // Calls run on one connection all along.
    let mut client = client(
        server.addr,
        ClientTlsConfig::new().ca(pki.ca()).server_name("localhost"),
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = tokio::spawn({
        let (mut client, stop) = (client.clone(), Arc::clone(&stop));
        async move {
            let mut done = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .get(echo("under reload"))
                    .await
                    .expect("no call fails");
                done += 1;
            }
            done
        }
    });

    assert_eq!(presented(server.addr, &pki).await, der(&first.cert));
    // The files are replaced, key and certificate.
    let second = pki.server(&["localhost"]);
    std::fs::copy(&second.key, &key).unwrap();
    std::fs::copy(&second.cert, &cert).unwrap();
    let mut seen = presented(server.addr, &pki).await;
    for _ in 0..200 {
        if seen == der(&second.cert) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen = presented(server.addr, &pki).await;
    }
    assert_eq!(
        seen,
        der(&second.cert),
        "new handshakes see the new certificate"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(calls.await.unwrap() > 0);
    client.get(echo("after")).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_server_process() {
    use common::tls_greeter::{TlsGreeter, path, trusting};

    let pki = TestPki::new("test CA");
    let first = pki.server(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    // No interval: only SIGHUP reloads.
    let env = [
        ("SINEW_TLS_CERT", path(&cert).to_owned()),
        ("SINEW_TLS_KEY", path(&key).to_owned()),
        ("SINEW_TLS_RELOAD_INTERVAL", "0s".to_owned()),
    ];
    let mut greeter = TlsGreeter::start(&env, trusting(&pki)).await;
    let addr = greeter.process.addr;
    assert_eq!(presented(addr, &pki).await, der(&first.cert));

    let second = pki.server(&["localhost"]);
    std::fs::copy(&second.key, &key).unwrap();
    std::fs::copy(&second.cert, &cert).unwrap();
    assert_eq!(
        presented(addr, &pki).await,
        der(&first.cert),
        "nothing reloads before the signal"
    );
    let pid = greeter.process.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut seen = presented(addr, &pki).await;
    for _ in 0..200 {
        if seen == der(&second.cert) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen = presented(addr, &pki).await;
    }
    assert_eq!(seen, der(&second.cert), "SIGHUP reloaded the certificate");
    assert!(
        greeter.exited().is_none(),
        "the server lives on:\n{}",
        greeter.logs()
    );
    assert!(greeter.serving(trusting(&pki)).await);
}

/// The certificate the server at `addr` presents to a new handshake.
async fn presented(addr: SocketAddr, pki: &TestPki) -> Vec<u8> {
    let tls = sinew::tls::ClientTls::load(ClientTlsConfig::new().ca(pki.ca())).unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tls.server_name("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.current())
        .connect(name, stream)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &std::path::Path) -> Vec<u8> {
    use sinew::tls::rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

#[tokio::test]
async fn tls_files_that_cannot_be_used_fail_the_start_naming_their_setting() {
    let pki = TestPki::new("test CA");
    let good = pki.server(&["localhost"]);
    let other = pki.server(&["localhost"]);
    let start = |config: ServerConfig| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        common::echo_server(config)
            .serve_with_listener(listener, std::future::pending())
            .await
            .unwrap_err()
    };
    let key_of = |error: ServerError| match error {
        ServerError::Config(config) => config.key().map(str::to_owned),
        other => panic!("not a setting: {other}"),
    };
    let missing = pki.dir().join("missing.pem");
    let cases = [
        (ServerConfig::new().tls(&missing, &good.key), "tls_cert"),
        (ServerConfig::new().tls(&good.cert, &missing), "tls_key"),
        // A key that is not the certificate's.
        (ServerConfig::new().tls(&good.cert, &other.key), "tls_key"),
        // A certificate file that holds a key.
        (ServerConfig::new().tls(&good.key, &good.key), "tls_cert"),
        (
            ServerConfig::new()
                .tls(&good.cert, &good.key)
                .tls_client_auth(ClientAuth::Required),
            "tls_client_ca",
        ),
        (
            ServerConfig::new().tls_cert(Some(good.cert.clone())),
            "tls_key",
        ),
        (
            ServerConfig::new().tls_client_auth(ClientAuth::Optional),
            "tls_client_auth",
        ),
        // A CA with client certificates off would read as mTLS.
        (
            ServerConfig::new()
                .tls(&good.cert, &good.key)
                .tls_client_ca(Some(pki.ca().to_owned())),
            "tls_client_ca",
        ),
    ];
    for (config, key) in cases {
        let error = start(config).await;
        assert_eq!(key_of(error).as_deref(), Some(key));
    }
    // The key's bytes never appear in the error.
    let error = start(ServerConfig::new().tls(&good.cert, &other.key)).await;
    let key_pem = std::fs::read_to_string(&other.key).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!error.to_string().contains(body), "{error}");
}
