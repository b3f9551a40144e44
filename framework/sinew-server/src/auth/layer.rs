//! Enforcing the contract's access rules on every call.

use std::{collections::HashMap, convert::Infallible, future::Future, pin::Pin, sync::Arc};

use sinew_core::contract::{Access, MethodInfo};
use tonic::{Status, body::Body};
use tower::{Service, ServiceExt as _};

use super::{AuthError, Authenticator, Authorizer, Credentials, Principal};
use crate::Routing;

/// What a method whose contract declares no access rule gets, with an
/// authenticator configured (the `auth_undeclared` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Undeclared {
    /// Denied to every caller (`PERMISSION_DENIED`): the default, so that a
    /// method added without a thought for access is closed, not open.
    #[default]
    Deny,
    /// Any authenticated caller.
    Allow,
}

impl std::str::FromStr for Undeclared {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "deny" => Ok(Self::Deny),
            "allow" => Ok(Self::Allow),
            _ => Err("expected deny or allow".to_owned()),
        }
    }
}

/// Health's method that lists every hosted service.
const HEALTH_LIST: &str = "/grpc.health.v1.Health/List";

/// What a call to one path needs.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Nothing.
    Public,
    /// A principal holding every scope (none: any principal); the
    /// method's entry goes to the authorizer.
    Scopes(&'static [&'static str], &'static MethodInfo),
    /// Any principal, no authorizer (reflection).
    AnyPrincipal,
    /// Nobody (`auth_undeclared = "deny"`).
    Closed,
}

/// The access rules of every hosted method, and who checks them.
pub(crate) struct Enforcement {
    rules: HashMap<&'static str, Rule>,
    /// Per service (`package.Service`), else the server's.
    authenticators: HashMap<String, Arc<dyn Authenticator>>,
    default: Option<Arc<dyn Authenticator>>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

// === impl Enforcement ===

impl Enforcement {
    /// The rules of `methods` (the hosted contracts' tables): `health`
    /// and `reflection` are the framework's own paths, public or not as
    /// the settings say.
    pub(crate) fn new(
        methods: impl IntoIterator<Item = &'static [MethodInfo]>,
        health: (&'static [MethodInfo], bool),
        reflection: (&'static [&'static str], bool),
        undeclared: Undeclared,
    ) -> Self {
        let mut rules = HashMap::new();
        for table in methods {
            for method in table {
                let rule = match method.policy.auth {
                    Access::Public => Rule::Public,
                    Access::Scopes(scopes) => Rule::Scopes(scopes, method),
                    Access::Undeclared => match undeclared {
                        Undeclared::Deny => Rule::Closed,
                        Undeclared::Allow => Rule::Scopes(&[], method),
                    },
                };
                rules.insert(method.path, rule);
            }
        }
        let (health, health_public) = health;
        let (reflection, reflection_public) = reflection;
        for method in health {
            // List names every hosted service: it is as open as reflection.
            let public = if method.path == HEALTH_LIST {
                reflection_public
            } else {
                health_public
            };
            let rule = if public {
                Rule::Public
            } else {
                Rule::AnyPrincipal
            };
            rules.insert(method.path, rule);
        }
        for path in reflection {
            let rule = if reflection_public {
                Rule::Public
            } else {
                Rule::AnyPrincipal
            };
            rules.insert(path, rule);
        }
        Self {
            rules,
            authenticators: HashMap::new(),
            default: None,
            authorizer: None,
        }
    }

    pub(crate) fn authenticators(
        mut self,
        default: Option<Arc<dyn Authenticator>>,
        per_service: HashMap<String, Arc<dyn Authenticator>>,
    ) -> Self {
        self.default = default;
        self.authenticators = per_service;
        self
    }

    pub(crate) fn authorizer(mut self, authorizer: Option<Arc<dyn Authorizer>>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// The services named by `authenticator_for` that the server does not
    /// host (a typo would leave the service to the default authenticator).
    pub(crate) fn unknown_services(&self) -> Vec<&str> {
        self.authenticators
            .keys()
            .filter(|service| {
                let prefix = format!("/{service}/");
                !self.rules.keys().any(|path| path.starts_with(&prefix))
            })
            .map(String::as_str)
            .collect()
    }

    /// The public paths, sorted: logged once at start.
    pub(crate) fn public_paths(&self) -> Vec<&'static str> {
        let mut public: Vec<_> = self
            .rules
            .iter()
            .filter(|(_, rule)| matches!(rule, Rule::Public))
            .map(|(path, _)| *path)
            .collect();
        public.sort_unstable();
        public
    }

    /// The paths no caller may call (undeclared, denied).
    pub(crate) fn closed_paths(&self) -> Vec<&'static str> {
        let mut closed: Vec<_> = self
            .rules
            .iter()
            .filter(|(_, rule)| matches!(rule, Rule::Closed))
            .map(|(path, _)| *path)
            .collect();
        closed.sort_unstable();
        closed
    }

