//! The server side: a certificate for the server, and the client
//! certificates it asks for.

use std::{path::PathBuf, str::FromStr, sync::Arc};

use rustls::{ServerConfig, server::WebPkiClientVerifier, sign::CertifiedKey};

use super::{
    ALPN_H2, Reload, TlsError,
    files::Named,
    provider,
    reload::{FromFiles, Loaded},
};

/// Whether a server asks its clients for certificates (mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates: TLS only (the default).
    #[default]
    Off,
    /// A client may present a certificate; if it does, it must verify
    /// against the CA bundle, and its identity is known to the server.
    /// Clients without one are let in without an identity.
    Optional,
    /// Every client must present a certificate that verifies against the
    /// CA bundle; the handshake fails otherwise.
    Required,
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" | "none" => Ok(Self::Off),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            _ => Err("expected off, optional or required".to_owned()),
        }
    }
}

/// Where a server's TLS comes from: its certificate chain and key, and,
/// for mTLS, the CA bundle its clients' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    cert: Named,
    key: Named,
    client_auth: ClientAuth,
    client_ca: Option<Named>,
}

// === impl ServerTlsConfig ===

impl ServerTlsConfig {
    /// The certificate chain (PEM, the server's certificate first) and its
    /// private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: Named::new("tls_cert", cert),
            key: Named::new("tls_key", key),
            client_auth: ClientAuth::Off,
            client_ca: None,
        }
    }

    /// Asks clients for certificates verified against `ca` (a PEM bundle),
    /// which `Optional` and `Required` need.
    pub fn client_auth(mut self, mode: ClientAuth, ca: Option<PathBuf>) -> Self {
        self.client_auth = mode;
        self.client_ca = ca.map(|ca| Named::new("tls_client_ca", ca));
        self
    }

    /// Whether clients are asked for certificates.
    pub fn client_auth_mode(&self) -> ClientAuth {
        self.client_auth
    }
}

impl FromFiles for ServerTlsConfig {
    type Built = ServerConfig;

    fn files(&self) -> Vec<&Named> {
        let mut files = vec![&self.cert, &self.key];
        files.extend(&self.client_ca);
        files
    }

    /// A rustls configuration from the files' bytes, `read`, in the order
    /// of [`files`](Self::files).
    fn build(&self, read: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
        let provider = provider();
        let certs = self.cert.certs(&read[0])?;
        let key = self.key.key(&read[1])?;
        let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|error| {
            match error {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                    key: self.key.key,
                    path: self.key.path.clone(),
                    cert_key: self.cert.key,
                },
                // The key did not load: the message says no more than that.
                _ => TlsError::Invalid {
                    key: self.key.key,
                    path: self.key.path.clone(),
                    reason: "the private key is of a kind rustls cannot use".to_owned(),
                },
            }
        })?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setting {
                key: "tls_cert",
                reason: e.to_string(),
            })?;
        let builder = match (self.client_auth, &self.client_ca, read.get(2)) {
            (ClientAuth::Off, _, _) => builder.with_no_client_auth(),
            (mode, Some(ca), Some(pem)) => {
                let roots = Arc::new(ca.roots(pem)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = match mode {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier.build().map_err(|e| TlsError::Invalid {
                    key: ca.key,
                    path: ca.path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            (_, _, _) => {
                return Err(TlsError::Setting {
                    key: "tls_client_ca",
                    reason: "client certificates (tls_client_auth optional or required) need \
                             a CA bundle to verify them against"
                        .to_owned(),
                });
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Single(Arc::new(certified))));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }
}

/// One certificate for every client.
#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Single {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// A server's TLS, loaded from its files and reloaded when they change.
///
/// Cheap to clone: clones share the configuration. Each handshake takes
/// the [`current`](Self::current) configuration, so a reload reaches every
/// connection made after it, and none made before.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Loaded<ServerTlsConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.inner.config.cert.path)
            .field("client_auth", &self.inner.config.client_auth)
            .finish_non_exhaustive()
    }
}

// === impl ServerTls ===

impl ServerTls {
    /// Reads the files and builds the configuration; an error names the
    /// setting whose file is missing, unreadable or invalid, or a key that
    /// does not match its certificate.
    pub fn load(config: ServerTlsConfig) -> Result<Self, TlsError> {
        Loaded::load(config).map(|inner| Self { inner })
    }

    /// The configuration for a new connection's handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.inner.current()
    }

    /// Whether clients are asked for certificates.
    pub fn client_auth(&self) -> ClientAuth {
        self.inner.config.client_auth
    }
}

impl ServerTls {
    /// Reloads the files every `interval` (zero: only on `SIGHUP`) and on
    /// each `SIGHUP`, for as long as a clone of this lives; see
    /// [`Reload`]. Must be called within a tokio runtime.
    pub fn watch(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        Loaded::watch(&self.inner, self.describe(), interval)
    }
}

impl Reload for ServerTls {
    fn reload(&self) -> Result<bool, TlsError> {
        self.inner.reload()
    }

    fn describe(&self) -> String {
        format!("server TLS ({})", self.inner.config.cert.path.display())
    }
}
