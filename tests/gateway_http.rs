//! The gateway's HTTP/JSON side, with a real HTTP client: routes from the
//! contracts' `google.api.http` bindings, the proto3 JSON mapping, server
//! streams, errors, CORS, limits, gzip, the OpenAPI document (checked by
//! an independent validator), rate limits, edge authentication, and the
//! aggregation with one upstream stopped.

mod common;

use std::{io::Read as _, net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::gateway::{
    TestUsers, config_text, contracts, echo_upstream, orders_upstream, start_http,
};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};
use sinew::{
    Server,
    client::ClientConfig,
    gateway::{Gateway, GatewayConfig},
    server::ServerConfig,
};
use sinew_workspace::{
    proto::storefront::{
        details::v1::order_details_server::OrderDetailsServer,
        orders::v1::OrdersClient,
        payments::v1::{PaymentsClient, payments_server::PaymentsServer},
        shipments::v1::{ShipmentsClient, shipments_server::ShipmentsServer},
    },
    storefront::{DetailsService, OrdersService, PaymentsService, ShipmentsService},
};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn call(
    http: &Http,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = http.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn http_client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A gateway in front of orders (and echo), with its HTTP side.
async fn orders_gateway(extra: &str) -> (Gateway, SocketAddr, Vec<Box<dyn std::any::Any>>) {
    let orders = orders_upstream(OrdersService::new()).await;
    let echo = echo_upstream().await;
    let routes = format!(
        "[[routes]]\nmatch = \"storefront.orders\"\ncluster = \"orders\"\n\n[[routes]]\nmatch = \"echo\"\ncluster = \"echo\"\n{extra}"
    );
    let config = config_text(&[("orders", &orders.url()), ("echo", &echo.url())], &routes).replace(
        "[gateway]\n",
        "[gateway]\ncors_origins = [\"https://app.example\"]\nmax_body_bytes = 2048\n",
    );
    let gateway = Gateway::new(GatewayConfig::parse(&config).unwrap(), contracts())
        .await
        .unwrap();
    let (addr, stop) = start_http(&gateway).await;
    (
        gateway,
        addr,
        vec![Box::new(orders), Box::new(echo), Box::new(stop)],
    )
}

#[tokio::test]
async fn path_variables_and_well_known_types() {
    let (_gateway, addr, _keep) = orders_gateway("").await;
    let http = http_client();
    let answer = call(
        &http,
        "GET",
        &format!("http://{addr}/v1/orders/o-2"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/json");
    let order = answer.json();
    assert_eq!(order["id"], "o-2");
    assert_eq!(
        order["totalCents"], "2100",
        "int64 is a string in proto3 JSON"
    );
    assert_eq!(order["state"], "STATE_PAID", "enums by name");
    assert_eq!(
        order["createdAt"], "2026-09-21T14:13:40Z",
        "Timestamp as RFC 3339"
    );
    assert_eq!(order["items"][1]["sku"], "mug");
}

#[tokio::test]
async fn query_parameters_and_server_streams() {
    let (_gateway, addr, _keep) = orders_gateway("").await;
    let http = http_client();
    let url = format!("http://{addr}/v1/customers/ada/orders?limit=2");
    let answer = call(&http, "GET", &url, &[], "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = answer
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "o-3", "newest first");

    let answer = call(&http, "GET", &url, &[("accept", "text/event-stream")], "").await;
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let events: Vec<&str> = answer
        .text()
        .leak()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].starts_with("data: {"), "{events:?}");

    // An unknown query parameter names itself.
    let answer = call(&http, "GET", &format!("{url}&colour=red"), &[], "").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.json()["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn bodies_and_additional_bindings() {
    let (_gateway, addr, _keep) = orders_gateway("").await;
    let http = http_client();
    let order =
        json!({"customer": "bob", "items": [{"sku": "tea", "quantity": 3, "unitCents": "450"}]});
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/v1/orders"),
        &[("content-type", "application/json")],
        &order.to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["totalCents"], "1350");
    assert_eq!(answer.json()["state"], "STATE_PLACED");

    // The same method, bound again with the customer in the path.
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/v1/customers/cy/orders"),
        &[],
        &json!({"items": [{"sku": "pot", "quantity": 1, "unitCents": "3500"}]}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["customer"], "cy");

    // A method with no binding: POST /package.Service/Method, whole body.
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/echo.v1.Echo/Get"),
        &[],
        r#"{"message": "hello", "payload": "AAEC"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({"message": "hello", "payload": "AAEC"})
    );

    // JSON that does not fit: the field and what it expects.
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/v1/orders"),
        &[],
        r#"{"customer": "bob", "items": [{"quantity": "many"}]}"#,
    )
    .await;
    assert_eq!(answer.status, 400);
    let error = answer.json();
    assert_eq!(error["code"], 3);
    assert!(
        error["message"].as_str().unwrap().contains("quantity"),
        "{error}"
    );
}