    fn authenticator(&self, path: &str) -> Option<&Arc<dyn Authenticator>> {
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(service, _)| service);
        service
            .and_then(|service| self.authenticators.get(service))
            .or(self.default.as_ref())
    }

    /// Decides `request`: `Ok` with the principal (none for a public
    /// method) to put in its extensions, or the status to answer with.
    async fn check(&self, request: &http::request::Parts) -> Result<Option<Principal>, Status> {
        let path = request.uri.path();
        // Not a hosted method: routing answers UNIMPLEMENTED, but only to
        // a caller with credentials, so that no one else can tell which
        // methods exist.
        let rule = self.rules.get(path).copied().unwrap_or(Rule::AnyPrincipal);
        if matches!(rule, Rule::Public) {
            return Ok(None);
        }
        let Some(authenticator) = self.authenticator(path) else {
            return Err(Status::unauthenticated("missing credentials"));
        };
        let credentials = Credentials {
            headers: &request.headers,
            peer: crate::peer_identity(&request.extensions),
            path,
        };
        let principal = match authenticator.authenticate(credentials).await {
            Ok(Some(principal)) => principal,
            Ok(None) => return Err(Status::unauthenticated("missing credentials")),
            Err(AuthError::Invalid(why)) => {
                tracing::debug!(path, reason = %why, "credentials refused");
                return Err(Status::unauthenticated("invalid credentials"));
            }
            Err(AuthError::Unavailable(why)) => {
                tracing::warn!(path, reason = %why, "credentials cannot be checked");
                return Err(Status::unavailable("credentials cannot be checked now"));
            }
        };
        match rule {
            Rule::Public => unreachable!("handled above"),
            Rule::AnyPrincipal => {}
            Rule::Closed => {
                tracing::debug!(path, "the method declares no access rule: denied");
                return Err(Status::permission_denied("permission denied"));
            }
            Rule::Scopes(scopes, method) => {
                if let Some(missing) = scopes.iter().find(|scope| !principal.has_scope(scope)) {
                    tracing::debug!(path, missing, "a scope is missing");
                    return Err(Status::permission_denied(format!(
                        "missing scope {missing}"
                    )));
                }
                if let Some(authorizer) = &self.authorizer
                    && let Err(denied) = authorizer.authorize(&principal, method, &request.headers)
                {
                    tracing::debug!(path, "denied by the authorizer");
                    return Err(Status::permission_denied(denied.0));
                }
            }
        }
        Ok(Some(principal))
    }
}

/// The contract's access rules, for calls that reach a service some other
/// way than the server's gRPC routing: a gateway's HTTP/JSON listener,
/// which checks each transcoded call here exactly as the server checks
/// gRPC calls (see the [module docs](super)). Health and reflection are
/// not among its methods.
///
/// Without an authenticator nothing is enforced, as on the server.
pub struct AccessRules {
    enforcement: Option<Enforcement>,
}

impl std::fmt::Debug for AccessRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRules")
            .field("enforced", &self.enforcement.is_some())
            .finish_non_exhaustive()
    }
}

impl AccessRules {
    /// The rules of `methods`, checked with `authenticator` and then
    /// `authorizer`; an undeclared method gets what `undeclared` says.
    pub fn new(
        methods: &'static [MethodInfo],
        undeclared: Undeclared,
        authenticator: Option<Arc<dyn Authenticator>>,
        authorizer: Option<Arc<dyn Authorizer>>,
    ) -> Self {
        let enforcement = authenticator.map(|authenticator| {
            Enforcement::new([methods], (&[], true), (&[], false), undeclared)
                .authenticators(Some(authenticator), HashMap::new())
                .authorizer(authorizer)
        });
        Self { enforcement }
    }

    /// Decides a call to the method at `request`'s path: the principal
    /// (none for a public method, or when nothing is enforced), or the
    /// status to answer with.
    pub async fn check(&self, request: &http::request::Parts) -> Result<Option<Principal>, Status> {
        match &self.enforcement {
            Some(enforcement) => enforcement.check(request).await,
            None => Ok(None),
        }
    }
}

/// Wraps routing in the enforcement: a call is routed only once its
/// access rule holds.
pub(crate) struct AuthLayer;

impl AuthLayer {
    pub(crate) fn wrap(routing: Routing, enforcement: Arc<Enforcement>) -> Routing {
        Routing::layered(AuthService {
            inner: routing,
            enforcement,
        })
    }
}

#[derive(Clone)]
struct AuthService {
    inner: Routing,
    enforcement: Arc<Enforcement>,
}

impl Service<http::Request<Body>> for AuthService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let enforcement = Arc::clone(&self.enforcement);
        // The body (not `Sync`) stays out of the check.
        let (mut parts, body) = request.into_parts();
        Box::pin(async move {
            match enforcement.check(&parts).await {
                Ok(principal) => {
                    if let Some(principal) = principal {
                        parts.extensions.insert(Arc::new(principal));
                    }
                    inner.oneshot(http::Request::from_parts(parts, body)).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
