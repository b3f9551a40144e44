//! What a resilient client is built from.

use std::time::Duration;

use crate::{
    fault::FaultConfig,
    {
        RetryPolicy,
        balance::{Discovery, DiscoveryError, ReconnectBackoff},
        breaker::BreakerConfig,
        bulkhead::BulkheadConfig,
        service_config::{ServiceConfig, ServiceConfigError},
    },
};

use super::resolve::DEFAULT_RETRY;
use sinew_core::compression::CompressionEncoding;
use sinew_core::tls::{ClientTls, ClientTlsConfig, TlsError};

/// Where a client sends its calls.
#[derive(Debug, Clone, PartialEq)]
enum Targets {
    Fixed(Vec<String>),
    Dns { target: String, every: Duration },
}

/// The configuration of a resilient client. Every setting has a default
/// that is safe in production; see the table in the README.
///
/// ```
/// use std::time::Duration;
/// use sinew_client::ClientConfig;
///
/// let config = ClientConfig::endpoints(["http://10.0.0.7:50051", "http://10.0.0.8:50051"])
///     .timeout(Duration::from_secs(2))
///     .seed(42);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    targets: Targets,
    pub(crate) timeout: Option<Duration>,
    pub(crate) headroom: Duration,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) throttle: Option<(u32, f64)>,
    pub(crate) max_attempts_cap: u32,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) bulkhead: Option<BulkheadConfig>,
    pub(crate) service_config: Option<ServiceConfig>,
    pub(crate) seed: Option<u64>,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect: ReconnectBackoff,
    pub(crate) keepalive: Duration,
    pub(crate) fault: Option<FaultConfig>,
    send_compressed: Option<CompressionEncoding>,
    accept_compressed: bool,
    pub(crate) tls: Option<ClientTlsConfig>,
    pub(crate) tls_reload_interval: Duration,
    pub(crate) credentials: Option<crate::credentials::Shared>,
    allow_plaintext_credentials: bool,
}

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoints could not be found.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The service config is invalid; the error names the field.
    #[error("invalid service config: {0}")]
    ServiceConfig(#[from] ServiceConfigError),
    /// The TLS files could not be used; the error names the setting.
    #[error("invalid TLS: {0}")]
    Tls(#[from] TlsError),
    /// TLS is configured for an endpoint that is not `https://`.
    #[error("TLS is configured but {endpoint} is not an https:// endpoint")]
    TlsWithoutHttps {
        /// The endpoint.
        endpoint: String,
    },
    /// Credentials would go in plain text to a host that is not this
    /// machine.
    #[error(
        "credentials would be sent in plain text to {endpoint}: use https://, or \
         allow_credentials_over_plaintext if the network encrypts"
    )]
    InsecureCredentials {
        /// The endpoint.
        endpoint: String,
    },
}

// === impl ClientConfig ===

impl ClientConfig {
    /// Connects to `https://` endpoints with this TLS: a CA bundle instead
    /// of the system's roots, a client certificate for mTLS, a server-name
    /// override. Its files are read when the client is built (a missing
    /// or invalid one fails it, naming the setting) and again every
    /// [`tls_reload_interval`](Self::tls_reload_interval) and on `SIGHUP`:
    /// new connections use the new files. Without it, `https://` endpoints
    /// trust the system's roots.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends these credentials (`authorization`) on every call; see
    /// [`credentials`](crate::credentials). Refused for an `http://`
    /// endpoint that is not a loopback address, unless
    /// [`allow_credentials_over_plaintext`](Self::allow_credentials_over_plaintext).
    pub fn credentials(mut self, credentials: impl crate::credentials::CallCredentials) -> Self {
        self.credentials = Some(crate::credentials::Shared(std::sync::Arc::new(credentials)));
        self
    }

