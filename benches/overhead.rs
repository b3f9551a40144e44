//! What sinew costs over bare tonic, measured in one run.
//!
//! An echo service is served twice in this process: by a bare tonic server
//! and called by a bare tonic client, and by the sinew scaffold and called
//! by a sinew generated client with every default layer on (deadline,
//! bulkhead, retries with throttling, circuit breaker, load balancer; and on
//! the server the deadline ceiling, message limits and panic guard). Both
//! pairs see the same load: 64 calls in flight from 64 tasks on the same
//! runtime, in alternating rounds so that drift on the machine hits both.
//!
//! Then OpenTelemetry is switched on (100% sampling, spans and metrics
//! exported over OTLP to a collector in this process that drops what it
//! receives without decoding it), and the traced sinew pair is measured
//! against the bare tonic pair again, in alternating rounds: `traced_ratio`.
//!
//! To show where the cost goes, each side of sinew is also measured alone
//! against bare tonic (a tonic client calling the sinew server, a sinew
//! client calling the tonic server), in the same alternating rounds.
//!
//! Then both pairs are measured over TLS, in alternating rounds of their
//! own: `tls_ratio`. Certificates are made at the start ([`TestPki`]: a
//! CA, and a server certificate for `localhost` that the clients verify
//! against it); both pairs use the same rustls (the `ring` provider) and
//! the same configurations, built by sinew's [`ServerTls`] and
//! [`ClientTls`] from those files (ALPN `h2`, TLS 1.3 agreed). The sinew
//! pair is the scaffold with `tls` set and a client of an `https://`
//! endpoint with the CA and the server name. The bare tonic pair has no
//! TLS of tonic's (its TLS features stay off, so that there is one TLS
//! stack): its server is `serve_with_incoming` over a stream of
//! `tokio_rustls` streams, each accepted and handshaken on a task of its
//! own, and its client `Endpoint::connect_with_connector` with a
//! connector that does TCP (no delay) and the `tokio_rustls` handshake.
//! Handshakes happen once per connection, before the rounds: the rounds
//! measure calls over established TLS connections, so what differs from
//! the plaintext pairs is the record layer (encryption, framing, and the
//! copies through rustls's buffers) on both sides of every call.
//! Where the TLS pair's gap goes: by `instructions.sh`, TLS adds about
//! 5k instructions per call to either pair (about 3%), and what the sinew
//! pair spends over the tonic pair (about 4k, 2.6%) is the plaintext gap
//! (about 3.3k) within the count's noise: the TLS path adds nothing of
//! sinew's own, and `tls_ratio` below 1 is the cost of sinew's layers, as
//! in `overhead_ratio`, diluted by the cost TLS adds to both.
//!
//! Run with: `cargo bench --bench overhead`
//! (`SINEW_BENCH_ROUNDS` and `SINEW_BENCH_SECONDS` change the rounds per
//! side, default 3, and the seconds per round, default 3;
//! `SINEW_BENCH_ONLY=tonic`, `sinew` or `traced` runs that pair alone, for
//! a profiler, and prints no RESULT line; `traced-unexported` and
//! `traced-unsampled` trace without an endpoint, and sample nothing;
//! `sinew-server` and `sinew-client` pair one side of sinew with bare
//! tonic; `tonic-tls` and `sinew-tls` are the TLS pairs; a sinew client
//! run alone gives `Put` 20s instead of 1s, so that valgrind's slowness
//! does not fail its calls).
//!
//! Each round also reports the CPU time the process spent per call (all of
//! its threads, from `/proc/self/stat`, on Linux), and before the RESULT
//! line a `cpu per call:` line gives both ratios by CPU time. Where they
//! match the ratios by requests per second, the gap is work done, not
//! time spent waiting (for locks, timers or the network); on a shared
//! host, CPU time per call moves with the host's speed much as requests
//! per second do.
//!
//! The last line is exactly:
//! `RESULT overhead_ratio=<sinew rps / tonic rps> sinew_rps=<n> tonic_rps=<n> sinew_p99_us=<n> tonic_p99_us=<n> traced_ratio=<traced sinew rps / tonic rps> tls_ratio=<sinew tls rps / tonic tls rps> sinew_tls_rps=<n> tonic_tls_rps=<n>`

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use common::{Call, Round, cpu_text, env_number, median, median_cpu};

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use sinew::{
    Server,
    client::ClientConfig,
    server::ServerConfig,
    tls::{ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig},
};
use sinew_testing::pki::{CertFiles, TestPki};
use sinew_workspace::{
    echo::EchoService,
    proto::echo::v1::{self, EchoRequest, echo_client, echo_server::EchoServer},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::transport::{
    Channel, Endpoint,
    server::{Connected, TcpConnectInfo, TcpIncoming},
};

const IN_FLIGHT: usize = 64;

/// Runs `IN_FLIGHT` callers for `seconds` and measures them.
async fn round<C, F>(client: C, call: F, seconds: u64) -> Round
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Call + Send + Sync + 'static,
{
    common::round(client, call, seconds, IN_FLIGHT).await
}

fn request() -> EchoRequest {
    EchoRequest {
        message: "benchmark".to_owned(),
        ..Default::default()
    }
}

async fn bare_tonic_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    addr
}

