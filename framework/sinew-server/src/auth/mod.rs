//! Authentication and authorization, with the access rules the contract
//! declares.
//!
//! An [`Authenticator`] turns a call's metadata and its peer (the verified
//! client certificate, under mTLS) into a [`Principal`], says there are no
//! credentials of its kind, or refuses them. Give the server one with
//! [`Server::authenticator`](crate::Server::authenticator) (for every
//! service) or [`Server::authenticator_for`](crate::Server::authenticator_for)
//! (for one); [`FirstOf`] tries several in order. Built in:
//!
//! - [`JwtAuthenticator`]: `authorization: Bearer <JWT>`, verified against
//!   a JWKS file or URL (refreshed, and fetched again for an unknown
//!   `kid`), with `iss`, `aud`, `exp` and `nbf` checked and each key's
//!   algorithm pinned (never `none`, never HMAC);
//! - [`MtlsAuthenticator`]: the verified client certificate's identity
//!   (SPIFFE id, or subject) as the principal, with the scopes you grant it;
//! - [`ApiKeys`]: static keys from a file, for internal tools, compared in
//!   constant time;
//! - [`GatewayPrincipal`]: the principal a sinew gateway verified at the
//!   edge, believed only from the gateway's own certificate (mTLS).
//!
//! # Enforcement
//!
//! With an authenticator configured, every call is checked against the
//! method table the contract declared (`(sinew.method).auth`, and the
//! service default `(sinew.service).auth`):
//!
//! | the contract says | the call needs | else |
//! |---|---|---|
//! | `public: true` | nothing | |
//! | `scopes: [a, b]` | a principal holding `a` and `b` | `UNAUTHENTICATED` without valid credentials, `PERMISSION_DENIED` without the scopes |
//! | `scopes: []` | any principal | `UNAUTHENTICATED` |
//! | nothing | denied (`auth_undeclared = "deny"`, the default), or any principal (`"allow"`) | `PERMISSION_DENIED`, `UNAUTHENTICATED` |
//!
//! Health is public (`health_public`, default true: probes carry no
//! credentials); reflection needs a principal unless `reflection_public`
//! is set. The server logs, once at start, which methods are public. An
//! [`Authorizer`] adds rules of your own (per tenant, per resource), given
//! the principal and the method's table entry, after the contract's.
//!
//! Handlers read the principal with [`principal`].
//!
//! # What callers are told, and what is logged
//!
//! `UNAUTHENTICATED` says only "missing credentials" or "invalid
//! credentials"; why a token was refused is logged at debug, by kind
//! (expired, bad signature, unknown key), never with the token, a key, or
//! a claim's value. No credential is ever put in a span.

mod api_key;
mod bearer;
mod gateway;
pub mod jwks;
pub mod jwt;
mod layer;
mod mtls;

use std::{future::Future, pin::Pin, sync::Arc};

use http::HeaderMap;
use sinew_core::{contract::MethodInfo, tls::PeerIdentity};

pub use api_key::{ApiKeys, ApiKeysError};
pub use api_key::{DEFAULT_HEADER as API_KEY_HEADER, MIN_KEY_LEN};
pub use bearer::{JwksSource, JwtAuthenticator, JwtConfig, JwtSetupError};
pub use gateway::{GatewayPrincipal, PRINCIPAL_HEADER, SCOPES_HEADER};
pub use jwks::{Algorithm, JwksError, KeySet};
pub use jwt::{Claims, JwtError, Rules};
pub use layer::{AccessRules, Undeclared};
pub(crate) use layer::{AuthLayer, Enforcement};
pub use mtls::MtlsAuthenticator;

/// Who is calling: an authenticated caller and what it may do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Principal {
    /// Who: a token's `sub`, a certificate's SPIFFE id or subject, an API
    /// key's name.
    pub subject: String,
    /// The scopes it holds.
    pub scopes: Vec<String>,
    /// How it was authenticated.
    pub source: Source,
    /// The verified token's claims, for a principal from a JWT.
    pub claims: Option<Arc<Claims>>,
}

