//! A collector for the telemetry unit tests: an OTLP/gRPC trace receiver
//! on a free loopback port that keeps what it receives and answers as
//! scripted.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, metadata::MetadataMap, transport::server::TcpIncoming};

/// What the test collector received, and what it answers next.
#[derive(Debug, Default)]
struct Received {
    requests: Vec<(MetadataMap, ExportTraceServiceRequest)>,
    /// Answers to give, in order; then success.
    script: VecDeque<Result<ExportTraceServiceResponse, Status>>,
}

/// A collector on a free loopback port. Clones share what it got.
#[derive(Debug, Clone, Default)]
pub(crate) struct Collector(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.0.lock().unwrap();
        let (metadata, _, request) = request.into_parts();
        received.requests.push((metadata, request));
        received
            .script
            .pop_front()
            .unwrap_or_else(|| Ok(ExportTraceServiceResponse::default()))
            .map(Response::new)
    }
}

// === impl Collector ===

impl Collector {
    /// Starts serving; answers `script` first.
    pub(crate) async fn start(
        script: impl IntoIterator<Item = Result<ExportTraceServiceResponse, Status>>,
    ) -> (Self, SocketAddr) {
        let collector = Self::default();
        collector.0.lock().unwrap().script.extend(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Takes gzip-compressed exports, as every OTLP receiver does.
        let service = TraceServiceServer::new(collector.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (collector, addr)
    }

    /// Every request received, with its metadata, in arrival order.
    pub(crate) fn requests(&self) -> Vec<(MetadataMap, ExportTraceServiceRequest)> {
        self.0.lock().unwrap().requests.clone()
    }
}

/// One request an [`HttpCollector`] received.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequest {
    pub(crate) path: String,
    /// Header names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, gunzipped if it came with `content-encoding: gzip`.
    pub(crate) body: Vec<u8>,
}

impl HttpRequest {
    /// The value of header `name`, if sent.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An OTLP/HTTP receiver written against the bytes on the wire (no HTTP
/// library of sinew's in the way): HTTP/1.1 with keep-alive, answering each
/// request with the next scripted status (then 200) and an empty body.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpCollector {
    received: Arc<Mutex<Vec<HttpRequest>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl HttpCollector {
    /// Starts serving; answers `script` first.
    pub(crate) async fn start(script: impl IntoIterator<Item = u16>) -> (Self, SocketAddr) {
        let collector = Self::default();
        collector.script.lock().unwrap().extend(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = collector.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        (collector, addr)
    }

    /// Every request received, in arrival order.
    pub(crate) fn requests(&self) -> Vec<HttpRequest> {
        self.received.lock().unwrap().clone()
    }

    async fn serve(self, stream: tokio::net::TcpStream) {
        use std::io::Read as _;
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

        let mut stream = tokio::io::BufReader::new(stream);
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (key, value) = line.split_once(':').unwrap();
                headers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(key, _)| key == "content-length")
                .map_or(0, |(_, value)| value.parse().unwrap());
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.unwrap();
            let gzipped = headers
                .iter()
                .any(|(key, value)| key == "content-encoding" && value == "gzip");
            if gzipped {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                body = plain;
            }
            self.received.lock().unwrap().push(HttpRequest {
                path,
                headers,
                body,
            });
            let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
            );
            stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
        }
    }
}