async fn sinew_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::new("bench")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(EchoServer::new(EchoService));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

async fn tonic_client(addr: SocketAddr) -> echo_client::EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    echo_client::EchoClient::new(channel)
}

async fn sinew_client(addr: SocketAddr) -> v1::EchoClient {
    v1::EchoClient::connect(ClientConfig::endpoint(format!("http://{addr}")))
        .await
        .expect("connect")
}

/// `Put` with 20s instead of the contract's 1s.
const PATIENT_PUT: &str = r#"{"methodConfig": [{"name": [{"service": "echo.v1.Echo", "method": "Put"}], "timeout": "20s"}]}"#;

/// A sinew client whose calls to `Put` have 20s instead of the contract's
/// 1s (the rest of the policy is the contract's): for a pair run alone,
/// which is run under valgrind, where calls are some fifty times slower,
/// and slower still on a loaded machine. The calls take the same path:
/// the deadline is set, sent and enforced just the same.
async fn patient_sinew_client(addr: SocketAddr) -> v1::EchoClient {
    let config = ClientConfig::endpoint(format!("http://{addr}"))
        .service_config_json(PATIENT_PUT)
        .expect("service config");
    v1::EchoClient::connect(config).await.expect("connect")
}

/// The certificates of the TLS pairs, made for this run: a CA, and a
/// server certificate for `localhost` signed by it. The files live as
/// long as this does.
struct Tls {
    pki: TestPki,
    server: CertFiles,
}

/// The name the server certificate is for, and the clients verify.
const TLS_NAME: &str = "localhost";

impl Tls {
    fn new() -> Self {
        let pki = TestPki::new("overhead bench CA");
        let server = pki.server(&[TLS_NAME]);
        Self { pki, server }
    }

    /// What the clients of both TLS pairs trust, and expect.
    fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca(self.pki.ca())
            .server_name(TLS_NAME)
    }
}

/// A TLS stream the bare tonic server accepted: tonic implements its
/// `Connected` for `tokio_rustls` streams only with its TLS features, which
/// stay off; the connection info is the TCP stream's, as tonic gives it.
struct TlsConnection(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Bare tonic serving TLS with sinew's rustls configuration: connections
/// accepted (no delay), each handshaken on a task of its own, and handed
/// to tonic as they complete; a failed handshake is dropped.
async fn bare_tonic_tls_server(tls: &Tls) -> SocketAddr {
    let config = ServerTls::load(ServerTlsConfig::new(&tls.server.cert, &tls.server.key))
        .expect("server TLS")
        .current();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted, incoming) = tokio::sync::mpsc::channel::<io::Result<TlsConnection>>(16);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    let _ = accepted.send(Ok(TlsConnection(stream))).await;
                }
            });
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming)),
    );
    addr
}

async fn sinew_tls_server(tls: &Tls) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .tls(&tls.server.cert, &tls.server.key);
    let server = Server::new("bench")
        .config(config)
        .add_service(EchoServer::new(EchoService));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

