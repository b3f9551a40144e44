//! What the gateway costs, measured in one run: the same echo calls made
//!
//! 1. **direct**: a sinew client calling the echo service on sinew's
//!    scaffold;
//! 2. **forward**: the same client calling the gateway, which forwards each
//!    call (bytes, not decoded) through its cluster's resilient client to
//!    the same echo server;
//! 3. **json**: HTTP/1.1 `POST /echo.v1.Echo/Put` with a JSON body, to the
//!    gateway's HTTP side (hyper's pooled client, keep-alive), which
//!    transcodes it to the same gRPC call and the answer back to JSON.
//!
//! All three carry `{"message": "benchmark"}` to `echo.v1.Echo/Put`, with
//! 64 calls in flight from 64 tasks, in alternating rounds (direct,
//! forward, json, direct, …) so that drift on the machine hits each alike;
//! each side's result is the median of its rounds. Everything runs in this
//! process, on one runtime: the gateway's hop shares the two cores with
//! the client and the echo server, so a forwarded call costs roughly twice
//! the work of a direct one.
//!
//! `gateway_added_p50_us` is the median latency of a forwarded call less a
//! direct one's, each measured with one call in flight (so queueing does
//! not count), over `SINEW_BENCH_SECONDS` each.
//!
//! Each round also reports the CPU time the process spent per call (all of
//! its threads, from `/proc/self/stat`, on Linux).
//!
//! Run with: `cargo bench --bench gateway` (`SINEW_BENCH_ROUNDS` and
//! `SINEW_BENCH_SECONDS` change the rounds per side, default 3, and the
//! seconds per round, default 3; `SINEW_BENCH_ONLY=direct`, `forward` or
//! `json` runs that side alone, for a profiler or
//! `SINEW_BENCH=gateway benches/instructions.sh direct forward json`, and
//! prints no RESULT line).
//!
//! The last line is exactly:
//! `RESULT forward_ratio=<via gateway rps / direct rps> json_ratio=<HTTP/JSON rps / direct rps> gateway_added_p50_us=<n>`

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use common::{Call, Round, cpu_text, env_number, median, round};

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use sinew::{
    Server,
    client::ClientConfig,
    gateway::{Contracts, Gateway, GatewayConfig},
    server::ServerConfig,
};
use sinew_workspace::{
    echo::EchoService,
    proto::{
        FILE_DESCRIPTOR_SET,
        echo::v1::{self, EchoRequest, echo_server::EchoServer},
    },
};
use tokio::net::TcpListener;

const IN_FLIGHT: usize = 64;

type Http = HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn request() -> EchoRequest {
    EchoRequest {
        message: "benchmark".to_owned(),
        ..Default::default()
    }
}

/// `Put` with 20s instead of the contract's 1s, for runs under valgrind.
const PATIENT_PUT: &str = r#"{"methodConfig": [{"name": [{"service": "echo.v1.Echo", "method": "Put"}], "timeout": "20s"}]}"#;

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::new("echo")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(EchoServer::new(EchoService));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

/// The gateway in front of `echo`: its gRPC and HTTP addresses.
async fn gateway(echo: SocketAddr) -> (SocketAddr, SocketAddr) {
    let config = format!(
        "[clusters.echo]\nendpoints = [\"http://{echo}\"]\ntimeout = \"20s\"\n\n[[routes]]\nmatch = \"echo.v1\"\ncluster = \"echo\"\ntimeout = \"20s\"\n"
    );
    let gateway = Gateway::new(
        GatewayConfig::parse(&config).expect("config"),
        Contracts::from_encoded([FILE_DESCRIPTOR_SET]).expect("contracts"),
    )
    .await
    .expect("gateway");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc_addr = grpc.local_addr().expect("addr");
    let server = gateway
        .server("gateway")
        .config(ServerConfig::new().lame_duck(Duration::ZERO));
    tokio::spawn(server.serve_with_listener(grpc, std::future::pending()));
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_addr = http.local_addr().expect("addr");
    tokio::spawn(async move {
        gateway
            .serve_http(http, std::future::pending())
            .await
            .expect("HTTP side");
    });
    (grpc_addr, http_addr)
}

