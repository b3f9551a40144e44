//! JWT bearer tokens, verified against a JWKS file or URL.

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock, Weak},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use sinew_core::tls::{ClientTls, ClientTlsConfig};
use tokio::time::Instant;

use super::{
    AuthError, AuthFuture, Authenticator, Credentials, Principal, Source,
    jwks::{JwksError, KeySet, MAX_JWKS_BYTES},
    jwt::{self, Rules},
};

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWK Set file, read again at each refresh.
    File(PathBuf),
    /// A JWK Set URL (`https://`, or `http://` to a loopback address),
    /// fetched at each refresh.
    Url(http::Uri),
}

/// How a [`JwtAuthenticator`] verifies tokens.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    source: JwksSource,
    rules: Rules,
    refresh: Duration,
    min_refetch: Duration,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
}

// === impl JwtConfig ===

impl JwtConfig {
    /// Tokens from `issuer` for `audience`, signed by keys of `source`.
    /// Leeway 60s; the keys are fetched again every 5m, and for a token
    /// whose `kid` they lack at most every 30s.
    pub fn new(source: JwksSource, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            source,
            rules: Rules::new(issuer, audience),
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            tls: None,
        }
    }

    /// The claim rules (more issuers or audiences, another leeway).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// How often the keys are fetched again (default 5m).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// The least time between two fetches for an unknown `kid` (default
    /// 30s): a flood of tokens with made-up `kid`s costs one fetch per
    /// interval, not one per call.
    pub fn min_refetch(mut self, every: Duration) -> Self {
        self.min_refetch = every;
        self
    }

    /// How long a fetch may take (default 5s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The TLS of an `https://` JWKS URL (default: the system's roots).
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Why a [`JwtAuthenticator`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSetupError {
    /// The keys could not be fetched or read.
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    /// They are not a usable JWK Set.
    #[error("invalid JWKS: {0}")]
    Keys(#[from] JwksError),
    /// The TLS of the URL is invalid.
    #[error(transparent)]
    Tls(#[from] sinew_core::tls::TlsError),
}

/// Authenticates `authorization: Bearer <JWT>`; see the
/// [module docs](super).
///
/// A call without a bearer token is not its (`Ok(None)`); a token that
/// does not verify is refused, and why is logged at debug by kind. Cheap
/// to clone: clones share the keys.
#[derive(Clone)]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    config: JwtConfig,
    tls: Option<ClientTls>,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last fetched; one fetch at a time.
    fetched: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("source", &self.inner.config.source)
            .field("keys", &self.keys().len())
            .finish_non_exhaustive()
    }
}

// === impl JwtAuthenticator ===

impl JwtAuthenticator {
    /// Fetches the keys, and keeps them fresh on a task of its own for as
    /// long as a clone lives. Fails when they cannot be fetched: a server
    /// that could verify no token should not start.
    pub async fn new(config: JwtConfig) -> Result<Self, JwtSetupError> {
        if let JwksSource::Url(uri) = &config.source {
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let loopback_http =
                uri.scheme() == Some(&http::uri::Scheme::HTTP) && sinew_core::tls::is_loopback(uri);
            if !https && !loopback_http {
                // Keys fetched in plain text can be swapped on the way:
                // whoever does it signs any token they like.
                return Err(JwtSetupError::Fetch(format!(
                    "{uri}: the keys must come over https:// (or http:// on this machine)"
                )));
            }
        }
        let tls = match (&config.source, &config.tls) {
            (JwksSource::Url(uri), tls) if uri.scheme() == Some(&http::uri::Scheme::HTTPS) => {
                Some(ClientTls::load(tls.clone().unwrap_or_default())?)
            }
            _ => None,
        };
        let keys = fetch(&config.source, tls.as_ref(), config.timeout).await?;
        let inner = Arc::new(Inner {
            tls,
            keys: RwLock::new(Arc::new(keys)),
            fetched: tokio::sync::Mutex::new(Instant::now()),
            config,
        });
        tokio::spawn(refresh(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The keys in use.
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .inner
                .keys
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Verifies `token` at `now`, fetching the keys again (at most every
    /// `min_refetch`) when its `kid` is unknown: a key rotated in at the
    /// issuer is picked up at its first token.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, AuthError> {
        let first = jwt::verify(token, &self.keys(), &self.inner.config.rules, now);
        let claims = match first {
            Err(error) if error.is_unknown_key() => {
                // Whether this call fetched or another did (a rotation
                // reaches many calls at once), the keys now in use decide.
                self.inner.refetch().await?;
                jwt::verify(token, &self.keys(), &self.inner.config.rules, now)
            }
            other => other,
        }
        .map_err(|error| AuthError::Invalid(error.to_string()))?;
        let mut principal = Principal::new(claims.subject.clone().unwrap_or_default(), Source::Jwt)
            .with_scopes(claims.scopes.iter().cloned());
        principal.claims = Some(Arc::new(claims));
        Ok(principal)
    }
}

impl Inner {
    /// Fetches the keys again unless they were fetched within
    /// `min_refetch` (by this call, another, or the periodic refresh).
    async fn refetch(&self) -> Result<(), AuthError> {
        let mut fetched = self.fetched.lock().await;
        if fetched.elapsed() < self.config.min_refetch {
            return Ok(());
        }
        *fetched = Instant::now();
        match fetch(&self.config.source, self.tls.as_ref(), self.config.timeout).await {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                Ok(())
            }
            Err(error) => Err(AuthError::Unavailable(error.to_string())),
        }
    }
}

/// Fetches the keys every `refresh`, until the authenticator is gone. A
/// failed fetch keeps the keys in use.
async fn refresh(inner: Weak<Inner>) {
    loop {
        let Some(every) = inner.upgrade().map(|inner| inner.config.refresh) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut fetched = inner.fetched.lock().await;
        match fetch(
            &inner.config.source,
            inner.tls.as_ref(),
            inner.config.timeout,
        )
        .await
        {
            Ok(keys) => {
                *inner.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                *fetched = Instant::now();
            }
            Err(error) => tracing::warn!(%error, "JWKS refresh failed; keeping the keys in use"),
        }
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some(token) = bearer(credentials.headers) else {
                return Ok(None);
            };
            let token = token.map_err(|why| AuthError::Invalid(why.to_owned()))?;
            self.verify(token, SystemTime::now()).await.map(Some)
        })
    }
}

/// The bearer token of `authorization`: `None` without one, `Err` for one
/// that is not text.
fn bearer(headers: &http::HeaderMap) -> Option<Result<&str, &'static str>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err("the authorization header is not text"));
    };
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| Ok(token.trim()))
}

