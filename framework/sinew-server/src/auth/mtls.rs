//! The verified client certificate as the principal.

use std::collections::HashMap;

use super::{AuthFuture, Authenticator, Credentials, Principal, Source};

/// Authenticates callers by their verified client certificate (mTLS, with
/// `tls_client_auth` `optional` or `required`): the principal's subject is
/// the certificate's SPIFFE id, or else its subject's distinguished name,
/// and its scopes are the ones granted to that name here.
///
/// A call without a certificate is not its (`Ok(None)`).
///
/// ```
/// use sinew_server::auth::MtlsAuthenticator;
///
/// let mtls = MtlsAuthenticator::new()
///     .grant("spiffe://shop.test/ns/prod/sa/orders", ["payments.write"])
///     .grant("CN=ops-cli", ["payments.write", "payments.refund"]);
/// # let _ = mtls;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MtlsAuthenticator {
    grants: HashMap<String, Vec<String>>,
}

impl MtlsAuthenticator {
    /// Grants nothing yet: every verified certificate is a principal
    /// without scopes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `scopes` to the certificate named `identity` (a SPIFFE id,
    /// or a subject such as `CN=ops-cli`).
    pub fn grant<I, S>(mut self, identity: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grants
            .entry(identity.into())
            .or_default()
            .extend(scopes.into_iter().map(Into::into));
        self
    }
}

impl Authenticator for MtlsAuthenticator {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a> {
        let principal = credentials.peer.map(|peer| {
            let name = peer.spiffe_id.as_ref().unwrap_or(&peer.subject);
            Principal::new(name.clone(), Source::Certificate)
                .with_scopes(self.grants.get(name).into_iter().flatten().cloned())
        });
        Box::pin(std::future::ready(Ok(principal)))
    }
}
