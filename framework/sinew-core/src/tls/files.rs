//! Reading certificates and keys from PEM files.

use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::TlsError;

/// The largest PEM file read: a chain or a CA bundle of a few hundred
/// certificates fits; a file that is not a certificate does not fill
/// memory.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// A file a setting names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) key: &'static str,
    pub(crate) path: PathBuf,
}

impl Named {
    pub(crate) fn new(key: &'static str, path: impl Into<PathBuf>) -> Self {
        Self {
            key,
            path: path.into(),
        }
    }

    /// The file's bytes.
    pub(crate) fn read(&self) -> Result<Vec<u8>, TlsError> {
        let failed = |reason: String| TlsError::Read {
            key: self.key,
            path: self.path.clone(),
            reason,
        };
        let len = std::fs::metadata(&self.path)
            .map_err(|e| failed(e.to_string()))?
            .len();
        if len > MAX_FILE {
            return Err(failed(format!("larger than {MAX_FILE} bytes")));
        }
        std::fs::read(&self.path).map_err(|e| failed(e.to_string()))
    }

    fn invalid(&self, reason: impl Into<String>) -> TlsError {
        TlsError::Invalid {
            key: self.key,
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The certificates of `pem`, this file's bytes: at least one.
    pub(crate) fn certs(&self, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(self.invalid("no CERTIFICATE block"));
        }
        Ok(certs)
    }

    /// The private key of `pem`, this file's bytes (PKCS#8, PKCS#1 or
    /// SEC1). The error never quotes the file.
    pub(crate) fn key(&self, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            self.invalid("no private key (PKCS#8, PKCS#1 or SEC1 PEM block) could be read")
        })
    }

    /// A root store of the certificates of `pem`, this file's bytes.
    pub(crate) fn roots(&self, pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in self.certs(pem)? {
            roots
                .add(cert)
                .map_err(|e| self.invalid(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

/// Reads every file of `files`, in order; what was read is what the
/// configuration is built from and what the next reload compares with.
pub(crate) fn read_all(files: &[&Named]) -> Result<Vec<Vec<u8>>, TlsError> {
    files.iter().map(|file| file.read()).collect()
}
