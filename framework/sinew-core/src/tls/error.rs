//! What can go wrong with TLS: loading its files, and handshakes.

use std::{error::Error, fmt, io, path::PathBuf};

use rustls::{AlertDescription, CertificateError};

/// TLS could not be configured from its files. Names the setting at fault
/// (`tls_cert`, `tls_key`, `tls_client_ca`, ...), never a key's bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {key} ({path}): {reason}")]
    Read {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// A file holds nothing of what it should, or what it holds does not
    /// parse.
    #[error("invalid {key} ({path}): {reason}")]
    Invalid {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the key of the certificate.
    #[error("{key} ({path}) does not match the certificate of {cert_key}")]
    KeyMismatch {
        /// The key's setting.
        key: &'static str,
        /// The key file.
        path: PathBuf,
        /// The certificate's setting.
        cert_key: &'static str,
    },
    /// A combination of settings that cannot work.
    #[error("invalid {key}: {reason}")]
    Setting {
        /// The setting at fault.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl TlsError {
    /// The setting at fault.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::Read { key, .. }
            | Self::Invalid { key, .. }
            | Self::KeyMismatch { key, .. }
            | Self::Setting { key, .. } => Some(key),
        }
    }
}

/// Why a TLS handshake failed, in the terms a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The peer's certificate is not signed by a trusted authority.
    UnknownIssuer,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is not for the name it was reached by.
    NameMismatch,
    /// The peer's certificate was revoked.
    Revoked,
    /// The peer refused this side's certificate, or asked for one that
    /// was not given.
    CertificateRefused,
    /// The peer's certificate is malformed, or unusable for TLS.
    BadCertificate,
    /// The peer does not speak HTTP/2 over TLS (no ALPN `h2`).
    NoHttp2,
    /// The peer did not answer in TLS: likely a plain-text port.
    NotTls,
    /// Anything else: see the source.
    Other,
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownIssuer => "the certificate is signed by an unknown authority",
            Self::Expired => "the certificate has expired",
            Self::NotYetValid => "the certificate is not valid yet",
            Self::NameMismatch => "the certificate is not valid for the server name",
            Self::Revoked => "the certificate was revoked",
            Self::CertificateRefused => {
                "the peer refused this side's certificate, or asked for one not given"
            }
            Self::BadCertificate => "the certificate is invalid",
            Self::NoHttp2 => "the peer does not offer HTTP/2 (ALPN h2)",
            Self::NotTls => "the peer did not answer in TLS (a plain-text port?)",
            Self::Other => "TLS error",
        })
    }
}

/// A TLS handshake failed: [`HandshakeFailure`] says why, the source is
/// rustls' error. The cause of a failed connect.
#[derive(Debug)]
pub struct HandshakeFailed {
    failure: HandshakeFailure,
    source: Option<rustls::Error>,
}

// === impl HandshakeFailed ===

impl HandshakeFailed {
    /// Classifies the error a tokio-rustls handshake returned.
    pub fn from_io(error: &io::Error) -> Self {
        let source = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        let failure = match &source {
            Some(error) => classify(error),
            // The peer closed the connection mid-handshake without an
            // alert: what a plain-text server does with a ClientHello.
            None if matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
            {
                HandshakeFailure::NotTls
            }
            None => HandshakeFailure::Other,
        };
        Self { failure, source }
    }

    /// A failure found after the handshake (the peer chose no ALPN `h2`).
    pub fn new(failure: HandshakeFailure) -> Self {
        Self {
            failure,
            source: None,
        }
    }

    /// Why it failed.
    pub fn failure(&self) -> HandshakeFailure {
        self.failure
    }

    /// As an I/O error of the kind a failed connect has
    /// (`ConnectionRefused`: the peer is there, and would not talk).
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionRefused, self)
    }
}

impl fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake failed: {}", self.failure)
    }
}

impl Error for HandshakeFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn Error + 'static))
    }
}

fn classify(error: &rustls::Error) -> HandshakeFailure {
    use HandshakeFailure as F;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => F::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => F::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                F::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                F::NameMismatch
            }
            CertificateError::Revoked => F::Revoked,
            _ => F::BadCertificate,
        },
        rustls::Error::AlertReceived(alert) => match alert {
            // The peer sends these of this side's certificate.
            AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked => F::CertificateRefused,
            AlertDescription::NoApplicationProtocol => F::NoHttp2,
            AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied => F::CertificateRefused,
            _ => F::Other,
        },
        rustls::Error::NoApplicationProtocol => F::NoHttp2,
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => F::NotTls,
        _ => F::Other,
    }
}