/// A bare tonic client over TLS with sinew's rustls configuration: its
/// connector dials TCP (no delay) and does the handshake, verifying the
/// server's certificate for `localhost`.
async fn tonic_tls_client(addr: SocketAddr, tls: &Tls) -> echo_client::EchoClient<Channel> {
    let client_tls = ClientTls::load(tls.client_config()).expect("client TLS");
    let connector = tokio_rustls::TlsConnector::from(client_tls.current());
    let name = client_tls.server_name(TLS_NAME).expect("server name");
    let connect = tower::service_fn(move |_: http::Uri| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let stream = connector.connect(name, stream).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .connect_with_connector(connect)
        .await
        .expect("connect");
    echo_client::EchoClient::new(channel)
}

fn sinew_tls_endpoint(addr: SocketAddr, tls: &Tls) -> ClientConfig {
    ClientConfig::endpoint(format!("https://{addr}")).tls(tls.client_config())
}

async fn sinew_tls_client(addr: SocketAddr, tls: &Tls) -> v1::EchoClient {
    v1::EchoClient::connect(sinew_tls_endpoint(addr, tls))
        .await
        .expect("connect")
}

/// [`patient_sinew_client`] over TLS.
async fn patient_sinew_tls_client(addr: SocketAddr, tls: &Tls) -> v1::EchoClient {
    let config = sinew_tls_endpoint(addr, tls)
        .service_config_json(PATIENT_PUT)
        .expect("service config");
    v1::EchoClient::connect(config).await.expect("connect")
}

fn tonic_call(mut client: echo_client::EchoClient<Channel>) -> Call {
    Box::pin(async move {
        client.put(request()).await.expect("tonic call");
    })
}

fn sinew_call(mut client: v1::EchoClient) -> Call {
    Box::pin(async move {
        client.put(request()).await.expect("sinew call");
    })
}

/// An OTLP collector that accepts every export and keeps nothing.
///
/// It reads each export to its end, frame by frame, without gathering or
/// decoding it: it shares the process, and so the two cores, with the
/// pairs being measured, and a real collector runs elsewhere. Gathering
/// and decoding would charge sinew for the collector's work. Every answer
/// is the empty message, which is a full success in OTLP.
#[derive(Clone, Copy)]
struct Sink<const METRICS: bool>;

impl<const METRICS: bool> tower::Service<http::Request<tonic::body::Body>> for Sink<METRICS> {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        use http_body_util::BodyExt as _;

        Box::pin(async move {
            let mut body = request.into_body();
            while let Some(Ok(_)) = body.frame().await {}
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            // An empty message: not compressed, zero bytes long.
            let reply = http_body_util::Full::new(bytes::Bytes::from_static(&[0; 5]))
                .with_trailers(std::future::ready(Some(Ok(trailers))));
            Ok(http::Response::builder()
                .header("content-type", "application/grpc")
                .body(tonic::body::Body::new(reply))
                .expect("a valid response"))
        })
    }
}

impl tonic::server::NamedService for Sink<false> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::NamedService for Sink<true> {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

async fn otlp_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Sink::<false>)
            .add_service(Sink::<true>)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// Telemetry exporting every span to `sink`, with a span queue deep
/// enough that none is dropped: a dropped span is work not done, and would
/// flatter the traced side. Drops are still counted and printed.
fn traced_config(sink: SocketAddr) -> sinew::telemetry::TelemetryConfig {
    sinew::telemetry::TelemetryConfig::new("overhead")
        .endpoint(format!("http://{sink}"))
        .max_queue_size(1 << 16)
}