/// How a [`Principal`] was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A JWT bearer token.
    Jwt,
    /// A verified client certificate (mTLS).
    Certificate,
    /// A static API key.
    ApiKey,
    /// An authenticator of the application's own, by its name.
    Custom(&'static str),
}

// === impl Principal ===

impl Principal {
    /// A principal named `subject`, authenticated by `source`, with no
    /// scopes.
    pub fn new(subject: impl Into<String>, source: Source) -> Self {
        Self {
            subject: subject.into(),
            scopes: Vec::new(),
            source,
            claims: None,
        }
    }

    /// With these scopes.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether it holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope)
    }
}

/// What an authenticator sees of a call.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Credentials<'a> {
    /// The call's metadata.
    pub headers: &'a HeaderMap,
    /// The verified identity of the peer's certificate, under mTLS.
    pub peer: Option<&'a PeerIdentity>,
    /// The method called, `/package.Service/Method`.
    pub path: &'a str,
}

/// Why credentials were refused. Its text goes to the debug log, never to
/// the caller, and never holds the credential itself.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials are invalid: `UNAUTHENTICATED`.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// They could not be checked now (the keys could not be fetched):
    /// `UNAVAILABLE`, which a caller may retry.
    #[error("credentials cannot be checked: {0}")]
    Unavailable(String),
}

/// What [`Authenticator::authenticate`] returns.
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Principal>, AuthError>> + Send + 'a>>;

/// Turns a call's credentials into a [`Principal`].
///
/// `Ok(None)` means the call carries no credentials of this kind (another
/// authenticator of a [`FirstOf`] may know them); `Err` refuses them.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates the call described by `credentials`.
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a>;
}

/// Several authenticators, tried in order: the first that recognises the
/// call's credentials (a principal, or a refusal) decides.
pub struct FirstOf(Vec<Arc<dyn Authenticator>>);

impl FirstOf {
    /// Tries `authenticators` in order.
    pub fn new(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Self(authenticators)
    }
}

impl std::fmt::Debug for FirstOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FirstOf").field(&self.0.len()).finish()
    }
}

impl Authenticator for FirstOf {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            for authenticator in &self.0 {
                if let Some(principal) = authenticator.authenticate(credentials).await? {
                    return Ok(Some(principal));
                }
            }
            Ok(None)
        })
    }
}

/// A refusal by an [`Authorizer`]: `PERMISSION_DENIED` with this message,
/// which the caller sees (say no more than the caller may know).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Rules of the application's own, checked after the contract's: given
/// the principal, the method's table entry and the call's metadata.
///
/// ```
/// use sinew_server::auth::{Authorizer, Denied, Principal};
///
/// // A tenant may only call with its own tenant header.
/// let same_tenant = |principal: &Principal,
///                    _method: &sinew_core::contract::MethodInfo,
///                    headers: &http::HeaderMap| {
///     let tenant = headers.get("x-tenant").and_then(|v| v.to_str().ok());
///     let own = principal.claims.as_ref().and_then(|c| c.extra.get("tenant"))
///         .and_then(|t| t.as_str());
///     if tenant.is_some() && tenant == own { Ok(()) } else { Err(Denied("not your tenant".into())) }
/// };
/// # fn takes(_: impl Authorizer) {}
/// # takes(same_tenant);
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// Lets the call through, or denies it.
    fn authorize(
        &self,
        principal: &Principal,
        method: &MethodInfo,
        headers: &HeaderMap,
    ) -> Result<(), Denied>;
}

impl<F> Authorizer for F
where
    F: Fn(&Principal, &MethodInfo, &HeaderMap) -> Result<(), Denied> + Send + Sync + 'static,
{
    fn authorize(
        &self,
        principal: &Principal,
        method: &MethodInfo,
        headers: &HeaderMap,
    ) -> Result<(), Denied> {
        self(principal, method, headers)
    }
}

/// The principal the call was authenticated as, when the server has an
/// authenticator and the method is not public.
pub fn principal(extensions: &http::Extensions) -> Option<&Principal> {
    extensions.get::<Arc<Principal>>().map(|p| &**p)
}
