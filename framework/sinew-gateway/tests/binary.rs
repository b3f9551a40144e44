//! `sinew-gateway <config.toml>`, the ready binary, as an operator runs it:
//! contracts compiled from `.proto` files at start (sinew's own imports
//! resolved), gRPC forwarded, HTTP/JSON transcoded, the routes reloaded
//! when the file changes, and a bad file refused at start with its line.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use sinew_server::Server;
use tokio::net::TcpListener;
use tonic::body::Body;
use tower::ServiceExt as _;

/// An upstream that answers every call with its own request: the bytes
/// come back as they were sent, with `x-upstream` naming it.
#[derive(Clone)]
struct Mirror(&'static str);

impl tower::Service<http::Request<Body>> for Mirror {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let name = self.0;
        Box::pin(async move {
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = http_body_util::StreamBody::new(futures_util::stream::iter([
                Ok::<_, tonic::Status>(http_body::Frame::data(bytes)),
                Ok(http_body::Frame::trailers(trailers)),
            ]));
            let mut response = http::Response::new(Body::new(body));
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
                .headers_mut()
                .insert("x-upstream", name.parse().unwrap());
            Ok(response)
        })
    }
}

async fn mirror(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(name).layer(tower::layer::layer_fn(move |_| Mirror(name)));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The workspace's `proto/` and this crate's test contract.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn config(http: SocketAddr, cluster: &str, a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"[gateway]
protos = ["{proto}/test/library.proto"]
includes = ["{proto}"]
http_listen = "{http}"
reload_interval = "50ms"

[clusters.a]
endpoints = ["http://{a}"]

[clusters.b]
endpoints = ["http://{b}"]

[[routes]]
match = "library.v1"
cluster = "{cluster}"
"#,
        proto = root().join("proto").display(),
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {addr}");
}

/// One gRPC call of `CreateShelf` with these message bytes, and the
/// upstream that answered.
async fn create_shelf(gateway: SocketAddr, message: &[u8]) -> (Bytes, String) {
    let client = sinew_client::Client::connect_methods(
        &[],
        sinew_client::ClientConfig::endpoint(format!("http://{gateway}")),
    )
    .await
    .unwrap();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let request = http::Request::post("/library.v1.Library/CreateShelf")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(Bytes::from(framed.clone()))))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    let upstream = response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from(framed), "the bytes came back as sent");
    (body, upstream)
}

#[tokio::test]
async fn the_binary_serves_from_its_file_and_reloads_it() {
    let (a, b) = (mirror("a").await, mirror("b").await);
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(http, "a", a, b)).unwrap();
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_sinew-gateway"))
            .arg(&path)
            .env("SINEW_ADDR", grpc.to_string())
            .env("OTEL_SDK_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(grpc).await;
    wait_for_port(http).await;

    // A Shelf { name: "fiction" }.
    let (_, upstream) = create_shelf(grpc, b"\x0a\x07fiction").await;
    assert_eq!(upstream, "a");

    // HTTP/JSON from the contract's binding, through the same route.
    let http_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{http}/v1/shelves"))
        .body(Full::new(Bytes::from_static(
            br#"{"name": "poetry", "id": "7"}"#,
        )))
        .unwrap();
    let response = http_client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json, serde_json::json!({"name": "poetry", "id": "7"}));

    // The OpenAPI document describes the compiled contract.
    let response = http_client
        .get(format!("http://{http}/openapi.json").parse().unwrap())
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let openapi: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(openapi["paths"]["/v1/shelves"]["post"].is_object());

    // A new file moves the route; the binary picks it up.
    std::fs::write(&path, config(http, "b", a, b)).unwrap();
    let mut moved = false;
    for _ in 0..200 {
        if create_shelf(grpc, b"").await.1 == "b" {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "the reload moved the route to b");
}

#[tokio::test]
async fn a_bad_file_fails_the_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = config(free_port(), "nowhere", free_port(), free_port());
    std::fs::write(&path, &text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sinew-gateway"))
        .arg(&path)
        .env("SINEW_ADDR", free_port().to_string())
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .position(|l| l.contains("\"nowhere\""))
        .unwrap()
        + 1;
    assert!(
        said.contains(&format!("gateway.toml:{line}: unknown cluster `nowhere`")),
        "{said}"
    );
}
