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
