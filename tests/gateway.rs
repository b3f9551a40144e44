//! The gateway's gRPC side, over real sockets: forwarding of every
//! streaming kind, metadata and deadlines, weighted routing with
//! overrides, shadow comparison, hot reload, rate limits and edge
//! authentication.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::gateway::{
    TestUsers, config_text, contracts, echo_upstream, orders_upstream, start_gateway, start_with,
};
use futures_util::StreamExt as _;
use sinew::{
    client::{CallOptions, ClientConfig},
    gateway::{Contracts, Gateway, GatewayConfig},
};
use sinew_workspace::{
    proto::{
        echo::v1::{EchoClient, EchoRequest},
        storefront::orders::v1::{CreateOrderRequest, GetOrderRequest, Item, Order, OrdersClient},
    },
    storefront::OrdersService,
};
use tonic::{Code, Request};

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

async fn echo_client(addr: std::net::SocketAddr) -> EchoClient {
    EchoClient::connect(ClientConfig::endpoint(format!("http://{addr}")))
        .await
        .unwrap()
}

#[tokio::test]
async fn every_streaming_kind_is_forwarded() {
    let (upstream, gateway, running) =
        echo_gateway("[[routes]]\nmatch = \"echo.v1\"\ncluster = \"echo\"\n").await;
    let mut client = echo_client(running.addr).await;

    let reply = client.put(echo("unary")).await.unwrap().into_inner();
    assert_eq!(reply.message, "unary");

    let mut expand = echo("server");
    expand.count = 3;
    let replies: Vec<_> = client
        .expand(expand)
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().message)
        .collect()
        .await;
    assert_eq!(replies, ["server", "server", "server"]);

    let sent = futures_util::stream::iter([echo("cl"), echo("ie"), echo("nt")]);
    let reply = client.collect(sent).await.unwrap().into_inner();
    assert_eq!(reply.message, "client");

    let sent = futures_util::stream::iter([echo("a"), echo("b")]);
    let replies: Vec<_> = client
        .chat(sent)
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().message)
        .collect()
        .await;
    assert_eq!(replies, ["a", "b"]);

    // An error status comes back as the upstream sent it.
    let mut failing = echo("x");
    failing.fail_with = Code::FailedPrecondition as i32;
    let status = client.put(failing).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "asked to fail");

    assert_eq!(upstream.calls(), 5);
    assert_eq!(gateway.stats().forwarded(), 5);
}

/// The echo service, and a gateway in front of it with `routes` to the
/// cluster `echo`.
async fn echo_gateway(routes: &str) -> (common::gateway::Upstream, Gateway, common::Running) {
    let upstream = echo_upstream().await;
    let config = config_text(&[("echo", &upstream.url())], routes);
    let (gateway, running) = start_gateway(GatewayConfig::parse(&config).unwrap()).await;
    (upstream, gateway, running)
}

