//! What sinew costs over bare tonic, measured in one run.
//!
//! An echo service is served by a bare tonic server and called by a bare
//! tonic client, and served by the sinew scaffold and called by a sinew
//! generated client with every default layer on (deadline, bulkhead,
//! retries with throttling, circuit breaker, load balancer; and on the
//! server the deadline ceiling, message limits and panic guard). Each
//! client keeps 64 calls of `Put` in flight.
//!
//! The run is the instrument of `common::instrument`: every client and
//! every server is a process of its own (this binary, started again in a
//! role), clients pinned to the first core and servers to the second; the
//! pairs take turns in short rounds (`SINEW_BENCH_ROUNDS` cycles, default
//! 150, of rounds of `SINEW_BENCH_ROUND_MS`, default 100, each subject
//! between two rounds of its base), over `SINEW_BENCH_GENERATIONS` sets
//! of processes (default 5), and each ratio is the median of the
//! per-cycle ratios with a 95% bootstrap confidence interval, by CPU time
//! per call (client and server, from `/proc`; tonic's over sinew's, so
//! that higher is better) and by calls a second. Per call it also
//! prints context switches and system calls, and then the same pairs take
//! turns again on a loaded host (a burner on each core, busy
//! `SINEW_BENCH_LOAD` of the time, default 0.5), and a short pass with
//! `perf` attached counts `futex`, `epoll_wait`, `writev` and the other
//! system calls per call.
//!
//! Then OpenTelemetry is switched on in another sinew client (100%
//! sampling, spans and metrics exported over OTLP to a collector in a
//! process of its own that drops what it receives without decoding it),
//! and that traced pair takes its turns with the others: `traced_ratio`.
//!
//! To show where the cost goes, each side of sinew is also measured alone
//! against bare tonic (a tonic client calling a sinew server, a sinew
//! client calling a tonic server).
//!
//! Both pairs are also measured over TLS, taking their turns with the
//! others: `tls_ratio`. Certificates are made at the start ([`TestPki`]: a
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
//! Run with: `cargo bench --bench overhead` (`SINEW_BENCH_PIN=0` runs
//! the processes unpinned).
//!
//! `SINEW_BENCH_ONLY=tonic`, `sinew` or `traced` runs that pair alone, in
//! this process, for a profiler (`SINEW_BENCH_ROUNDS` rounds, default 3,
//! of `SINEW_BENCH_SECONDS`, default 3), and prints no RESULT line;
//! `traced-unexported` and `traced-unsampled` trace without an endpoint,
//! and sample nothing; `sinew-server` and `sinew-client` pair one side of
//! sinew with bare tonic; `tonic-tls` and `sinew-tls` are the TLS pairs; a
//! sinew client run alone gives `Put` 20s instead of 1s, so that
//! valgrind's slowness does not fail its calls.
//!
//! The last line is exactly:
//! `RESULT overhead_ratio=<r> loaded_ratio=<r> traced_ratio=<r> tls_ratio=<r> overhead_rps_ratio=<r> loaded_rps_ratio=<r> traced_rps_ratio=<r> tls_rps_ratio=<r> sinew_rps=<n> tonic_rps=<n> sinew_p99_us=<n> tonic_p99_us=<n>`,
//! where the `_ratio`s are by CPU time per call and the `_rps_ratio`s by
//! calls a second, each the median over the round pairs.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use common::{
    Call, Round, cpu_text, env_number,
    instrument::{self, Group, Pair, Plan, Proc},
};

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
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
use sinew_testing::pki::TestPki;
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
/// long as the [`TestPki`] that made them, held by the process that made
/// them; the processes it starts get their paths.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    _pki: Option<TestPki>,
}

/// The name the server certificate is for, and the clients verify.
const TLS_NAME: &str = "localhost";

/// The environment variables that hand the TLS files to a child.
const TLS_ENV: [&str; 3] = [
    "SINEW_BENCH_TLS_CERT",
    "SINEW_BENCH_TLS_KEY",
    "SINEW_BENCH_TLS_CA",
];

impl Tls {
    fn new() -> Self {
        let pki = TestPki::new("overhead bench CA");
        let server = pki.server(&[TLS_NAME]);
        Self {
            cert: server.cert,
            key: server.key,
            ca: pki.ca().to_owned(),
            _pki: Some(pki),
        }
    }

    /// The files a parent made, from the environment.
    fn from_env() -> Self {
        let [cert, key, ca] = TLS_ENV.map(|key| {
            PathBuf::from(std::env::var_os(key).unwrap_or_else(|| panic!("{key} is set")))
        });
        Self {
            cert,
            key,
            ca,
            _pki: None,
        }
    }

