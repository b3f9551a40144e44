//! Collectors for the telemetry unit tests: an OTLP/gRPC trace and metric
//! receiver, and an OTLP/HTTP one, on free loopback ports, in plain text or
//! over TLS, that keep what they receive and answer as scripted.

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use sinew_core::tls::{ClientAuth, ServerTls, ServerTlsConfig, rustls::ServerConfig};
use sinew_testing::pki::CertFiles;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::{
    Request, Response, Status,
    metadata::MetadataMap,
    transport::server::{Connected, TcpIncoming},
};

/// What the test collector received, and what it answers next.
#[derive(Debug, Default)]
struct Received {
    requests: Vec<(MetadataMap, ExportTraceServiceRequest)>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// Answers to give, in order; then success.
    script: VecDeque<Result<ExportTraceServiceResponse, Status>>,
}

/// A test server's TLS: `cert` presented, with ALPN `alpn`; client
/// certificates required, verified against `client_ca`, when given.
pub(crate) fn server_tls(
    cert: &CertFiles,
    client_ca: Option<&Path>,
    alpn: &[u8],
) -> Arc<ServerConfig> {
    let mut config = ServerTlsConfig::new(&cert.cert, &cert.key);
    if let Some(ca) = client_ca {
        config = config.client_auth(ClientAuth::Required, Some(ca.to_owned()));
    }
    let tls = ServerTls::load(config).unwrap();
    let mut config = (*tls.current()).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A connection a test server accepted over TLS.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connected for TlsIo {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// The connections `listener` accepts whose TLS handshake succeeds, in
/// the order their handshakes end; a refused handshake (an untrusted
/// client, one without a certificate) leaves no trace here.
fn accept_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl futures_util::Stream<Item = io::Result<TlsIo>> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    let _ = sender.send(TlsIo(stream));
                }
            });
        }
    });
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        let accepted = receiver.recv().await?;
        Some((Ok(accepted), receiver))
    })
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

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.lock().unwrap().metrics.push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

// === impl Collector ===

impl Collector {
    /// Starts serving; answers `script` first.
    pub(crate) async fn start(
        script: impl IntoIterator<Item = Result<ExportTraceServiceResponse, Status>>,
    ) -> (Self, SocketAddr) {
        let (collector, listener, addr) = Self::bind(script).await;
        tokio::spawn(
            collector
                .router()
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (collector, addr)
    }

    /// Starts serving over TLS (see [`server_tls`]); answers `script`
    /// first.
    pub(crate) async fn start_tls(
        script: impl IntoIterator<Item = Result<ExportTraceServiceResponse, Status>>,
        tls: Arc<ServerConfig>,
    ) -> (Self, SocketAddr) {
        let (collector, listener, addr) = Self::bind(script).await;
        tokio::spawn(
            collector
                .router()
                .serve_with_incoming(accept_tls(listener, tls)),
        );
        (collector, addr)
    }

    async fn bind(
        script: impl IntoIterator<Item = Result<ExportTraceServiceResponse, Status>>,
    ) -> (Self, TcpListener, SocketAddr) {
        let collector = Self::default();
        collector.0.lock().unwrap().script.extend(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (collector, listener, addr)
    }

    /// The trace and metric services. They take gzip-compressed exports,
    /// as every OTLP receiver does.
    fn router(&self) -> tonic::transport::server::Router {
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()).accept_compressed(gzip))
            .add_service(MetricsServiceServer::new(self.clone()).accept_compressed(gzip))
    }

    /// Every request received, with its metadata, in arrival order.
    pub(crate) fn requests(&self) -> Vec<(MetadataMap, ExportTraceServiceRequest)> {
        self.0.lock().unwrap().requests.clone()
    }

    /// Every metric export received, in arrival order.
    pub(crate) fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.0.lock().unwrap().metrics.clone()
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

    /// Starts serving over TLS (see [`server_tls`]; ALPN `http/1.1`);
    /// answers `script` first.
    pub(crate) async fn start_tls(
        script: impl IntoIterator<Item = u16>,
        tls: Arc<ServerConfig>,
    ) -> (Self, SocketAddr) {
        use futures_util::StreamExt as _;

        let collector = Self::default();
        collector.script.lock().unwrap().extend(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = collector.clone();
        tokio::spawn(async move {
            let mut accepted = std::pin::pin!(accept_tls(listener, tls));
            while let Some(Ok(stream)) = accepted.next().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        (collector, addr)
    }

    /// Every request received, in arrival order.
    pub(crate) fn requests(&self) -> Vec<HttpRequest> {
        self.received.lock().unwrap().clone()
    }

    async fn serve(self, stream: impl AsyncRead + AsyncWrite + Unpin) {
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