async fn grpc_client(addr: SocketAddr) -> v1::EchoClient {
    let config = ClientConfig::endpoint(format!("http://{addr}"))
        .service_config_json(PATIENT_PUT)
        .expect("service config");
    v1::EchoClient::connect(config).await.expect("connect")
}

fn grpc_call(mut client: v1::EchoClient) -> Call {
    Box::pin(async move {
        client.put(request()).await.expect("gRPC call");
    })
}

#[derive(Clone)]
struct JsonClient {
    http: Http,
    url: Arc<http::Uri>,
}

fn json_client(addr: SocketAddr) -> JsonClient {
    JsonClient {
        http: HttpClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IN_FLIGHT)
            .build_http(),
        url: Arc::new(
            format!("http://{addr}/echo.v1.Echo/Put")
                .parse()
                .expect("url"),
        ),
    }
}

fn json_call(client: JsonClient) -> Call {
    Box::pin(async move {
        let request = http::Request::post((*client.url).clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"message":"benchmark"}"#)))
            .expect("request");
        let response = client.http.request(request).await.expect("HTTP call");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(body.starts_with(br#"{"message":"benchmark""#), "{body:?}");
    })
}

fn main() {
    let rounds = env_number("SINEW_BENCH_ROUNDS", 3);
    let seconds = env_number("SINEW_BENCH_SECONDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let echo = echo_server().await;
        let (gateway_grpc, gateway_http) = gateway(echo).await;
        let direct = grpc_client(echo).await;
        let forward = grpc_client(gateway_grpc).await;
        let json = json_client(gateway_http);

        if let Ok(which) = std::env::var("SINEW_BENCH_ONLY") {
            for i in 0..rounds {
                let r = match which.as_str() {
                    "direct" => round(direct.clone(), grpc_call, seconds, IN_FLIGHT).await,
                    "forward" => round(forward.clone(), grpc_call, seconds, IN_FLIGHT).await,
                    "json" => round(json.clone(), json_call, seconds, IN_FLIGHT).await,
                    other => panic!("SINEW_BENCH_ONLY={other}: direct, forward or json"),
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
            return;
        }

        // Warm up: connections, pools, caches.
        round(direct.clone(), grpc_call, 1, IN_FLIGHT).await;
        round(forward.clone(), grpc_call, 1, IN_FLIGHT).await;
        round(json.clone(), json_call, 1, IN_FLIGHT).await;

        let mut sides: [(&str, Vec<Round>); 3] = [
            ("direct", Vec::new()),
            ("via gateway (gRPC)", Vec::new()),
            ("via gateway (HTTP/JSON)", Vec::new()),
        ];
        for i in 0..rounds {
            let results = [
                round(direct.clone(), grpc_call, seconds, IN_FLIGHT).await,
                round(forward.clone(), grpc_call, seconds, IN_FLIGHT).await,
                round(json.clone(), json_call, seconds, IN_FLIGHT).await,
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
        let rps: Vec<f64> = sides
            .iter_mut()
            .map(|(_, rounds)| median(rounds, |r| r.rps))
            .collect();
        let cpu: Vec<Option<f64>> = sides
            .iter_mut()
            .map(|(_, rounds)| {
                rounds
                    .iter()
                    .all(|r| r.cpu_us.is_some())
                    .then(|| median(rounds, |r| r.cpu_us.unwrap_or_default()))
            })
            .collect();

        // Latency added, one call at a time.
        let alone_direct = round(direct.clone(), grpc_call, seconds, 1).await;
        let alone_forward = round(forward.clone(), grpc_call, seconds, 1).await;
        println!(
            "one call in flight: direct p50 {}us, via gateway p50 {}us",
            alone_direct.p50_us, alone_forward.p50_us
        );
        if let [Some(direct), Some(forward), Some(json)] = cpu[..] {
            println!(
                "cpu per call: direct {direct:.1}us, via gateway {forward:.1}us ({:.2}x), HTTP/JSON {json:.1}us ({:.2}x)",
                forward / direct,
                json / direct
            );
        }
        println!(
            "RESULT forward_ratio={:.3} json_ratio={:.3} gateway_added_p50_us={}",
            rps[1] / rps[0],
            rps[2] / rps[0],
            alone_forward.p50_us.saturating_sub(alone_direct.p50_us)
        );
    });
}