#[tokio::test]
async fn errors_are_google_rpc_status_json() {
    let (_gateway, addr, _keep) = orders_gateway("").await;
    let http = http_client();
    let answer = call(
        &http,
        "GET",
        &format!("http://{addr}/v1/orders/o-404"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.json(),
        json!({"code": 5, "message": "no order o-404", "details": []})
    );

    let answer = call(
        &http,
        "GET",
        &format!("http://{addr}/v1/nothing/here"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["code"], 5);

    // The upstream's own status, through: INVALID_ARGUMENT is 400.
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/v1/orders"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["message"],
        "an order needs a customer and items"
    );
}

#[tokio::test]
async fn cors_limits_and_gzip() {
    let (_gateway, addr, _keep) = orders_gateway("").await;
    let http = http_client();
    let url = format!("http://{addr}/v1/orders/o-1");
    let preflight = call(
        &http,
        "OPTIONS",
        &url,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        preflight.headers["access-control-allow-headers"],
        "authorization"
    );
    let answer = call(&http, "GET", &url, &[("origin", "https://app.example")], "").await;
    assert_eq!(
        answer.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let answer = call(
        &http,
        "GET",
        &url,
        &[("origin", "https://evil.example")],
        "",
    )
    .await;
    assert!(!answer.headers.contains_key("access-control-allow-origin"));

    // Over max_body_bytes (2048): 413, and the gateway keeps serving.
    let big = format!(r#"{{"message": "{}"}}"#, "x".repeat(4096));
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/echo.v1.Echo/Get"),
        &[],
        &big,
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], 8);

    // A large answer, gzipped for a caller that accepts it.
    let body = json!({"message": "y".repeat(2000)}).to_string();
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/echo.v1.Echo/Get"),
        &[("accept-encoding", "gzip")],
        &body,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&answer.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["message"]
            .as_str()
            .unwrap()
            .len(),
        2000
    );
    let answer = call(
        &http,
        "POST",
        &format!("http://{addr}/echo.v1.Echo/Get"),
        &[],
        &body,
    )
    .await;
    assert!(!answer.headers.contains_key("content-encoding"));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let extra = "\n[[routes]]\nmatch = \"echo.v1.Echo/Get\"\ncluster = \"echo\"\nclient_rate_limit = { per_second = 0.5, burst = 2 }\n";
    let (_gateway, addr, _keep) = orders_gateway(extra).await;
    let http = http_client();
    let url = format!("http://{addr}/echo.v1.Echo/Get");
    for _ in 0..2 {
        assert_eq!(call(&http, "POST", &url, &[], "{}").await.status, 200);
    }
    let answer = call(&http, "POST", &url, &[], "{}").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["retry-after"], "2");
    assert_eq!(answer.json()["code"], 8);
}