fn main() {
    let rounds = env_number("SINEW_BENCH_ROUNDS", 3);
    let seconds = env_number("SINEW_BENCH_SECONDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(which) = std::env::var("SINEW_BENCH_ONLY") {
        runtime.block_on(one_pair(&which, rounds, seconds));
        return;
    }
    runtime.block_on(async {
        let tonic_addr = bare_tonic_server().await;
        let sinew_addr = sinew_server().await;

        let tonic_to_tonic = tonic_client(tonic_addr).await;
        let tonic_to_sinew = tonic_client(sinew_addr).await;
        let sinew_to_sinew = sinew_client(sinew_addr).await;
        let sinew_to_tonic = sinew_client(tonic_addr).await;

        // Warm every pair up: connections, allocator, caches.
        round(tonic_to_tonic.clone(), tonic_call, 1).await;
        round(sinew_to_sinew.clone(), sinew_call, 1).await;

        let mut sides: [(&str, Vec<Round>); 4] = [
            ("tonic client -> tonic server", Vec::new()),
            ("sinew client -> sinew server", Vec::new()),
            ("tonic client -> sinew server", Vec::new()),
            ("sinew client -> tonic server", Vec::new()),
        ];
        for i in 0..rounds {
            let results = [
                round(tonic_to_tonic.clone(), tonic_call, seconds).await,
                round(sinew_to_sinew.clone(), sinew_call, seconds).await,
                round(tonic_to_sinew.clone(), tonic_call, seconds).await,
                round(sinew_to_tonic.clone(), sinew_call, seconds).await,
            ];
            for ((name, rounds), result) in sides.iter_mut().zip(results) {
                println!(
                    "round {}: {name}: {:.0} rps, p50 {}us, p99 {}us{}",
                    i + 1,
                    result.rps,
                    result.p50_us,
                    result.p99_us,
                    cpu_text(&result)
                );
                rounds.push(result);
            }
        }
        let medians: Vec<(f64, f64)> = sides
            .iter_mut()
            .map(|(_, rounds)| {
                (
                    median(rounds, |r| r.rps),
                    median(rounds, |r| r.p99_us as f64),
                )
            })
            .collect();
        let (tonic_rps, tonic_p99) = medians[0];
        let (sinew_rps, sinew_p99) = medians[1];
        let tonic_cpu = median_cpu(&mut sides[0].1);
        let sinew_cpu = median_cpu(&mut sides[1].1);
        // Where the cost goes: each side of sinew alone against bare tonic.
        println!(
            "breakdown: sinew server alone {:.3} of tonic; sinew client alone {:.3} of tonic",
            medians[2].0 / tonic_rps,
            medians[3].0 / tonic_rps
        );

        // Both pairs over TLS, before telemetry is switched on (it is
        // process-wide).
        let tls = Tls::new();
        let tonic_tls = tonic_tls_client(bare_tonic_tls_server(&tls).await, &tls).await;
        let sinew_tls = sinew_tls_client(sinew_tls_server(&tls).await, &tls).await;
        round(tonic_tls.clone(), tonic_call, 1).await;
        round(sinew_tls.clone(), sinew_call, 1).await;
        let (mut tonic_tls_rounds, mut sinew_tls_rounds) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let t = round(tonic_tls.clone(), tonic_call, seconds).await;
            let s = round(sinew_tls.clone(), sinew_call, seconds).await;
            println!(
                "tls round {}: tonic tls {:.0} rps, p50 {}us, p99 {}us{} | sinew tls {:.0} rps, p50 {}us, p99 {}us{}",
                i + 1,
                t.rps,
                t.p50_us,
                t.p99_us,
                cpu_text(&t),
                s.rps,
                s.p50_us,
                s.p99_us,
                cpu_text(&s)
            );
            tonic_tls_rounds.push(t);
            sinew_tls_rounds.push(s);
        }
        let tonic_tls_rps = median(&mut tonic_tls_rounds, |r| r.rps);
        let sinew_tls_rps = median(&mut sinew_tls_rounds, |r| r.rps);
        let tls_cpu = median_cpu(&mut tonic_tls_rounds).zip(median_cpu(&mut sinew_tls_rounds));

        // Now with telemetry on, exporting to a sink in this process.
        let sink = otlp_sink().await;
        let telemetry =
            sinew::telemetry::init_with(traced_config(sink).log_filter("warn")).expect("telemetry");
        let traced = sinew_client(sinew_addr).await;
        round(traced.clone(), sinew_call, 1).await;
        let (mut tonic_again, mut traced_rounds) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let t = round(tonic_to_tonic.clone(), tonic_call, seconds).await;
            let s = round(traced.clone(), sinew_call, seconds).await;
            println!(
                "traced round {}: tonic {:.0} rps{} | sinew traced {:.0} rps, p50 {}us, p99 {}us{}",
                i + 1,
                t.rps,
                cpu_text(&t),
                s.rps,
                s.p50_us,
                s.p99_us,
                cpu_text(&s)
            );
            tonic_again.push(t);
            traced_rounds.push(s);
        }
        let traced_ratio =
            median(&mut traced_rounds, |r| r.rps) / median(&mut tonic_again, |r| r.rps);
        println!(
            "dropped spans: {}, failed spans: {}",
            telemetry.dropped_spans(),
            telemetry.failed_spans()
        );
        let _ = telemetry.shutdown().await;

        // The same ratios by CPU time per call (tonic's over sinew's, so
        // that higher is better here too): where they match the ratios
        // above, sinew's gap is work done rather than time spent waiting.
        if let (Some(tonic), Some(sinew), Some(tonic_again), Some(traced), Some((tonic_tls, sinew_tls))) = (
            tonic_cpu,
            sinew_cpu,
            median_cpu(&mut tonic_again),
            median_cpu(&mut traced_rounds),
            tls_cpu,
        ) {
            println!(
                "cpu per call: tonic {tonic:.1}us, sinew {sinew:.1}us; tonic {tonic_again:.1}us, sinew traced {traced:.1}us; tonic tls {tonic_tls:.1}us, sinew tls {sinew_tls:.1}us; by cpu: overhead_ratio {:.3}, traced_ratio {:.3}, tls_ratio {:.3}",
                tonic / sinew,
                tonic_again / traced,
                tonic_tls / sinew_tls
            );
        }

        println!(
            "RESULT overhead_ratio={:.3} sinew_rps={:.0} tonic_rps={:.0} sinew_p99_us={:.0} tonic_p99_us={:.0} traced_ratio={:.3} tls_ratio={:.3} sinew_tls_rps={:.0} tonic_tls_rps={:.0}",
            sinew_rps / tonic_rps,
            sinew_rps,
            tonic_rps,
            sinew_p99,
            tonic_p99,
            traced_ratio,
            sinew_tls_rps / tonic_tls_rps,
            sinew_tls_rps,
            tonic_tls_rps
        );
    });
}