    /// The environment that gives a child these files.
    fn env(&self) -> Vec<(&'static str, String)> {
        [&self.cert, &self.key, &self.ca]
            .into_iter()
            .zip(TLS_ENV)
            .map(|(path, key)| (key, path.display().to_string()))
            .collect()
    }

    /// What the clients of both TLS pairs trust, and expect.
    fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca(&self.ca).server_name(TLS_NAME)
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
    let config = ServerTls::load(ServerTlsConfig::new(&tls.cert, &tls.key))
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
        .tls(&tls.cert, &tls.key);
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
    if let Some(role) = instrument::role() {
        child(&role);
        return;
    }
    if let Ok(which) = std::env::var("SINEW_BENCH_ONLY") {
        let rounds = env_number("SINEW_BENCH_ROUNDS", 3);
        let seconds = env_number("SINEW_BENCH_SECONDS", 3);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(one_pair(&which, rounds, seconds));
        return;
    }
    instrumented(Plan::from_env());
}

/// A process of the instrumented run, in `role`: a server (`server:<kind>`)
/// or the OTLP sink (`sink`), which answer with their address and serve
/// until their standard input closes; a client (`client:<kind>`) of the
/// server at `SINEW_BENCH_ADDR`, which answers `ready` and then runs the
/// rounds it is asked for; or a burner (`burn`).
fn child(role: &str) {
    if role == "burn" {
        instrument::burn();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = match role {
        "sink" => Some(runtime.block_on(otlp_sink())),
        "server:tonic" => Some(runtime.block_on(bare_tonic_server())),
        "server:sinew" => Some(runtime.block_on(sinew_server())),
        "server:tonic-tls" => Some(runtime.block_on(bare_tonic_tls_server(&Tls::from_env()))),
        "server:sinew-tls" => Some(runtime.block_on(sinew_tls_server(&Tls::from_env()))),
        _ => None,
    };
    if let Some(addr) = server {
        instrument::reply(&format!("addr {addr}"));
        for _ in instrument::commands() {}
        return;
    }
    let addr: SocketAddr = std::env::var("SINEW_BENCH_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .expect("SINEW_BENCH_ADDR is the server's address");
    match role {
        "client:tonic" => {
            let client = runtime.block_on(tonic_client(addr));
            run_rounds(&runtime, &client, tonic_call, None);
        }
        "client:sinew" => {
            let client = runtime.block_on(sinew_client(addr));
            run_rounds(&runtime, &client, sinew_call, None);
        }
        "client:traced" => {
            let sink: SocketAddr = std::env::var("SINEW_BENCH_SINK")
                .ok()
                .and_then(|a| a.parse().ok())
                .expect("SINEW_BENCH_SINK is the OTLP sink's address");
            let telemetry = runtime.block_on(async {
                sinew::telemetry::init_with(traced_config(sink).log_filter("warn"))
                    .expect("telemetry")
            });
            let client = runtime.block_on(sinew_client(addr));
            run_rounds(&runtime, &client, sinew_call, Some(&telemetry));
            let _ = runtime.block_on(telemetry.shutdown());
        }
        "client:tonic-tls" => {
            let client = runtime.block_on(tonic_tls_client(addr, &Tls::from_env()));
            run_rounds(&runtime, &client, tonic_call, None);
        }
        "client:sinew-tls" => {
            let client = runtime.block_on(sinew_tls_client(addr, &Tls::from_env()));
            run_rounds(&runtime, &client, sinew_call, None);
        }
        _ => panic!("unknown role {role}"),
    }
}

/// A client's loop: `ready`, then a round for each `round <millis>`, and
/// the span counts for `spans`, until standard input closes.
fn run_rounds<C: Clone + Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    client: &C,
    call: fn(C) -> Call,
    telemetry: Option<&sinew::telemetry::Telemetry>,
) {
    instrument::reply("ready");
    for line in instrument::commands() {
        if let Some(length) = instrument::round_command(&line) {
            let round =
                runtime.block_on(common::round_for(client.clone(), call, length, IN_FLIGHT));
            instrument::reply_round(&round);
        } else if line == "spans" {
            let (dropped, failed) =
                telemetry.map_or((0, 0), |t| (t.dropped_spans(), t.failed_spans()));
            instrument::reply(&format!("dropped spans: {dropped}, failed spans: {failed}"));
        }
    }
}

/// The instrumented run: every pair in processes of its own, taking turns
/// in short rounds, on a quiet host and then on a loaded one; then the
/// system calls; then the ratios.
fn instrumented(plan: Plan) {
    match instrument::cores() {
        Some((client, server)) => {
            println!("clients pinned to core {client}, servers to core {server}");
        }
        None => println!("not pinned (one core, no taskset, or SINEW_BENCH_PIN=0)"),
    }
    let tls = Tls::new();
    let tls_env = tls.env();
    let mut sink = Proc::spawn("OTLP sink", "sink", None, &[]);
    let sink_addr = sink.recv();
    let sink_env = [(
        "SINEW_BENCH_SINK",
        sink_addr
            .strip_prefix("addr ")
            .expect("the sink's address")
            .to_owned(),
    )];
    let groups = [
        Group {
            base: 0,
            subjects: vec![1, 2, 3, 4],
        },
        Group {
            base: 5,
            subjects: vec![6],
        },
    ];
    println!(
        "unary echo.v1.Echo/Put, {IN_FLIGHT} calls in flight; {} cycles of rounds of {}ms, each subject between two rounds of its base",
        plan.rounds,
        plan.length.as_millis()
    );
    // The first three take turns on the loaded host too; the last two are
    // compared with each other.
    let start = |loaded: bool| {
        let mut pairs = vec![
            Pair::start("tonic", "server:tonic", "client:tonic", &[]),
            Pair::start("sinew", "server:sinew", "client:sinew", &[]),
            Pair::start("sinew traced", "server:sinew", "client:traced", &sink_env),
        ];
        if !loaded {
            pairs.extend([
                Pair::start("tonic -> sinew server", "server:sinew", "client:tonic", &[]),
                Pair::start("sinew client -> tonic", "server:tonic", "client:sinew", &[]),
                Pair::start(
                    "tonic tls",
                    "server:tonic-tls",
                    "client:tonic-tls",
                    &tls_env,
                ),
                Pair::start(
                    "sinew tls",
                    "server:sinew-tls",
                    "client:sinew-tls",
                    &tls_env,
                ),
            ]);
        }
        pairs
    };
    let (quiet, mut pairs) = instrument::generations(|| start(false), &groups, plan);
    for (pair, rounds) in pairs.iter().zip(&quiet) {
        println!("{}", instrument::describe(&pair.name, rounds));
    }

    let share = instrument::Load::share();
    println!(
        "loaded host: a burner on each core, busy {:.0}% of every 10ms",
        share * 100.0
    );
    let load = instrument::Load::start(share);
    let loaded_groups = [Group {
        base: 0,
        subjects: vec![1, 2],
    }];
    let (loaded, _) = instrument::generations(|| start(true), &loaded_groups, plan);
    drop(load);
    for (pair, rounds) in pairs.iter().zip(&loaded) {
        println!(
            "{}",
            instrument::describe(&format!("{} (loaded)", pair.name), rounds)
        );
    }

    instrument::count_syscalls(&mut pairs, plan, 20);
    pairs[2].client.send("spans");
    println!("sinew traced: {}", pairs[2].client.recv());

    let [overhead, traced, server_alone, client_alone] =
        [0, 1, 2, 3].map(|j| instrument::compare(&quiet, &groups[0], j));
    let tls_ratio = instrument::compare(&quiet, &groups[1], 0);
    let loaded_ratio = instrument::compare(&loaded, &loaded_groups[0], 0);
    let loaded_traced = instrument::compare(&loaded, &loaded_groups[0], 1);
    println!("ratios, median [95% confidence interval], by CPU time per call | by calls a second:");
    for (name, (cpu, rps)) in [
        ("sinew / tonic", overhead),
        ("sinew traced / tonic", traced),
        ("sinew server alone / tonic", server_alone),
        ("sinew client alone / tonic", client_alone),
        ("sinew tls / tonic tls", tls_ratio),
        ("sinew / tonic, loaded", loaded_ratio),
        ("sinew traced / tonic, loaded", loaded_traced),
    ] {
        println!("  {name}: {cpu} | {rps}");
    }
    let median = |rounds: &[instrument::Measured], key: fn(&instrument::Measured) -> f64| {
        instrument::median_of(&mut rounds.iter().map(key).collect::<Vec<_>>())
    };
    println!(
        "RESULT overhead_ratio={:.3} loaded_ratio={:.3} traced_ratio={:.3} tls_ratio={:.3} overhead_rps_ratio={:.3} loaded_rps_ratio={:.3} traced_rps_ratio={:.3} tls_rps_ratio={:.3} sinew_rps={:.0} tonic_rps={:.0} sinew_p99_us={:.0} tonic_p99_us={:.0}",
        overhead.0.median,
        loaded_ratio.0.median,
        traced.0.median,
        tls_ratio.0.median,
        overhead.1.median,
        loaded_ratio.1.median,
        traced.1.median,
        tls_ratio.1.median,
        median(&quiet[1], |r| r.rps),
        median(&quiet[0], |r| r.rps),
        median(&quiet[1], |r| r.p99_us as f64),
        median(&quiet[0], |r| r.p99_us as f64),
    );
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
