//! TLS to an `https://` collector, on sinew's one TLS stack
//! ([`sinew_core::tls`]: rustls with ring): a connector that dials TCP
//! and then makes the TLS handshake, for tonic's channels (gRPC, ALPN
//! `h2`) and for the HTTP client of `http/protobuf` (ALPN `http/1.1`).
//!
//! `http://` endpoints do not come here: they keep the plain connectors
//! they had, at no cost of this module's.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use sinew_core::tls::{ALPN_H2, ClientTls, HandshakeFailed, HandshakeFailure, rustls};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// The ALPN protocol of HTTP/1.1, what `http/protobuf` exports speak.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The protocol agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpn {
    /// gRPC: `h2`, which the server must choose.
    H2,
    /// OTLP/HTTP: `http/1.1` offered.
    Http1,
}

/// Connects to an `https://` collector: TCP (no Nagle delay), then the
/// TLS handshake, verifying the server's certificate against the URI's
/// host. A refused handshake is a [`HandshakeFailed`] saying why, in an
/// I/O error of kind `ConnectionRefused`.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    tcp: HttpConnector,
    tls: ClientTls,
    alpn: Alpn,
}

/// A connection [`TlsConnector`] made.
#[derive(Debug)]
pub(crate) struct TlsConnection(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

/// The future of a [`TlsConnector`]'s connection.
type Connecting = Pin<Box<dyn Future<Output = io::Result<TlsConnection>> + Send>>;

// === impl TlsConnector ===

impl TlsConnector {
    /// For gRPC: ALPN `h2`, which the server must agree to. The connect
    /// timeout is the channel's.
    pub(crate) fn grpc(tls: ClientTls) -> Self {
        Self::new(tls, Alpn::H2, None)
    }

    /// For OTLP/HTTP: ALPN `http/1.1`; the TCP connect bounded by
    /// `connect_timeout`.
    pub(crate) fn http1(tls: ClientTls, connect_timeout: Duration) -> Self {
        Self::new(tls, Alpn::Http1, Some(connect_timeout))
    }

    fn new(tls: ClientTls, alpn: Alpn, connect_timeout: Option<Duration>) -> Self {
        let mut tcp = HttpConnector::new();
        // The URI is https://: the scheme is this connector's to serve.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        Self { tcp, tls, alpn }
    }

    /// The rustls configuration of the next handshake: the TLS's current
    /// one (reloaded files included), with this connector's ALPN.
    fn config(&self) -> Arc<rustls::ClientConfig> {
        let config = self.tls.current();
        match self.alpn {
            // The client configuration offers `h2` already.
            Alpn::H2 => config,
            Alpn::Http1 => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
                Arc::new(config)
            }
        }
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsConnection;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default();
        // Without the brackets of an IPv6 literal.
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        let name = self
            .tls
            .server_name(host)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error));
        let config = self.config();
        let alpn = self.alpn;
        let dial = self.tcp.call(uri);
        Box::pin(async move {
            let name = name?;
            let tcp = dial.await.map_err(io::Error::other)?.into_inner();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|error| HandshakeFailed::from_io(&error).into_io())?;
            if alpn == Alpn::H2 && stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(HandshakeFailed::new(HandshakeFailure::NoHttp2).into_io());
            }
            Ok(TlsConnection(TokioIo::new(stream)))
        })
    }
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("tls", &self.tls)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

/// A lazily connecting tonic channel to `endpoint`, an `https://` URI,
/// over TLS. Its worker task is spawned on the current runtime, which
/// must be one.
pub(crate) fn grpc_channel(endpoint: &Endpoint, tls: ClientTls) -> Channel {
    endpoint.connect_with_connector_lazy(TlsConnector::grpc(tls))
}

// === impl TlsConnection ===

impl hyper::rt::Read for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConnection {
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

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.inner().get_ref();
        let connected = tcp.connected();
        if session.alpn_protocol() == Some(ALPN_H2) {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use sinew_core::tls::{ClientTlsConfig, ServerTls, ServerTlsConfig};
    use sinew_testing::pki::{CertFiles, TestPki};
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };
    use tower::Service as _;

    use super::*;

    /// A TLS server on a free loopback port offering `alpn`, that answers
    /// each connection's first bytes with the protocol agreed.
    async fn server(cert: &CertFiles, alpn: &[&[u8]]) -> SocketAddr {
        let tls = ServerTls::load(ServerTlsConfig::new(&cert.cert, &cert.key)).unwrap();
        let mut config = (*tls.current()).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut first = [0; 4];
                    if stream.read_exact(&mut first).await.is_ok() {
                        let agreed = stream.get_ref().1.alpn_protocol().unwrap_or(b"none");
                        let agreed = agreed.to_vec();
                        let _ = stream.write_all(&agreed).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    async fn exchange(mut connection: TlsConnection) -> String {
        use hyper_util::rt::TokioIo;
        // Back to tokio's traits, to write and read plainly.
        let mut io = TokioIo::new(&mut connection);
        io.write_all(b"ping").await.unwrap();
        let mut answer = String::new();
        io.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn http1_connections_are_verified_and_agree_on_http1() {
        let pki = TestPki::new("test CA");
        let addr = server(&pki.server(&["localhost"]), &[b"h2", ALPN_HTTP1]).await;
        let tls = ClientTls::load(ClientTlsConfig::new().ca(pki.ca())).unwrap();
        let mut connector = TlsConnector::http1(tls, Duration::from_secs(5));
        let uri: Uri = format!("https://localhost:{}/v1/traces", addr.port())
            .parse()
            .unwrap();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .unwrap();
        let connection = connector.call(uri).await.unwrap();
        assert!(!connection.connected().is_negotiated_h2());
        assert_eq!(exchange(connection).await, "http/1.1");
    }

    #[tokio::test]
    async fn grpc_connections_need_h2_and_a_trusted_certificate() {
        let pki = TestPki::new("test CA");
        let cert = pki.server(&["localhost"]);
        let uri = |addr: SocketAddr| -> Uri {
            format!("https://localhost:{}", addr.port())
                .parse()
                .unwrap()
        };
        let trusting = ClientTls::load(ClientTlsConfig::new().ca(pki.ca())).unwrap();

        let addr = server(&cert, &[b"h2"]).await;
        let connection = TlsConnector::grpc(trusting.clone())
            .call(uri(addr))
            .await
            .unwrap();
        assert!(connection.connected().is_negotiated_h2());
        assert_eq!(exchange(connection).await, "h2");

        // A server that speaks no h2 is refused, saying so.
        let addr = server(&cert, &[ALPN_HTTP1]).await;
        let error = TlsConnector::grpc(trusting)
            .call(uri(addr))
            .await
            .unwrap_err();
        let failed = error.get_ref().unwrap().downcast_ref::<HandshakeFailed>();
        assert_eq!(
            failed.map(HandshakeFailed::failure),
            Some(HandshakeFailure::NoHttp2),
            "{error}"
        );

        // Another CA's certificate is not trusted.
        let other = TestPki::new("another CA");
        let distrusting = ClientTls::load(ClientTlsConfig::new().ca(other.ca())).unwrap();
        let addr = server(&cert, &[b"h2"]).await;
        let error = TlsConnector::grpc(distrusting)
            .call(uri(addr))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        let failed = error.get_ref().unwrap().downcast_ref::<HandshakeFailed>();
        assert_eq!(
            failed.map(HandshakeFailed::failure),
            Some(HandshakeFailure::UnknownIssuer),
            "{error}"
        );
    }
}