#[tokio::test]
async fn http_calls_are_authenticated_at_the_edge() {
    let orders = orders_upstream(OrdersService::new()).await;
    let config = config_text(
        &[("orders", &orders.url())],
        "[[routes]]\nmatch = \"storefront.orders\"\ncluster = \"orders\"\n",
    );
    let gateway = Gateway::new(GatewayConfig::parse(&config).unwrap(), contracts())
        .await
        .unwrap()
        .authenticator(TestUsers);
    let (addr, _stop) = start_http(&gateway).await;
    let http = http_client();
    let url = format!("http://{addr}/v1/orders/o-1");
    assert_eq!(call(&http, "GET", &url, &[], "").await.status, 401);
    assert_eq!(
        call(&http, "GET", &url, &[("x-user", "eve:")], "")
            .await
            .status,
        403
    );
    assert_eq!(orders.calls(), 0);
    let answer = call(&http, "GET", &url, &[("x-user", "ada:orders.read")], "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = orders.seen.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap()["x-sinew-principal"], "ada");
}

#[tokio::test]
async fn the_openapi_document_is_valid() {
    let (_gateway, addr, _keep) = orders_gateway("").await;
    let answer = call(
        &http_client(),
        "GET",
        &format!("http://{addr}/openapi.json"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 200);
    let document = answer.json();
    assert_eq!(document["openapi"], "3.0.3");
    assert!(document["paths"]["/v1/orders/{id}"]["get"].is_object());
    assert!(document["paths"]["/v1/customers/{order.customer}/orders"]["post"].is_object());
    if !common::python_ready(
        "the OpenAPI validation",
        &["openapi_spec_validator"],
        "openapi-spec-validator",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &answer.body).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn aggregation_answers_the_parts_it_could_gather() {
    let orders = orders_upstream(OrdersService::new()).await;
    let payments = common::Running::start(
        Server::new("payments")
            .config(ServerConfig::new().lame_duck(Duration::ZERO))
            .add_service(PaymentsServer::new(PaymentsService)),
    )
    .await;
    let shipments = common::Running::start(
        Server::new("shipments")
            .config(ServerConfig::new().lame_duck(Duration::ZERO))
            .add_service(ShipmentsServer::new(ShipmentsService)),
    )
    .await;
    let url = |addr: SocketAddr| format!("http://{addr}");
    let details = DetailsService::new(
        OrdersClient::connect(ClientConfig::endpoint(orders.url()))
            .await
            .unwrap(),
        PaymentsClient::connect(ClientConfig::endpoint(url(payments.addr)))
            .await
            .unwrap(),
        ShipmentsClient::connect(ClientConfig::endpoint(url(shipments.addr)))
            .await
            .unwrap(),
        Duration::from_millis(500),
    );
    // The details handler is hosted in the gateway: no route, so the
    // gateway's own server answers it.
    let config = config_text(
        &[("orders", &orders.url())],
        "[[routes]]\nmatch = \"storefront.orders\"\ncluster = \"orders\"\n",
    );
    let gateway = Gateway::new(GatewayConfig::parse(&config).unwrap(), contracts())
        .await
        .unwrap();
    let (gateway, running) = common::gateway::start_with(gateway, |server| {
        server.add_service(OrderDetailsServer::new(details))
    })
    .await;
    // HTTP calls with no route go to the gateway's own server.
    gateway.local_handlers(running.addr).await.unwrap();
    let http = http_client();
    let (addr, _stop) = start_http(&gateway).await;

    // Over gRPC, through the gateway's server.
    let mut client = sinew_workspace::proto::storefront::details::v1::OrderDetailsClient::connect(
        ClientConfig::endpoint(format!("http://{}", running.addr)),
    )
    .await
    .unwrap();
    let request = || sinew_workspace::proto::storefront::details::v1::GetOrderDetailsRequest {
        order_id: "o-2".into(),
    };
    let whole = client
        .get_order_details(request())
        .await
        .unwrap()
        .into_inner();
    assert!(whole.order.is_some() && whole.payment.is_some() && whole.shipment.is_some());
    assert!(
        whole
            .parts
            .iter()
            .all(|p| p.status.as_ref().unwrap().code == 0)
    );

    shipments.stop().await;
    let partial = client
        .get_order_details(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(partial.order.unwrap().id, "o-2");
    assert_eq!(partial.payment.unwrap().amount_cents, 2100);
    assert!(partial.shipment.is_none());
    let shipment = &partial.parts[2];
    assert_eq!(shipment.name, "shipment");
    let status = shipment.status.as_ref().unwrap();
    assert_eq!(status.code, tonic::Code::Unavailable as i32, "{status:?}");
    assert!(!status.message.is_empty());

    // The same over HTTP/JSON, from the contract's binding.
    let answer = call(
        &http,
        "GET",
        &format!("http://{addr}/v1/orders/o-2/details"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let details = answer.json();
    assert_eq!(details["order"]["id"], "o-2");
    assert_eq!(details["payment"]["amountCents"], "2100");
    assert!(details.get("shipment").is_none(), "{details}");
    assert_eq!(details["parts"][2]["name"], "shipment");
    assert_eq!(details["parts"][2]["status"]["code"], 14);
    assert_eq!(
        details["parts"][0]["status"],
        json!({}),
        "OK is all defaults"
    );
}
