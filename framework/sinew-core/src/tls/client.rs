//! The client side: which servers to trust, and the certificate to show
//! them.

use std::{path::PathBuf, sync::Arc};

use rustls::{ClientConfig, RootCertStore, pki_types::ServerName, sign::CertifiedKey};

use super::{
    ALPN_H2, Reload, TlsError,
    files::Named,
    provider,
    reload::{FromFiles, Loaded},
};

/// What a client's TLS is made of: the authorities it trusts (the
/// system's, by default), the certificate it presents for mTLS, and the
/// name it expects the server's certificate to carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsConfig {
    ca: Option<Named>,
    identity: Option<(Named, Named)>,
    server_name: Option<String>,
    accept_any: bool,
}

// === impl ClientTlsConfig ===

impl ClientTlsConfig {
    /// Trusts the system's roots, presents no certificate, and checks the
    /// server's certificate against the endpoint's host name.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the authorities of this PEM bundle instead of the system's.
    pub fn ca(mut self, bundle: impl Into<PathBuf>) -> Self {
        self.ca = Some(Named::new("tls_ca", bundle));
        self
    }

    /// Presents this certificate chain and key (PEM) to servers that ask
    /// for one (mTLS). Reloaded like the server's.
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((
            Named::new("tls_client_cert", cert),
            Named::new("tls_client_key", key),
        ));
        self
    }

    /// Expects the server's certificate to be for `name`, whatever host
    /// the endpoint is reached by (an IP address, a load balancer).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts any certificate the server shows, without checking who
    /// signed it, when it expires or what it is for: the connection is
    /// encrypted but not authenticated, and anyone on the path can read
    /// it. For poking at a test server with a throwaway certificate
    /// (`sinew call --insecure`), never for a service's own clients. The
    /// handshake's signatures are still checked.
    pub fn dangerous_accept_any_certificate(mut self) -> Self {
        self.accept_any = true;
        self
    }
}

impl FromFiles for ClientTlsConfig {
    type Built = ClientConfig;

    fn files(&self) -> Vec<&Named> {
        let mut files = Vec::new();
        files.extend(&self.ca);
        if let Some((cert, key)) = &self.identity {
            files.push(cert);
            files.push(key);
        }
        files
    }

    fn build(&self, read: &[Vec<u8>]) -> Result<ClientConfig, TlsError> {
        let provider = provider();
        let mut read = read.iter();
        let roots = match &self.ca {
            Some(ca) => ca.roots(read.next().map_or(&[][..], Vec::as_slice))?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setting {
                key: "tls_ca",
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = cert.certs(read.next().map_or(&[][..], Vec::as_slice))?;
                let private = key.key(read.next().map_or(&[][..], Vec::as_slice))?;
                let certified =
                    CertifiedKey::from_der(certs.clone(), private.clone_key(), &provider).map_err(
                        |error| match error {
                            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                                key: key.key,
                                path: key.path.clone(),
                                cert_key: cert.key,
                            },
                            _ => TlsError::Invalid {
                                key: key.key,
                                path: key.path.clone(),
                                reason: "the private key is of a kind rustls cannot use".to_owned(),
                            },
                        },
                    )?;
                drop(certified);
                builder
                    .with_client_auth_cert(certs, private)
                    .map_err(|_| TlsError::Invalid {
                        key: key.key,
                        path: key.path.clone(),
                        reason: "the private key is of a kind rustls cannot use".to_owned(),
                    })?
            }
        };
        if self.accept_any {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(AcceptAny(provider)));
        }
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }
}

/// The verifier of [`ClientTlsConfig::dangerous_accept_any_certificate`]:
/// every certificate passes; the handshake's signatures are still checked
/// with the provider's algorithms.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The system's trusted roots (what `SSL_CERT_FILE` and `SSL_CERT_DIR`
/// name, or the distribution's bundle). Certificates that do not parse
/// are skipped, as the system's own tools skip them.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Setting {
            key: "tls_ca",
            reason: "no trusted roots found on this system; name a CA bundle".to_owned(),
        });
    }
    Ok(roots)
}

/// A client's TLS, loaded from its files and reloaded when they change.
///
/// Cheap to clone: clones share the configuration. Each connect takes the
/// [`current`](Self::current) configuration.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Loaded<ClientTlsConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.inner.config.ca.as_ref().map(|ca| &ca.path))
            .field("mtls", &self.inner.config.identity.is_some())
            .field("server_name", &self.inner.config.server_name)
            .finish()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

// === impl ClientTls ===

impl ClientTls {
    /// Reads the files and builds the configuration; an error names the
    /// setting at fault.
    pub fn load(config: ClientTlsConfig) -> Result<Self, TlsError> {
        Loaded::load(config).map(|inner| Self { inner })
    }

    /// The configuration for a new connection's handshake.
    pub fn current(&self) -> Arc<ClientConfig> {
        self.inner.current()
    }

    /// The name to verify the server's certificate against: the override,
    /// or `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.inner.config.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::Setting {
            key: "tls_server_name",
            reason: format!("{name:?} is not a DNS name or an IP address"),
        })
    }

    /// Whether this client presents a certificate.
    pub fn has_identity(&self) -> bool {
        self.inner.config.identity.is_some()
    }
}

impl ClientTls {
    /// Reloads the files every `interval` (zero: only on `SIGHUP`) and on
    /// each `SIGHUP`, for as long as a clone of this lives; see
    /// [`Reload`]. Must be called within a tokio runtime.
    pub fn watch(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        Loaded::watch(&self.inner, self.describe(), interval)
    }
}

impl Reload for ClientTls {
    fn reload(&self) -> Result<bool, TlsError> {
        self.inner.reload()
    }

    fn describe(&self) -> String {
        "client TLS".to_owned()
    }
}
