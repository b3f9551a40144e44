//! Certificates made at test time: a CA, and server and client
//! certificates it signs, written as PEM files. No private key is ever
//! committed.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate chain (the certificate alone: its CA is the
    /// bundle's).
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

/// How a certificate the [`TestPki`] issues differs from a good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validity {
    /// Valid from a day ago for a year.
    #[default]
    Current,
    /// Expired in 2001.
    Expired,
    /// Valid from 2100.
    NotYetValid,
}

/// A certificate authority of a test's own, in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_path: PathBuf,
    issued: AtomicUsize,
}

impl TestPki {
    /// A new CA named `name`; its certificate is written to
    /// [`ca`](Self::ca).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, pem("CERTIFICATE", ca.der())).expect("write the CA");
        Self {
            dir,
            ca,
            ca_path,
            issued: AtomicUsize::new(0),
        }
    }

    /// The CA's certificate (PEM): the bundle to trust.
    pub fn ca(&self) -> &Path {
        &self.ca_path
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> CertFiles {
        self.issue(
            names,
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        )
    }

    /// A client certificate with common name `name`, and `uri` (a SPIFFE
    /// id, say) as its URI name when given.
    pub fn client(&self, name: &str, uri: Option<&str>) -> CertFiles {
        self.issue(
            &[],
            Some((name, uri)),
            ExtendedKeyUsagePurpose::ClientAuth,
            Validity::Current,
        )
    }

    /// A server certificate for `names`, valid as `validity` says.
    pub fn server_with(&self, names: &[&str], validity: Validity) -> CertFiles {
        self.issue(names, None, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    fn issue(
        &self,
        names: &[&str],
        client: Option<(&str, Option<&str>)>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> CertFiles {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("certificate params");
        match client {
            Some((name, uri)) => {
                params.distinguished_name.push(DnType::CommonName, name);
                if let Some(uri) = uri {
                    params
                        .subject_alt_names
                        .push(SanType::URI(uri.try_into().expect("an IA5 URI")));
                }
            }
            None => {
                if let Some(first) = names.first() {
                    params.distinguished_name.push(DnType::CommonName, *first);
                }
            }
        }
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = match validity {
            Validity::Current => (
                now - time::Duration::days(1),
                now + time::Duration::days(365),
            ),
            Validity::Expired => (
                rcgen::date_time_ymd(2000, 1, 1),
                rcgen::date_time_ymd(2001, 1, 1),
            ),
            Validity::NotYetValid => (
                rcgen::date_time_ymd(2100, 1, 1),
                rcgen::date_time_ymd(2101, 1, 1),
            ),
        };
        params.not_before = from;
        params.not_after = until;
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.ca).expect("a certificate");
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let files = CertFiles {
            cert: self.dir.path().join(format!("cert-{n}.pem")),
            key: self.dir.path().join(format!("key-{n}.pem")),
        };
        std::fs::write(&files.cert, pem("CERTIFICATE", cert.der())).expect("write the certificate");
        std::fs::write(&files.key, pem("PRIVATE KEY", &key.serialize_der()))
            .expect("write the key");
        files
    }
}

/// `der` as a PEM block labelled `label`, in lines of 64 characters.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
