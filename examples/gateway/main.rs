//! The gateway, the whole story, over real gRPC and HTTP on loopback:
//!
//! 1. a "legacy" orders service, and its replacement (the same contract,
//!    `proto/storefront/orders/v1/orders.proto`), which has a bug at first;
//! 2. payments and shipments services, and an order-details handler hosted
//!    in the gateway itself that gathers an order, its payment and its
//!    shipment at once;
//! 3. the gateway in front of them all, with HTTP/JSON routes from the
//!    contracts' `google.api.http` bindings and its OpenAPI document;
//! 4. a weighted split, 5% of orders calls to the replacement, with every
//!    call also shadowed to it and compared: the bug shows up as
//!    mismatches, and once it is fixed they stop;
//! 5. a reload of the routes file that moves all the traffic to the
//!    replacement, without a restart;
//! 6. the aggregation with the shipments service stopped: the order and
//!    payment still come back, and the shipment's part says why it is
//!    missing.
//!
//! Run with `cargo run --example gateway`. It prints what each step did and
//! exits 0 when every step went as described, 1 otherwise.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program talks to its user"
)]

use std::{net::SocketAddr, process::ExitCode, sync::atomic::Ordering, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use sinew::{
    Server,
    client::ClientConfig,
    gateway::{Contracts, Gateway, GatewayConfig},
    server::ServerConfig,
};
use sinew_workspace::{
    proto::{
        FILE_DESCRIPTOR_SET,
        storefront::{
            details::v1::order_details_server::OrderDetailsServer,
            orders::v1::{OrdersClient, orders_server::OrdersServer},
            payments::v1::{PaymentsClient, payments_server::PaymentsServer},
            shipments::v1::{ShipmentsClient, shipments_server::ShipmentsServer},
        },
    },
    storefront::{DetailsService, OrdersService, PaymentsService, ShipmentsService},
};
use tokio::{net::TcpListener, sync::oneshot};

/// A server on a free loopback port, stopped by dropping its sender.
async fn start(server: Server) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = server.config(ServerConfig::new().lame_duck(Duration::ZERO));
    tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// The routes file: orders split between legacy and modern by `weights`,
/// shadowed to modern while any goes to legacy.
fn routes(addrs: &Addrs, legacy: u32, modern: u32) -> String {
    let shadow = if legacy > 0 {
        "shadow = \"modern\"\n"
    } else {
        ""
    };
    format!(
        r#"# The example's gateway: written by the example, reloaded when it changes.
[gateway]
reload_interval = "100ms"

[clusters.legacy]
endpoints = ["http://{legacy_addr}"]

[clusters.modern]
endpoints = ["http://{modern_addr}"]

[clusters.payments]
endpoints = ["http://{payments}"]

[clusters.shipments]
endpoints = ["http://{shipments}"]

[[routes]]
match = "storefront.orders.v1.Orders"
split = {{ legacy = {legacy}, modern = {modern} }}
override = [{{ header = "x-use-modern", cluster = "modern" }}]
{shadow}
[[routes]]
match = "storefront.payments"
cluster = "payments"

[[routes]]
match = "storefront.shipments"
cluster = "shipments"
"#,
        legacy_addr = addrs.legacy,
        modern_addr = addrs.modern,
        payments = addrs.payments,
        shipments = addrs.shipments,
    )
}

struct Addrs {
    legacy: SocketAddr,
    modern: SocketAddr,
    payments: SocketAddr,
    shipments: SocketAddr,
}

type Http = HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

async fn get(http: &Http, url: &str) -> (u16, String) {
    let response = http
        .get(url.parse().expect("url"))
        .await
        .expect("HTTP call");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_for_version(gateway: &Gateway, version: u64) -> bool {
    for _ in 0..100 {
        if gateway.version() == version {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn settle(gateway: &Gateway, compared: u64) {
    let stats = gateway.stats();
    for _ in 0..200 {
        if stats.shadow_matched() + stats.shadow_mismatched() + stats.shadow_failed() >= compared {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings only: the shadow comparison's mismatches are warnings.
    let _telemetry = sinew::telemetry::init_with(
        sinew::telemetry::TelemetryConfig::new("gateway-example").log_filter("warn"),
    )
    .ok();
    match run().await {
        Ok(()) => {
            println!("\nevery step went as described");
            ExitCode::SUCCESS
        }
        Err(failed) => {
            eprintln!("\nFAILED: {failed}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // 1 and 2: the services behind the gateway.
    let legacy_service = OrdersService::new();
    let modern_service = OrdersService::new();
    let bug = modern_service.bug();
    bug.store(true, Ordering::SeqCst);
    let (legacy_calls, modern_calls) = (legacy_service.calls(), modern_service.calls());
    let (legacy, _l) =
        start(Server::new("legacy-orders").add_service(OrdersServer::new(legacy_service))).await;
    let (modern, _m) =
        start(Server::new("orders-v2").add_service(OrdersServer::new(modern_service))).await;
    let (payments, _p) =
        start(Server::new("payments").add_service(PaymentsServer::new(PaymentsService))).await;
    let (shipments, stop_shipments) =
        start(Server::new("shipments").add_service(ShipmentsServer::new(ShipmentsService))).await;
    let addrs = Addrs {
        legacy,
        modern,
        payments,
        shipments,
    };
    println!(
        "legacy orders on {legacy}, orders-v2 on {modern}, payments on {payments}, shipments on {shipments}"
    );

    // 3: the gateway, from its routes file.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, routes(&addrs, 95, 5)).map_err(|e| e.to_string())?;
    let config = GatewayConfig::from_file(&path).map_err(|e| e.to_string())?;
    let contracts = Contracts::from_encoded([FILE_DESCRIPTOR_SET]).map_err(|e| e.to_string())?;
    let gateway = Gateway::new(config, contracts)
        .await
        .map_err(|e| e.to_string())?;
    let _watch = gateway.watch();

    let grpc_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let grpc = grpc_listener.local_addr().map_err(|e| e.to_string())?;
    // HTTP calls with no route (the details) go to the gateway's own server.
    gateway
        .local_handlers(grpc)
        .await
        .map_err(|e| e.to_string())?;
    // The details handler calls the upstreams through the gateway, so the
    // strangler routes apply to its calls too.
    let through = || ClientConfig::endpoint(format!("http://{grpc}"));
    let details = DetailsService::new(
        OrdersClient::connect(through())
            .await
            .map_err(|e| e.to_string())?,
        PaymentsClient::connect(through())
            .await
            .map_err(|e| e.to_string())?,
        ShipmentsClient::connect(through())
            .await
            .map_err(|e| e.to_string())?,
        Duration::from_millis(500),
    );
    let server = gateway
        .server("gateway")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(OrderDetailsServer::new(details));
    let (_stop_grpc, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve_with_listener(grpc_listener, async {
        let _ = stopped.await;
    }));
    let http_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;
    let (_stop_http, http_stopped) = oneshot::channel::<()>();
    let serving = gateway.clone();
    tokio::spawn(async move {
        let _ = serving
            .serve_http(http_listener, async {
                let _ = http_stopped.await;
            })
            .await;
    });
    println!("gateway: gRPC on {grpc}, HTTP/JSON on {http_addr}");
    let http: Http = HttpClient::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{http_addr}");

    println!("\n== HTTP/JSON, transcoded from the contracts");
    let (status, body) = get(&http, &format!("{base}/v1/orders/o-2")).await;
    println!("GET /v1/orders/o-2 -> {status} {body}");
    if status != 200 || !body.contains("\"id\":\"o-2\"") {
        return Err("GET /v1/orders/o-2 did not answer the order".into());
    }
    let (status, body) = get(&http, &format!("{base}/v1/customers/ada/orders?limit=2")).await;
    println!(
        "GET /v1/customers/ada/orders?limit=2 -> {status} (one JSON document per line)\n{}",
        body.trim_end()
    );
    if status != 200 || body.lines().count() != 2 {
        return Err("the server stream did not come back as two lines".into());
    }
    let (status, body) = get(&http, &format!("{base}/v1/orders/o-404")).await;
    println!("GET /v1/orders/o-404 -> {status} {body}");
    let (status, openapi) = get(&http, &format!("{base}/openapi.json")).await;
    println!("GET /openapi.json -> {status}, {} bytes", openapi.len());

    println!("\n== 5% to orders-v2, every call shadowed to it and compared (orders-v2 has a bug)");
    let stats = gateway.stats();
    let ids = ["o-1", "o-2", "o-3", "o-4"];
    for i in 0..200 {
        let _ = get(&http, &format!("{base}/v1/orders/{}", ids[i % 4])).await;
    }
    settle(&gateway, 200).await;
    println!(
        "legacy answered {}, orders-v2 answered {} (shadows included); shadow comparisons: {} equal, {} different",
        legacy_calls.load(Ordering::SeqCst),
        modern_calls.load(Ordering::SeqCst),
        stats.shadow_matched(),
        stats.shadow_mismatched(),
    );
    if stats.shadow_mismatched() == 0 {
        return Err("the bug was not caught by the shadow comparison".into());
    }

    println!("\n== orders-v2 fixed: the shadows agree");
    bug.store(false, Ordering::SeqCst);
    let mismatched = stats.shadow_mismatched();
    let compared = stats.shadow_matched() + stats.shadow_mismatched() + stats.shadow_failed();
    for i in 0..100 {
        let _ = get(&http, &format!("{base}/v1/orders/{}", ids[i % 4])).await;
    }
    settle(&gateway, compared + 100).await;
    println!(
        "shadow comparisons: {} equal, {} different",
        stats.shadow_matched(),
        stats.shadow_mismatched()
    );
    if stats.shadow_mismatched() != mismatched {
        return Err("the fixed service still differs".into());
    }

    println!("\n== the routes file moves all traffic to orders-v2; the gateway reloads it");
    std::fs::write(&path, routes(&addrs, 0, 100)).map_err(|e| e.to_string())?;
    if !wait_for_version(&gateway, 2).await {
        return Err("the gateway did not reload its routes".into());
    }
    let legacy_before = legacy_calls.load(Ordering::SeqCst);
    for i in 0..50 {
        let _ = get(&http, &format!("{base}/v1/orders/{}", ids[i % 4])).await;
    }
    println!(
        "routes version {}: legacy answered {} of the next 50 calls",
        gateway.version(),
        legacy_calls.load(Ordering::SeqCst) - legacy_before
    );
    if legacy_calls.load(Ordering::SeqCst) != legacy_before {
        return Err("legacy still got calls after the reload".into());
    }

    println!("\n== aggregation: an order with its payment and shipment, in one call");
    let (status, body) = get(&http, &format!("{base}/v1/orders/o-2/details")).await;
    println!("GET /v1/orders/o-2/details -> {status} {body}");
    if status != 200 || !body.contains("\"tracking\"") {
        return Err("the details did not gather all three parts".into());
    }
    drop(stop_shipments);
    // Until the shipments server has stopped listening.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(shipments).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = get(&http, &format!("{base}/v1/orders/o-2/details")).await;
    println!("with shipments stopped -> {status} {body}");
    // The order and the payment, and the shipment's part UNAVAILABLE (14).
    if status != 200
        || body.contains("\"tracking\"")
        || !body.contains("\"amountCents\"")
        || !body.contains("\"code\":14")
    {
        return Err("the details did not come back partial".into());
    }
    Ok(())
}
