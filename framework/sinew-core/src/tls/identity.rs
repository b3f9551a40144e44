//! What a verified peer certificate says of its holder.

use rustls::pki_types::CertificateDer;
use x509_cert::{
    Certificate,
    der::Decode,
    ext::pkix::{SubjectAltName, name::GeneralName},
};

/// The identity of a peer that presented a certificate the handshake
/// verified (mTLS). The server scaffold puts it in each request's
/// extensions; authenticators and handlers read it from there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The subject's distinguished name, as RFC 4514 writes it
    /// (`CN=orders,O=shop`).
    pub subject: String,
    /// The subject's common name, where it has one.
    pub common_name: Option<String>,
    /// The DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// The URIs of the subject alternative name extension.
    pub uris: Vec<String>,
    /// The SPIFFE id: the certificate's URI name when it has exactly one
    /// and it is a `spiffe://` URI, as an X.509-SVID has.
    pub spiffe_id: Option<String>,
    /// The certificate itself, DER.
    pub certificate: CertificateDer<'static>,
}

// === impl PeerIdentity ===

impl PeerIdentity {
    /// The identity of `certificate`, the end-entity certificate of a
    /// verified chain. `None` when it does not parse (a verified
    /// certificate always does).
    pub fn from_certificate(certificate: &CertificateDer<'_>) -> Option<Self> {
        let parsed = Certificate::from_der(certificate.as_ref()).ok()?;
        let tbs = parsed.tbs_certificate();
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some((_critical, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>()
        {
            for name in names {
                match name {
                    GeneralName::DnsName(dns) => dns_names.push(dns.to_string()),
                    GeneralName::UniformResourceIdentifier(uri) => uris.push(uri.to_string()),
                    _ => {}
                }
            }
        }
        let spiffe_id = match uris.as_slice() {
            [one] if one.starts_with("spiffe://") => Some(one.clone()),
            _ => None,
        };
        Some(Self {
            subject: tbs.subject().to_string(),
            common_name: tbs.subject().common_name().ok().flatten().map(String::from),
            dns_names,
            uris,
            spiffe_id,
            certificate: certificate.clone().into_owned(),
        })
    }
}