    /// Lets credentials go in plain text to any host (default false): for a
    /// network that encrypts below gRPC, such as a mesh's sidecar.
    pub fn allow_credentials_over_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext_credentials = allow;
        self
    }

    /// Refuses credentials that would travel in plain text to another
    /// host.
    pub(crate) fn check_credentials(&self) -> Result<(), ClientError> {
        if self.credentials.is_none() || self.allow_plaintext_credentials {
            return Ok(());
        }
        for target in self.target_uris() {
            let uri: http::Uri = match target.parse() {
                Ok(uri) => uri,
                // Discovery reports a target that does not parse.
                Err(_) => continue,
            };
            if uri.scheme() != Some(&http::uri::Scheme::HTTPS)
                && !sinew_core::tls::is_loopback(&uri)
            {
                return Err(ClientError::InsecureCredentials {
                    endpoint: target.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// How often the TLS files are read again (default 10s; zero: on
    /// `SIGHUP` only).
    pub fn tls_reload_interval(mut self, every: Duration) -> Self {
        self.tls_reload_interval = every;
        self
    }

    /// The TLS of the client's `https://` endpoints, loaded: `None` when
    /// none is configured (the system's roots are then used).
    pub(crate) fn load_tls(&self) -> Result<Option<ClientTls>, ClientError> {
        if self.tls.is_some()
            && let Some(plain) = self.target_uris().find(|uri| !uri.starts_with("https://"))
        {
            // A client certificate or a CA given for a plain-text endpoint
            // would be ignored, silently.
            return Err(ClientError::TlsWithoutHttps {
                endpoint: plain.to_owned(),
            });
        }
        Ok(self.tls.clone().map(ClientTls::load).transpose()?)
    }

    /// The targets as given.
    fn target_uris(&self) -> impl Iterator<Item = &str> {
        let targets: Vec<&str> = match &self.targets {
            Targets::Fixed(targets) => targets.iter().map(String::as_str).collect(),
            Targets::Dns { target, .. } => vec![target.as_str()],
        };
        targets.into_iter()
    }

    /// A client of these endpoints (`http://host:port`, or
    /// `https://host:port` for TLS).
    pub fn endpoints<I, S>(targets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_targets(Targets::Fixed(
            targets.into_iter().map(Into::into).collect(),
        ))
    }

    /// A client of one endpoint (`http://host:port`).
    pub fn endpoint(target: impl Into<String>) -> Self {
        Self::endpoints([target])
    }

    /// A client of every address `target` (`http://name:port`) resolves to,
    /// resolved again every 30 seconds.
    pub fn dns(target: impl Into<String>) -> Self {
        Self::with_targets(Targets::Dns {
            target: target.into(),
            every: Duration::from_secs(30),
        })
    }

    fn with_targets(targets: Targets) -> Self {
        Self {
            targets,
            timeout: Some(Duration::from_secs(30)),
            headroom: crate::deadline::DEFAULT_HEADROOM,
            retry: Some(DEFAULT_RETRY),
            throttle: Some((10, 0.1)),
            max_attempts_cap: crate::MAX_ATTEMPTS_CAP,
            breaker: Some(BreakerConfig::default()),
            bulkhead: Some(BulkheadConfig::default()),
            service_config: None,
            seed: None,
            connect_timeout: Duration::from_secs(1),
            reconnect: ReconnectBackoff::default(),
            keepalive: Duration::from_secs(60),
            fault: None,
            send_compressed: None,
            accept_compressed: false,
            tls: None,
            tls_reload_interval: Duration::from_secs(10),
            credentials: None,
            allow_plaintext_credentials: false,
        }
    }

    /// Compresses every request message with `encoding` (default `None`:
    /// requests are sent uncompressed). The server must accept it (a sinew
    /// server accepts gzip and zstd), else calls fail with
    /// `UNIMPLEMENTED`. A client that compresses also accepts responses
    /// compressed with gzip or zstd, as servers commonly answer in the
    /// request's encoding.
    ///
    /// To compress only some methods' requests, call them on a clone made
    /// with the generated client's `send_compressed`: clones share
    /// connections.
    pub fn send_compressed(mut self, encoding: impl Into<Option<CompressionEncoding>>) -> Self {
        self.send_compressed = encoding.into();
        self
    }

    /// What requests are compressed with, if anything: read by the
    /// generated client's `connect`.
    pub fn send_compression(&self) -> Option<CompressionEncoding> {
        self.send_compressed
    }

    /// Whether to accept responses compressed with gzip or zstd, and say
    /// so on every call (`grpc-accept-encoding`), so that servers set to
    /// compress their responses do. Default: only when the client sends
    /// compressed ([`send_compressed`](Self::send_compressed)).
    ///
    /// Why not always: tonic builds the header anew on every call, which
    /// costs about 3% of a plain call's instructions (allocation, header
    /// map, HPACK on both sides), for nothing unless the server compresses;
    /// and a server never compresses for a client that does not accept it
    /// (the gRPC spec), so a client that does not accept is answered
    /// uncompressed, never refused.
    pub fn accept_compressed(mut self, accept: bool) -> Self {
        self.accept_compressed = accept;
        self
    }

    /// Whether responses compressed with gzip or zstd are accepted: read
    /// by the generated client's `connect`.
    pub fn accepts_compressed(&self) -> bool {
        self.accept_compressed || self.send_compressed.is_some()
    }

    /// How often to resolve a DNS target again (default 30s).
    pub fn dns_refresh(mut self, every: Duration) -> Self {
        if let Targets::Dns { every: current, .. } = &mut self.targets {
            *current = every;
        }
        self
    }

    /// The timeout of calls whose method and caller set none (default
    /// 30s); `None` leaves such calls without a deadline of their own.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// How much of an inherited deadline to keep back (default 5ms).
    pub fn headroom(mut self, headroom: Duration) -> Self {
        self.headroom = headroom;
        self
    }

    /// The retry rules of methods whose contract and service config set
    /// none (default: 3 attempts, 50ms to 1s backoff, on `UNAVAILABLE`, and
    /// `RESOURCE_EXHAUSTED` with pushback). `None` turns default retries
    /// off; failures that never reached the server are still retried once.
    pub fn retry(mut self, retry: impl Into<Option<RetryPolicy>>) -> Self {
        self.retry = retry.into();
        self
    }

    /// Retry throttling: the token bucket's size and the tokens a success
    /// gives back (default 10 and 0.1, gRFC A6). `None` turns it off. A
    /// service config's `retryThrottling` wins.
    pub fn retry_throttling(mut self, bucket: impl Into<Option<(u32, f64)>>) -> Self {
        self.throttle = bucket.into();
        self
    }

    /// Allows more than 5 attempts per call (gRFC A6's cap).
    pub fn max_attempts_cap(mut self, cap: u32) -> Self {
        self.max_attempts_cap = cap;
        self
    }

    /// The circuit breaker of each endpoint; `None` turns breakers off.
    pub fn breaker(mut self, breaker: impl Into<Option<BreakerConfig>>) -> Self {
        self.breaker = breaker.into();
        self
    }

    /// The client's bulkhead; `None` turns it off.
    pub fn bulkhead(mut self, bulkhead: impl Into<Option<BulkheadConfig>>) -> Self {
        self.bulkhead = bulkhead.into();
        self
    }

    /// Per-method overrides from a gRPC service config.
    pub fn service_config(mut self, config: ServiceConfig) -> Self {
        self.service_config = Some(config);
        self
    }

    /// Per-method overrides from gRPC service config JSON.
    pub fn service_config_json(self, json: &str) -> Result<Self, ClientError> {
        Ok(self.service_config(ServiceConfig::from_json(json)?))
    }

    /// Seeds every random draw (jitter, load balancing), for reproducible
    /// tests. By default the seed comes from the clock.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How long a connection attempt may take, from the TCP connect to
    /// the server's HTTP/2 SETTINGS (default 1s). An attempt that takes
    /// longer fails its calls with `UNAVAILABLE` and a
    /// [`ConnectFailed`](crate::ConnectFailed) cause: the retry layer
    /// sends them elsewhere, and the endpoint backs off.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Backoff of endpoints whose connections fail (default 100ms to 10s).
    pub fn reconnect_backoff(mut self, backoff: ReconnectBackoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Interval of HTTP/2 keepalive pings (default 60s; zero turns them off).
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self
    }

    /// Injects faults into the client's calls, for rehearsing failure.
    pub fn fault(mut self, fault: FaultConfig) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The host the client's spans name as `server.address`: the DNS
    /// target's, or the one host every fixed endpoint shares. `None` when
    /// the endpoints are on different hosts: no one name is right.
    pub(crate) fn server_host(&self) -> Option<String> {
        let host = |target: &str| {
            let uri: http::Uri = target.parse().ok()?;
            uri.host().map(str::to_owned)
        };
        match &self.targets {
            Targets::Dns { target, .. } => host(target),
            Targets::Fixed(targets) => {
                let mut hosts = targets.iter().map(|t| host(t));
                let first = hosts.next()??;
                hosts
                    .all(|h| h.as_deref() == Some(&*first))
                    .then_some(first)
            }
        }
    }

    pub(crate) fn discovery(&self) -> Result<Discovery, DiscoveryError> {
        match &self.targets {
            Targets::Fixed(targets) => Discovery::fixed(targets),
            Targets::Dns { target, every } => Discovery::dns(target, *every),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_host_is_the_one_every_target_names() {
        let host = |config: ClientConfig| config.server_host();
        assert_eq!(
            host(ClientConfig::endpoint("http://127.0.0.1:50051")).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            host(ClientConfig::dns("http://orders.internal:50051")).as_deref(),
            Some("orders.internal")
        );
        assert_eq!(
            host(ClientConfig::endpoints([
                "http://orders:1",
                "http://orders:2"
            ]))
            .as_deref(),
            Some("orders")
        );
        assert_eq!(
            host(ClientConfig::endpoints(["http://a:1", "http://b:1"])),
            None
        );
        assert_eq!(host(ClientConfig::endpoint("not a uri")), None);
    }
}