/// The key set of `source`.
async fn fetch(
    source: &JwksSource,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<KeySet, JwtSetupError> {
    let bytes = match source {
        JwksSource::File(path) => {
            let len = tokio::fs::metadata(path)
                .await
                .map_err(|e| JwtSetupError::Fetch(format!("{}: {e}", path.display())))?
                .len();
            if len > MAX_JWKS_BYTES as u64 {
                return Err(JwksError::TooLarge.into());
            }
            tokio::fs::read(path)
                .await
                .map_err(|e| JwtSetupError::Fetch(format!("{}: {e}", path.display())))?
        }
        JwksSource::Url(uri) => tokio::time::timeout(timeout, get(uri, tls))
            .await
            .map_err(|_| JwtSetupError::Fetch(format!("{uri}: timed out")))?
            .map_err(|e| JwtSetupError::Fetch(format!("{uri}: {e}")))?
            .to_vec(),
    };
    Ok(KeySet::from_json(&bytes)?)
}

/// GETs `uri` over HTTP/1.1 (over TLS for `https://`), its body bounded
/// by [`MAX_JWKS_BYTES`].
async fn get(uri: &http::Uri, tls: Option<&ClientTls>) -> Result<Bytes, String> {
    let host = uri.host().ok_or("no host")?;
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = match tls {
        Some(tls) if https => {
            let mut config = (*tls.current()).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = tls
                .server_name(host.trim_matches(['[', ']']))
                .map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, stream)
                .await
                .map_err(|e| sinew_core::tls::HandshakeFailed::from_io(&e).to_string())?;
            send(TokioIo::new(stream), request).await?
        }
        _ if https => return Err("no TLS for an https:// URL".to_owned()),
        _ => send(TokioIo::new(stream), request).await?,
    };
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| e.to_string())
}

async fn send<I>(
    io: I,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "JWKS connection closed with an error");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}