/// One pair alone, for a profiler: see `SINEW_BENCH_ONLY` in the crate docs.
async fn one_pair(which: &str, rounds: u64, seconds: u64) {
    let mut telemetry = None;
    if which.starts_with("traced") {
        let sink = otlp_sink().await;
        let config = match which {
            "traced" => traced_config(sink),
            "traced-unsampled" => sinew::telemetry::TelemetryConfig::new("overhead")
                .sampler(sinew::telemetry::TraceSampler::AlwaysOff),
            _ => sinew::telemetry::TelemetryConfig::new("overhead"),
        };
        telemetry =
            Some(sinew::telemetry::init_with(config.log_filter("warn")).expect("telemetry"));
    }
    let tls = which.ends_with("-tls").then(Tls::new);
    for i in 0..rounds {
        let r = if let Some(tls) = &tls {
            if which == "tonic-tls" {
                round(
                    tonic_tls_client(bare_tonic_tls_server(tls).await, tls).await,
                    tonic_call,
                    seconds,
                )
                .await
            } else {
                round(
                    patient_sinew_tls_client(sinew_tls_server(tls).await, tls).await,
                    sinew_call,
                    seconds,
                )
                .await
            }
        } else if which == "tonic" {
            round(
                tonic_client(bare_tonic_server().await).await,
                tonic_call,
                seconds,
            )
            .await
        } else if which == "sinew-server" {
            round(
                tonic_client(sinew_server().await).await,
                tonic_call,
                seconds,
            )
            .await
        } else if which == "sinew-client" {
            round(
                patient_sinew_client(bare_tonic_server().await).await,
                sinew_call,
                seconds,
            )
            .await
        } else {
            round(
                patient_sinew_client(sinew_server().await).await,
                sinew_call,
                seconds,
            )
            .await
        };
        println!(
            "{which} round {}: {:.0} rps, {} calls, p99 {}us{}",
            i + 1,
            r.rps,
            r.calls,
            r.p99_us,
            cpu_text(&r)
        );
    }
    if let Some(telemetry) = telemetry {
        println!(
            "dropped spans: {}, failed spans: {}",
            telemetry.dropped_spans(),
            telemetry.failed_spans()
        );
        let _ = telemetry.shutdown().await;
    }
}
