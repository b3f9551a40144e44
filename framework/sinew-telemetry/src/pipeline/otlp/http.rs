//! OTLP over HTTP (`http/protobuf`): one small HTTP/1.1 client, on hyper,
//! for both signals.
//!
//! Exports are sent from threads outside any tokio runtime (the span
//! queue's, the metric reader's), and hyper's connections need one: the
//! client keeps a runtime handle (the span exporter's `sinew-otlp` thread,
//! or a thread of its own) and runs each request there, so the caller only
//! waits for the answer. Responses are read up to [`MAX_RESPONSE`]; a
//! collector that sends more gets the export failed, not the memory.
//!
//! An `https://` endpoint is reached through the [`TlsConnector`], with
//! ALPN `http/1.1`; an `http://` one through hyper's own connector, as it
//! always was.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use sinew_core::tls::ClientTls;
use tokio::{runtime::Handle, sync::oneshot};

use super::tls::TlsConnector;
use crate::BoxError;

/// The most of a collector's answer that is read: an OTLP response is a
/// partial-success message of a few bytes.
pub(crate) const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// The content type of an OTLP/HTTP protobuf request and response.
pub(crate) const PROTOBUF: &str = "application/x-protobuf";

/// An HTTP client whose requests run on a runtime of the exporter's own.
/// Clones share the connections and the runtime.
#[derive(Clone)]
pub(crate) struct OtlpHttpClient {
    client: Connections,
    runtime: Handle,
    timeout: Duration,
    /// Dropped with the last clone, which ends a runtime thread started
    /// for the client alone.
    _stop: Option<Arc<oneshot::Sender<()>>>,
}

/// The connections of an [`OtlpHttpClient`]: in plain text, or over TLS.
#[derive(Clone)]
enum Connections {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<TlsConnector, Full<Bytes>>),
}

// === impl OtlpHttpClient ===

impl OtlpHttpClient {
    /// A client running its requests on `runtime`, each bounded by
    /// `timeout` (connecting included); over TLS with `tls` (for an
    /// `https://` endpoint), in plain text without.
    pub(crate) fn on(runtime: Handle, timeout: Duration, tls: Option<ClientTls>) -> Self {
        let client = match tls {
            None => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(timeout));
                connector.set_nodelay(true);
                Connections::Plain(client(connector))
            }
            Some(tls) => Connections::Tls(client(TlsConnector::http1(tls, timeout))),
        };
        Self {
            client,
            runtime,
            timeout,
            _stop: None,
        }
    }

    /// A client with a runtime thread of its own (`sinew-otlp-http`), for
    /// the metric exporter.
    pub(crate) fn start(timeout: Duration, tls: Option<ClientTls>) -> std::io::Result<Self> {
        let (runtime, stop) = super::exporter::start_runtime("sinew-otlp-http")?;
        Ok(Self {
            _stop: Some(Arc::new(stop)),
            ..Self::on(runtime, timeout, tls)
        })
    }

    /// Sends `request` and reads the whole answer, within the timeout.
    pub(crate) async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, BoxError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let call = self.runtime.spawn(async move {
            let exchange = async {
                let request = request.map(Full::new);
                let response = match &client {
                    Connections::Plain(client) => client.request(request),
                    Connections::Tls(client) => client.request(request),
                }
                .await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, BoxError>(Response::from_parts(parts, body))
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| -> BoxError { format!("no answer within {timeout:?}").into() })?
        });
        call.await?
    }
}

/// hyper's HTTP/1.1 client over `connector`, keeping idle connections for
/// the next export.
fn client<C>(connector: C) -> Client<C, Full<Bytes>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHttpClient")
            .field("timeout", &self.timeout)
            .field("tls", &matches!(self.client, Connections::Tls(_)))
            .finish_non_exhaustive()
    }
}

/// The client `opentelemetry-otlp`'s metric exporter sends with, under
/// `http/protobuf`.
#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        self.send(request).await
    }
}
