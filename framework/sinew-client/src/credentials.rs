//! Credentials a client attaches to every call.
//!
//! A [`CallCredentials`] gives the `authorization` value of each call: a
//! [`StaticToken`], a [`TokenFile`] read again when it changes (a token a
//! sidecar or the kubelet rotates), or a [`RefreshingToken`] fetched by a
//! callback of yours and fetched again before it expires. Set one with
//! [`ClientConfig::credentials`](crate::ClientConfig::credentials).
//!
//! - **Never in plain text to another host.** A client with credentials
//!   refuses to be built for an `http://` endpoint that is not a loopback
//!   address (`ClientError::InsecureCredentials`), as grpc-go refuses, unless
//!   [`allow_credentials_over_plaintext`](crate::ClientConfig::allow_credentials_over_plaintext)
//!   says otherwise (a mesh sidecar that encrypts, say).
//! - **Never forwarded.** A handler's incoming `authorization` is not put on
//!   its outgoing calls: a client sends its own credentials, or none. A
//!   service that must act on its caller's behalf copies the header onto
//!   the outgoing request itself, knowingly (the confused deputy is the
//!   default's reason).
//! - The value is marked sensitive (`HeaderValue::set_sensitive`): HTTP/2
//!   never indexes it in HPACK, and `Debug` prints `Sensitive`.

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use http::HeaderValue;

/// Why a credential could not be had: the call fails `UNAUTHENTICATED`
/// without being sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no credentials for the call: {0}")]
pub struct CredentialsError(pub String);

/// What [`CallCredentials::authorization`] returns.
pub type CredentialsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HeaderValue, CredentialsError>> + Send + 'a>>;

/// The `authorization` value of a call.
pub trait CallCredentials: Send + Sync + 'static {
    /// The value to send, such as `Bearer <token>`.
    fn authorization(&self) -> CredentialsFuture<'_>;
}

fn bearer(token: &str) -> Result<HeaderValue, CredentialsError> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| CredentialsError("the token is not a valid header value".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// One token for every call.
#[derive(Clone)]
pub struct StaticToken(HeaderValue);

impl StaticToken {
    /// Sends `Bearer <token>`.
    pub fn bearer(token: &str) -> Result<Self, CredentialsError> {
        bearer(token).map(Self)
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

impl CallCredentials for StaticToken {
    fn authorization(&self) -> CredentialsFuture<'_> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

/// A token read from a file, read again once the file changes (its
/// modification time or length; checked at most every `check_every`,
/// default 1s): what a sidecar or the kubelet (a projected service account
/// token) rotates in place. The check is a `stat` on the calling task: keep
/// the file on a local filesystem. If the file cannot be read after it was
/// once, the token read before is sent.
pub struct TokenFile {
    path: PathBuf,
    check_every: Duration,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    value: HeaderValue,
    /// The file's modification time and length when it was read.
    stamp: Option<(SystemTime, u64)>,
    checked: std::time::Instant,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish()
    }
}

impl TokenFile {
    /// The token in the file at `path`, sent as `Bearer <token>`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            check_every: Duration::from_secs(1),
            cached: Mutex::new(None),
        }
    }

    /// Checks the file for a change at most this often (default 1s).
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every;
        self
    }

    fn current(&self) -> Result<HeaderValue, CredentialsError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cached.as_ref()
            && cached.checked.elapsed() < self.check_every
        {
            return Ok(cached.value.clone());
        }
        let stamp = std::fs::metadata(&self.path)
            .and_then(|meta| Ok((meta.modified()?, meta.len())))
            .ok();
        if let Some(hit) = cached.as_mut()
            && hit.stamp == stamp
            && stamp.is_some()
        {
            hit.checked = std::time::Instant::now();
            return Ok(hit.value.clone());
        }
        let read = std::fs::read_to_string(&self.path)
            .map_err(|e| CredentialsError(format!("cannot read {}: {e}", self.path.display())))
            .and_then(|text| bearer(&text));
        match read {
            Ok(value) => {
                *cached = Some(Cached {
                    value: value.clone(),
                    stamp,
                    checked: std::time::Instant::now(),
                });
                Ok(value)
            }
            // Mid-rotation (the file replaced, or briefly gone): the token
            // read last is still the best there is.
            Err(error) => match cached.as_mut() {
                Some(hit) => {
                    tracing::warn!(%error, "cannot read the token file; sending the token read before");
                    hit.checked = std::time::Instant::now();
                    Ok(hit.value.clone())
                }
                None => Err(error),
            },
        }
    }
}

impl CallCredentials for TokenFile {
    fn authorization(&self) -> CredentialsFuture<'_> {
        Box::pin(std::future::ready(self.current()))
    }
}

/// A token from a callback of yours (an OAuth client-credentials grant, a
/// cloud metadata server), kept until shortly before it expires and then
/// fetched again; one fetch at a time, whatever the number of calls.
pub struct RefreshingToken<F> {
    fetch: F,
    before: Duration,
    timeout: Duration,
    cached: tokio::sync::Mutex<Option<(HeaderValue, SystemTime)>>,
}

impl<F> std::fmt::Debug for RefreshingToken<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingToken")
            .field("before", &self.before)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> RefreshingToken<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(String, SystemTime), CredentialsError>> + Send,
{
    /// Fetches with `fetch`, which answers a token and when it expires;
    /// fetched again 60s before that.
    pub fn new(fetch: F) -> Self {
        Self {
            fetch,
            before: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// How long one fetch may take (default 10s): past it, the calls
    /// waiting for it fail `UNAUTHENTICATED` rather than hang. (A fetch
    /// must not call through the client it gives credentials to: that
    /// call would wait for the fetch.)
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fetches this long before the token expires (default 60s).
    pub fn refresh_before(mut self, before: Duration) -> Self {
        self.before = before;
        self
    }
}

impl<F, Fut> CallCredentials for RefreshingToken<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(String, SystemTime), CredentialsError>> + Send,
{
    fn authorization(&self) -> CredentialsFuture<'_> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if let Some((value, expires)) = cached.as_ref()
                && SystemTime::now() + self.before < *expires
            {
                return Ok(value.clone());
            }
            let (token, expires) = tokio::time::timeout(self.timeout, (self.fetch)())
                .await
                .map_err(|_| CredentialsError("the token fetch timed out".to_owned()))??;
            let value = bearer(&token)?;
            *cached = Some((value.clone(), expires));
            Ok(value)
        })
    }
}

/// The credentials of a client, shared by its clones.
#[derive(Clone)]
pub(crate) struct Shared(pub(crate) Arc<dyn CallCredentials>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallCredentials(..)")
    }
}
