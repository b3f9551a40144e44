//! The principal a sinew gateway verified at the edge, as it forwards it.

use super::{AuthError, AuthFuture, Authenticator, Credentials, Principal, Source};

/// The header a sinew gateway puts the verified principal's subject in.
pub const PRINCIPAL_HEADER: &str = "x-sinew-principal";
/// The header a sinew gateway puts the principal's scopes in, separated
/// by spaces.
pub const SCOPES_HEADER: &str = "x-sinew-scopes";

/// Authenticates calls forwarded by a sinew gateway: the principal the
/// gateway verified at the edge, from [`PRINCIPAL_HEADER`] and
/// [`SCOPES_HEADER`], believed only from a peer whose verified client
/// certificate (mTLS) is one of the trusted gateways'. The caller's own
/// token never reaches the service.
///
/// A call from a trusted gateway without the header is not its
/// (`Ok(None)`: the gateway forwarded an anonymous call to a public
/// method, or another authenticator of a [`FirstOf`](super::FirstOf)
/// decides). The header from any other peer is refused: someone is
/// trying to name themselves.
///
/// ```
/// use sinew_server::auth::GatewayPrincipal;
///
/// let trusted = GatewayPrincipal::new(["spiffe://shop.test/gateway"]);
/// # let _ = trusted;
/// ```
#[derive(Debug, Clone)]
pub struct GatewayPrincipal {
    gateways: Vec<String>,
}

impl GatewayPrincipal {
    /// Trusts gateways whose certificates name one of `identities` (a
    /// SPIFFE id, or a subject such as `CN=gateway`).
    pub fn new<I, S>(identities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            gateways: identities.into_iter().map(Into::into).collect(),
        }
    }
}

impl Authenticator for GatewayPrincipal {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a> {
        let subject = credentials.headers.get(PRINCIPAL_HEADER);
        let trusted = credentials.peer.is_some_and(|peer| {
            let name = peer.spiffe_id.as_ref().unwrap_or(&peer.subject);
            self.gateways.iter().any(|g| g == name)
        });
        let result = match (subject, trusted) {
            (None, _) => Ok(None),
            (Some(_), false) => Err(AuthError::Invalid(
                "a principal header from a peer that is not a trusted gateway".to_owned(),
            )),
            (Some(subject), true) => match subject.to_str() {
                Ok(subject) if !subject.is_empty() => {
                    let scopes = credentials
                        .headers
                        .get(SCOPES_HEADER)
                        .and_then(|s| s.to_str().ok())
                        .unwrap_or("");
                    Ok(Some(
                        Principal::new(subject, Source::Custom("gateway"))
                            .with_scopes(scopes.split_ascii_whitespace()),
                    ))
                }
                _ => Err(AuthError::Invalid(
                    "an unreadable principal header".to_owned(),
                )),
            },
        };
        Box::pin(std::future::ready(result))
    }
}