/// A gateway for `config` with no contracts at all: it knows no method.
async fn knowing_nothing(config: &str) -> Gateway {
    Gateway::new(
        GatewayConfig::parse(config).unwrap(),
        Contracts::from_encoded([]).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn methods_the_gateway_does_not_know_are_forwarded() {
    let upstream = echo_upstream().await;
    let config = config_text(
        &[("echo", &upstream.url())],
        "[[routes]]\nmatch = \"*\"\ncluster = \"echo\"\n",
    );
    // No contracts at all: the gateway knows no method, yet forwards.
    let (_gateway, running) = start_with(knowing_nothing(&config).await, |s| s).await;
    let mut client = echo_client(running.addr).await;
    let reply = client.put(echo("unknown")).await.unwrap().into_inner();
    assert_eq!(reply.message, "unknown");
    // The gateway's own health is not forwarded, even under `*`.
    let mut health =
        sinew::health::proto::health_client::HealthClient::new(running.channel().await);
    health
        .check(sinew::health::proto::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn a_call_without_a_route_is_unimplemented() {
    let (upstream, _gateway, running) =
        echo_gateway("[[routes]]\nmatch = \"greeter\"\ncluster = \"echo\"\n").await;
    let mut client = echo_client(running.addr).await;
    let status = client.get(echo("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn metadata_passes_and_deadlines_shrink() {
    let (upstream, _gateway, running) =
        echo_gateway("[[routes]]\nmatch = \"echo.v1.Echo\"\ncluster = \"echo\"\n").await;
    let mut client = echo_client(running.addr).await;

    let mut request = Request::new(echo("meta"));
    request
        .metadata_mut()
        .insert("x-tenant", "blue".parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", "Bearer secret-token".parse().unwrap());
    // A caller may not name a principal: only the gateway sets it.
    request
        .metadata_mut()
        .insert("x-sinew-principal", "root".parse().unwrap());
    // A trace begun by the caller (Put's contract timeout is 1s: the
    // caller's 800ms is the tighter).
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    CallOptions::timeout(Duration::from_millis(800)).apply(&mut request);
    client.put(request).await.unwrap();

    let seen = upstream.seen.lock().unwrap().clone();
    let headers = seen.last().unwrap();
    assert_eq!(headers.get("x-tenant").unwrap(), "blue");
    assert!(
        headers.get("authorization").is_none(),
        "the raw token stays at the edge"
    );
    assert!(headers.get("x-sinew-principal").is_none());
    let timeout = headers
        .get("grpc-timeout")
        .and_then(|v| grpc_timeout(v.to_str().unwrap()))
        .expect("a deadline goes upstream");
    assert!(
        timeout < Duration::from_millis(800) && timeout > Duration::from_millis(300),
        "the caller's deadline, less what the hops used: {timeout:?}"
    );
    // The trace continues upstream, in the same trace.
    let traceparent = headers
        .get("traceparent")
        .expect("a traceparent goes upstream");
    assert!(
        traceparent
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent:?}"
    );
}

/// A `grpc-timeout` value (`1499m`, `1499999u`, …).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Counts calls to each of two upstreams through a split. (The tests
/// count calls with `Put`: the caller's own client hedges `Get`, whose
/// contract asks for it, so a slow machine sends it twice.)
#[tokio::test]
async fn weights_split_traffic_and_overrides_win() {
    let legacy = echo_upstream().await;
    let modern = echo_upstream().await;
    let routes = r#"
[[routes]]
match = "echo.v1.Echo/Put"
split = { legacy = 80, modern = 20 }
override = [{ header = "x-canary", value = "1", cluster = "modern" }]
"#;
    let config = config_text(
        &[("legacy", &legacy.url()), ("modern", &modern.url())],
        routes,
    );
    let (_gateway, running) = start_gateway(GatewayConfig::parse(&config).unwrap()).await;
    let mut client = echo_client(running.addr).await;
    let total = 1000;
    for _ in 0..total {
        client.put(echo("w")).await.unwrap();
    }
    let share = modern.calls() as f64 / total as f64;
    assert!(
        (0.16..=0.24).contains(&share),
        "20% to modern, within 4 points: {share}"
    );
    assert_eq!(legacy.calls() + modern.calls(), total);

    let before = modern.calls();
    for _ in 0..20 {
        let mut request = Request::new(echo("canary"));
        request
            .metadata_mut()
            .insert("x-canary", "1".parse().unwrap());
        client.put(request).await.unwrap();
    }
    assert_eq!(
        modern.calls(),
        before + 20,
        "the header sends every call to modern"
    );
}

fn order_routes(shadow: &str) -> String {
    format!(
        r#"
[[routes]]
match = "storefront.orders.v1.Orders"
cluster = "legacy"
shadow = "modern"
shadow_timeout = "{shadow}"
"#
    )
}

async fn orders_client(addr: std::net::SocketAddr) -> OrdersClient {
    OrdersClient::connect(ClientConfig::endpoint(format!("http://{addr}")))
        .await
        .unwrap()
}

async fn settle(check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the shadow comparisons did not finish");
}

#[tokio::test]
async fn shadows_are_compared_and_mismatches_counted() {
    let legacy = orders_upstream(OrdersService::new()).await;
    let replacement = OrdersService::new();
    let bug = replacement.bug();
    let modern = orders_upstream(replacement).await;
    let config = config_text(
        &[("legacy", &legacy.url()), ("modern", &modern.url())],
        &order_routes("5s"),
    );
    let (gateway, running) = start_gateway(GatewayConfig::parse(&config).unwrap()).await;
    let stats = gateway.stats();
    let mut client = orders_client(running.addr).await;

    // Equal answers: matched.
    for id in ["o-1", "o-2", "missing"] {
        let _ = client.get_order(GetOrderRequest { id: id.into() }).await;
    }
    settle(|| stats.shadow_matched() == 3).await;
    assert_eq!(stats.shadow_mismatched(), 0);

    // The replacement's bug shows on an order of several units.
    bug.store(true, Ordering::SeqCst);
    let order = client
        .get_order(GetOrderRequest { id: "o-2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.total_cents, 2100, "the caller gets the legacy answer");
    settle(|| stats.shadow_mismatched() == 1).await;
    // One unit each: the bug changes nothing, and nothing is reported.
    client
        .get_order(GetOrderRequest { id: "o-1".into() })
        .await
        .unwrap();
    settle(|| stats.shadow_matched() == 4).await;
    assert_eq!(stats.shadow_mismatched(), 1);

    // CreateOrder has side effects: never shadowed.
    let before = modern.calls();
    client
        .create_order(CreateOrderRequest {
            order: Some(Order {
                customer: "bob".into(),
                items: vec![Item {
                    sku: "tea".into(),
                    quantity: 1,
                    unit_cents: 450,
                }],
                ..Order::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(modern.calls(), before);
    assert_eq!(legacy.calls(), 6);
}

#[tokio::test]
async fn a_slow_or_failing_shadow_does_not_touch_the_real_call() {
    let legacy = orders_upstream(OrdersService::new()).await;
    // Slower than any test: the real call must not wait for it.
    let modern = orders_upstream(OrdersService::new().with_delay(Duration::from_secs(60))).await;
    let config = config_text(
        &[("legacy", &legacy.url()), ("modern", &modern.url())],
        &order_routes("120s"),
    );
    let (gateway, running) = start_gateway(GatewayConfig::parse(&config).unwrap()).await;
    let mut client = orders_client(running.addr).await;
    let order = client
        .get_order(GetOrderRequest { id: "o-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.id, "o-1");
    settle(|| modern.calls() == 1).await;
    // The real call is answered while the shadow is still waiting.
    assert_eq!(
        gateway.stats().shadow_matched() + gateway.stats().shadow_mismatched(),
        0
    );

    // A shadow that cannot be reached: the real call succeeds; the
    // comparison reports the difference.
    let closed = common::ClosedPort::new();
    let config = config_text(
        &[
            ("legacy", &legacy.url()),
            ("modern", &format!("http://{}", closed.addr())),
        ],
        &order_routes("5s"),
    );
    let (gateway, running) = start_gateway(GatewayConfig::parse(&config).unwrap()).await;
    let mut client = orders_client(running.addr).await;
    client
        .get_order(GetOrderRequest { id: "o-1".into() })
        .await
        .expect("a failing shadow fails nothing");
    let stats = gateway.stats();
    settle(|| stats.shadow_mismatched() == 1).await;
}

#[tokio::test]
async fn reloads_under_load_lose_no_call_and_bad_files_change_nothing() {
    let legacy = echo_upstream().await;
    let modern = echo_upstream().await;
    let clusters = [("legacy", legacy.url()), ("modern", modern.url())];
    let clusters: Vec<(&str, &str)> = clusters.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let text = |target: &str| {
        config_text(
            &clusters,
            &format!("[[routes]]\nmatch = \"echo.v1\"\ncluster = \"{target}\"\n"),
        )
        .replace("[gateway]\n", "[gateway]\nreload_interval = \"20ms\"\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text("legacy")).unwrap();
    let gateway = Gateway::new(GatewayConfig::from_file(&path).unwrap(), contracts())
        .await
        .unwrap();
    let watch = gateway.watch();
    let (gateway, running) = start_with(gateway, |s| s).await;

    // Load: four callers, each with calls in flight across the reloads
    // (each call waits 20ms upstream).
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut client = echo_client(running.addr).await;
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let mut request = echo("load");
                request.delay_ms = 20;
                match client.get(request).await {
                    Ok(_) => done.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    let wait_for = |want: u64| {
        let gateway = gateway.clone();
        async move {
            for _ in 0..500 {
                if gateway.version() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the gateway did not reach version {want}");
        }
    };
    // Load windows counted in calls, not time: `n` more calls answered.
    let more_calls = |n: u64| {
        let done = done.clone();
        async move {
            let until = done.load(Ordering::SeqCst) + n;
            for _ in 0..1000 {
                if done.load(Ordering::SeqCst) >= until {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the callers stalled");
        }
    };
    more_calls(20).await;
    std::fs::write(&path, text("modern")).unwrap();
    wait_for(2).await;
    let modern_at_switch = modern.calls();
    more_calls(20).await;
    assert!(
        modern.calls() > modern_at_switch,
        "calls go to modern after the reload"
    );

    // An invalid file: refused, the routes stay.
    let legacy_before = legacy.calls();
    std::fs::write(
        &path,
        text("modern").replace("cluster = \"modern\"", "cluster = \"nowhere\""),
    )
    .unwrap();
    let stats = gateway.stats();
    for _ in 0..500 {
        if stats.reload_failures() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.reload_failures(), 1);
    let error = gateway.reload().await.unwrap_err().to_string();
    assert!(
        error.contains("gateway.toml:") && error.contains("unknown cluster `nowhere`"),
        "{error}"
    );
    more_calls(20).await;
    assert_eq!(gateway.version(), 2);
    assert_eq!(legacy.calls(), legacy_before, "the old routes stay");

    // And back, once more under load.
    std::fs::write(&path, text("legacy")).unwrap();
    wait_for(3).await;
    more_calls(20).await;
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    watch.abort();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no call failed across the reloads"
    );
    assert!(done.load(Ordering::SeqCst) >= 80);
    assert!(legacy.calls() > legacy_before);
}

#[tokio::test]
async fn rate_limits_refuse_with_resource_exhausted() {
    let routes = r#"
[[routes]]
match = "echo.v1.Echo/Put"
cluster = "echo"
client_rate_limit = { per_second = 0.01, burst = 3 }

[[routes]]
match = "echo.v1.Echo"
cluster = "echo"
rate_limit = { per_second = 0.01, burst = 2 }
"#;
    let (upstream, gateway, running) = echo_gateway(routes).await;
    let mut client = echo_client(running.addr).await;
    for _ in 0..3 {
        client.put(echo("ok")).await.unwrap();
    }
    let status = client.put(echo("one too many")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after >= 60,
        "a token comes back in 100s: {retry_after}"
    );
    // The other route has its own bucket.
    for _ in 0..2 {
        client.post(echo("ok")).await.unwrap();
    }
    assert_eq!(
        client.post(echo("no")).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert_eq!(gateway.stats().rate_limited(), 2);
    assert_eq!(upstream.calls(), 5);
}

#[tokio::test]
async fn the_edge_authenticates_and_sends_the_principal_upstream() {
    let upstream = orders_upstream(OrdersService::new()).await;
    let config = config_text(
        &[("orders", &upstream.url())],
        "[[routes]]\nmatch = \"storefront\"\ncluster = \"orders\"\n",
    );
    let gateway = Gateway::new(GatewayConfig::parse(&config).unwrap(), contracts())
        .await
        .unwrap()
        .authenticator(TestUsers);
    let (_gateway, running) = start_with(gateway, |s| s).await;
    let mut client = orders_client(running.addr).await;
    let get = |user: Option<&str>| {
        let mut request = Request::new(GetOrderRequest { id: "o-1".into() });
        if let Some(user) = user {
            request
                .metadata_mut()
                .insert("x-user", user.parse().unwrap());
        }
        request
    };

    let status = client.get_order(get(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client.get_order(get(Some("eve:"))).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "orders.read is missing"
    );
    assert_eq!(upstream.calls(), 0, "refused at the edge");

    client
        .get_order(get(Some("ada:orders.read,extra")))
        .await
        .unwrap();
    let seen = upstream.seen.lock().unwrap().clone();
    let headers = seen.last().unwrap();
    assert_eq!(headers.get("x-sinew-principal").unwrap(), "ada");
    assert_eq!(headers.get("x-sinew-scopes").unwrap(), "orders.read extra");

    // CreateOrder declares orders.write.
    let mut create = Request::new(CreateOrderRequest::default());
    create
        .metadata_mut()
        .insert("x-user", "ada:orders.read".parse().unwrap());
    assert_eq!(
        client.create_order(create).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

/// The principal goes upstream over mTLS: the upstream believes the
/// principal header only from the gateway's certificate.
#[tokio::test]
async fn the_principal_is_believed_only_from_the_gateways_certificate() {
    use sinew::{
        Server,
        server::{ServerConfig, auth::GatewayPrincipal},
        tls::{ClientAuth, ClientTlsConfig},
    };
    use sinew_workspace::proto::storefront::orders::v1::orders_server::OrdersServer;

    let pki = sinew_testing::pki::TestPki::new("test CA");
    let cert = pki.server(&["localhost"]);
    let gateway_id = pki.client("gateway", Some("spiffe://shop.test/gateway"));
    let mallory = pki.client("mallory", Some("spiffe://shop.test/mallory"));
    let upstream = common::Running::start(
        Server::new("orders")
            .config(
                ServerConfig::new()
                    .lame_duck(Duration::ZERO)
                    .tls(&cert.cert, &cert.key)
                    .mtls(ClientAuth::Required, pki.ca()),
            )
            .add_service(OrdersServer::new(OrdersService::new()))
            .authenticator(GatewayPrincipal::new(["spiffe://shop.test/gateway"])),
    )
    .await;
    let config = format!(
        r#"
[clusters.orders]
endpoints = ["https://{}"]
tls_ca = "{}"
tls_cert = "{}"
tls_key = "{}"
tls_server_name = "localhost"

[[routes]]
match = "storefront.orders"
cluster = "orders"
"#,
        upstream.addr,
        pki.ca().display(),
        gateway_id.cert.display(),
        gateway_id.key.display()
    );
    let gateway = Gateway::new(GatewayConfig::parse(&config).unwrap(), contracts())
        .await
        .unwrap()
        .authenticator(TestUsers);
    let (_gateway, running) = start_with(gateway, |s| s).await;
    let mut client = orders_client(running.addr).await;
    let mut request = Request::new(GetOrderRequest { id: "o-1".into() });
    request
        .metadata_mut()
        .insert("x-user", "ada:orders.read".parse().unwrap());
    let order = client.get_order(request).await.unwrap().into_inner();
    assert_eq!(
        order.id, "o-1",
        "the upstream took the gateway's word for ada"
    );

    // Another workload naming a principal itself is refused.
    let tls = ClientTlsConfig::new()
        .ca(pki.ca())
        .server_name("localhost")
        .identity(&mallory.cert, &mallory.key);
    let mut direct = OrdersClient::connect(
        ClientConfig::endpoint(format!("https://{}", upstream.addr)).tls(tls),
    )
    .await
    .unwrap();
    let mut forged = Request::new(GetOrderRequest { id: "o-1".into() });
    forged
        .metadata_mut()
        .insert("x-sinew-principal", "ada".parse().unwrap());
    forged
        .metadata_mut()
        .insert("x-sinew-scopes", "orders.read".parse().unwrap());
    let status = direct.get_order(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn message_limits_hold_per_route_and_the_gateway_keeps_serving() {
    let routes = r#"
[[routes]]
match = "echo.v1.Echo/Get"
cluster = "echo"
max_request_bytes = 64

[[routes]]
match = "echo.v1.Echo/Put"
cluster = "echo"
max_response_bytes = 64
"#;
    let (_upstream, _gateway, running) = echo_gateway(routes).await;
    let mut client = echo_client(running.addr).await;
    let big = || {
        let mut request = echo("big");
        request.payload = vec![7; 1000];
        request
    };
    let status = client.get(big()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("64 bytes"), "{status:?}");
    // The request went through, the answer is over the limit.
    let status = client.put(big()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Small calls still pass, on both routes.
    assert_eq!(
        client
            .get(echo("small"))
            .await
            .unwrap()
            .into_inner()
            .message,
        "small"
    );
    assert_eq!(
        client
            .put(echo("small"))
            .await
            .unwrap()
            .into_inner()
            .message,
        "small"
    );
}

#[tokio::test]
async fn methods_no_contract_declares_are_denied_when_access_is_enforced() {
    let upstream = echo_upstream().await;
    let config = config_text(
        &[("echo", &upstream.url())],
        "[[routes]]\nmatch = \"*\"\ncluster = \"echo\"\n",
    );
    let strict = knowing_nothing(&config).await.authenticator(TestUsers);
    let (_strict, running) = start_with(strict, |s| s).await;
    let mut client = echo_client(running.addr).await;
    let call = || {
        let mut request = Request::new(echo("who knows"));
        request
            .metadata_mut()
            .insert("x-user", "ada:".parse().unwrap());
        request
    };
    assert_eq!(
        client.put(call()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(upstream.calls(), 0);

    let lenient = knowing_nothing(&config)
        .await
        .authenticator(TestUsers)
        .undeclared(sinew::server::auth::Undeclared::Allow);
    let (_lenient, running) = start_with(lenient, |s| s).await;
    let mut client = echo_client(running.addr).await;
    client
        .put(call())
        .await
        .expect("any principal, when allowed");
    assert_eq!(upstream.calls(), 1);
}
