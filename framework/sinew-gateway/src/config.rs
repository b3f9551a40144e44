//! The gateway's configuration file (TOML): its own settings, the upstream
//! clusters, and the routing rules.
//!
//! Every error names the file and line it comes from. The clusters and the
//! routes are reloaded when the file changes ([`crate::Gateway::watch`]);
//! the `[gateway]` table is read once, at start.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

/// Default interval between checks of the configuration file for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Default limit of an HTTP/JSON request body, and of a request message
/// forwarded over gRPC when the route sets none: 4 MiB, tonic's own.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default limit on shadow calls in flight; past it, calls are not
/// shadowed (and counted as skipped).
pub const DEFAULT_SHADOW_MAX_IN_FLIGHT: usize = 64;
/// Default bound on how much of one answer is kept for a shadow
/// comparison, per side; past it the call is not compared.
pub const DEFAULT_SHADOW_MAX_BYTES: usize = 1024 * 1024;
/// Default time a shadow call may take.
pub const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on the rate limiter's per-client buckets.
pub const DEFAULT_RATE_LIMIT_MAX_CLIENTS: usize = 100_000;
/// The default path of the OpenAPI document on the HTTP listener.
pub const DEFAULT_OPENAPI_PATH: &str = "/openapi.json";
/// Responses shorter than this are not gzipped.
pub const GZIP_MIN_BYTES: usize = 1024;

/// An invalid configuration: where, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid: it names the line, and the key or value.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file (or `<config>` for text given in code).
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The gateway's configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// The `[gateway]` table: read at start only.
    pub settings: Settings,
    /// The upstream clusters, by name.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// The routing rules.
    pub routes: Vec<RouteConfig>,
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
}

/// The `[gateway]` table: what is read once, at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Encoded `FileDescriptorSet` files of the upstreams' contracts.
    pub descriptors: Vec<PathBuf>,
    /// `.proto` files of the upstreams' contracts, compiled at start.
    pub protos: Vec<PathBuf>,
    /// Where `protos` import from.
    pub includes: Vec<PathBuf>,
    /// The HTTP/JSON listener's address; none: no HTTP/JSON.
    pub http_listen: Option<SocketAddr>,
    /// Where the OpenAPI document is served on the HTTP listener.
    pub openapi_path: String,
    /// Send the caller's `authorization` (and API key) upstream as it came.
    /// Off by default: upstreams get the verified principal instead.
    pub forward_credentials: bool,
    /// Largest HTTP/JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// gzip HTTP/JSON responses for callers that accept it.
    pub gzip: bool,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// How long browsers may cache a CORS preflight.
    pub cors_max_age: Duration,
    /// Shadow calls in flight at most.
    pub shadow_max_in_flight: usize,
    /// Bytes of one answer kept per side for a shadow comparison.
    pub shadow_max_bytes: usize,
    /// Per-client rate limit buckets kept at most.
    pub rate_limit_max_clients: usize,
    /// How often the file is checked for changes.
    pub reload_interval: Duration,
    /// Seed of the weighted choice (for tests); none: from entropy.
    pub seed: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            descriptors: Vec::new(),
            protos: Vec::new(),
            includes: Vec::new(),
            http_listen: None,
            openapi_path: DEFAULT_OPENAPI_PATH.to_owned(),
            forward_credentials: false,
            max_body_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            gzip: true,
            cors_origins: Vec::new(),
            cors_max_age: Duration::from_secs(600),
            shadow_max_in_flight: DEFAULT_SHADOW_MAX_IN_FLIGHT,
            shadow_max_bytes: DEFAULT_SHADOW_MAX_BYTES,
            rate_limit_max_clients: DEFAULT_RATE_LIMIT_MAX_CLIENTS,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            seed: None,
        }
    }
}

/// One upstream cluster: a resilient client's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Its endpoints (`http://host:port`, `https://…`), balanced.
    pub endpoints: Vec<String>,
    /// Deadline of calls whose method and route set none.
    pub timeout: Option<Duration>,
    /// Calls in flight at most (the bulkhead); none: the client's default.
    pub max_in_flight: Option<usize>,
    /// CA to verify the cluster's certificates with (`https://` endpoints).
    pub tls_ca: Option<PathBuf>,
    /// The gateway's certificate and key, for mTLS to the cluster.
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The name to verify the cluster's certificate against.
    pub tls_server_name: Option<String>,
    /// Retries by each method's idempotency level (on by default).
    pub retries: bool,
}

/// What a route matches: a package, a service, a method, or everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Match {
    /// `*`: every call no other route matches.
    Any,
    /// A package (`shop.orders.v1`) and the packages under it.
    Package(String),
    /// A service (`shop.orders.v1.Orders`).
    Service(String),
    /// A method (`shop.orders.v1.Orders/GetOrder`).
    Method(String),
}

/// A token bucket: `per_second` tokens a second, `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Refill rate.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

/// Sends matching calls to `cluster` instead of the weighted choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// What the call must carry.
    pub when: OverrideWhen,
    /// Where it then goes.
    pub cluster: String,
}

/// What an [`Override`] looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideWhen {
    /// A header with this value (any value when none).
    Header {
        /// The header's name, lowercase.
        name: String,
        /// The value it must have.
        value: Option<String>,
    },
    /// An authenticated caller with this subject.
    Principal(String),
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// What it matches.
    pub matches: Match,
    /// Clusters and their weights (a single cluster has weight 1).
    pub split: Vec<(String, u32)>,
    /// Overrides, checked in order before the weighted choice.
    pub overrides: Vec<Override>,
    /// A cluster that gets a copy of each call, for comparison.
    pub shadow: Option<String>,
    /// Shadow methods with side effects too (never by default).
    pub shadow_side_effects: bool,
    /// How long a shadow call may take.
    pub shadow_timeout: Duration,
    /// Deadline of the routed calls (the caller's, if sooner, wins).
    pub timeout: Option<Duration>,
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
    /// Largest response message, in bytes.
    pub max_response_bytes: usize,
    /// A token bucket for the whole route.
    pub rate_limit: Option<RateConfig>,
    /// A token bucket per caller (principal, else address).
    pub client_rate_limit: Option<RateConfig>,
    /// The line it starts on, for messages.
    pub line: usize,
}

// === the file as written ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gateway: Option<SettingsFile>,
    #[serde(default)]
    clusters: BTreeMap<Spanned<String>, Spanned<ClusterFile>>,
    #[serde(default)]
    routes: Vec<Spanned<RouteFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    #[serde(default)]
    descriptors: Vec<PathBuf>,
    #[serde(default)]
    protos: Vec<PathBuf>,
    #[serde(default)]
    includes: Vec<PathBuf>,
    http_listen: Option<Spanned<String>>,
    openapi_path: Option<Spanned<String>>,
    forward_credentials: Option<bool>,
    max_body_bytes: Option<usize>,
    gzip: Option<bool>,
    #[serde(default)]
    cors_origins: Vec<String>,
    cors_max_age: Option<Spanned<String>>,
    shadow_max_in_flight: Option<usize>,
    shadow_max_bytes: Option<usize>,
    rate_limit_max_clients: Option<usize>,
    reload_interval: Option<Spanned<String>>,
    seed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    endpoints: Spanned<Vec<String>>,
    timeout: Option<Spanned<String>>,
    max_in_flight: Option<usize>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_server_name: Option<String>,
    retries: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(rename = "match")]
    matches: Spanned<String>,
    cluster: Option<Spanned<String>>,
    split: Option<BTreeMap<Spanned<String>, u32>>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<OverrideFile>>,
    shadow: Option<Spanned<String>>,
    #[serde(default)]
    shadow_side_effects: bool,
    shadow_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_request_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    rate_limit: Option<Spanned<RateConfig>>,
    client_rate_limit: Option<Spanned<RateConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    header: Option<String>,
    value: Option<String>,
    principal: Option<String>,
    cluster: Spanned<String>,
}

// === impl GatewayConfig ===

impl GatewayConfig {
    /// Reads and checks the file at `path`. Relative paths in it are taken
    /// from the file's directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse_at(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let settings = &mut config.settings;
        for list in [
            &mut settings.descriptors,
            &mut settings.protos,
            &mut settings.includes,
        ] {
            for file in list.iter_mut() {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        for cluster in config.clusters.values_mut() {
            for file in [
                &mut cluster.tls_ca,
                &mut cluster.tls_cert,
                &mut cluster.tls_key,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        config.path = Some(path.to_owned());
        Ok(config)
    }

    /// Checks configuration given as text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_at(text, Path::new("<config>"))
    }

    fn parse_at(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            message,
        };
        let file: File = toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            at(span, error.message().to_owned())
        })?;

        let settings = settings(file.gateway.unwrap_or_default(), &at)?;

        let mut clusters = BTreeMap::new();
        for (name, cluster) in file.clusters {
            let span = cluster.span();
            let cluster = cluster.into_inner();
            if cluster.endpoints.get_ref().is_empty() {
                return Err(at(
                    span,
                    format!(
                        "clusters.{}.endpoints: at least one endpoint",
                        name.get_ref()
                    ),
                ));
            }
            for endpoint in cluster.endpoints.get_ref() {
                let fits = endpoint.parse::<http::Uri>().is_ok_and(|uri| {
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
                });
                if !fits {
                    return Err(at(
                        cluster.endpoints.span(),
                        format!(
                            "clusters.{}.endpoints: `{endpoint}` is not an http:// or https:// address",
                            name.get_ref()
                        ),
                    ));
                }
            }
            if cluster.tls_cert.is_some() != cluster.tls_key.is_some() {
                return Err(at(
                    span,
                    format!(
                        "clusters.{}: tls_cert and tls_key go together",
                        name.get_ref()
                    ),
                ));
            }
            clusters.insert(
                name.into_inner(),
                ClusterConfig {
                    endpoints: cluster.endpoints.into_inner(),
                    timeout: duration(cluster.timeout.as_ref(), "timeout", &at)?,
                    max_in_flight: cluster.max_in_flight,
                    tls_ca: cluster.tls_ca,
                    tls_cert: cluster.tls_cert,
                    tls_key: cluster.tls_key,
                    tls_server_name: cluster.tls_server_name,
                    retries: cluster.retries.unwrap_or(true),
                },
            );
        }

        let known = |name: &Spanned<String>| -> Result<String, ConfigError> {
            if clusters.contains_key(name.get_ref()) {
                Ok(name.get_ref().clone())
            } else {
                Err(at(
                    name.span(),
                    format!("unknown cluster `{}`", name.get_ref()),
                ))
            }
        };

        let mut routes: Vec<RouteConfig> = Vec::new();
        for route in file.routes {
            let span = route.span();
            let route = route.into_inner();
            let matches = parse_match(route.matches.get_ref())
                .map_err(|message| at(route.matches.span(), message))?;
            if let Some(other) = routes.iter().find(|r| r.matches == matches) {
                return Err(at(
                    route.matches.span(),
                    format!(
                        "a second route matches `{}` (the first is on line {})",
                        route.matches.get_ref(),
                        other.line
                    ),
                ));
            }
            let split = match (&route.cluster, &route.split) {
                (Some(cluster), None) => vec![(known(cluster)?, 1)],
                (None, Some(split)) if !split.is_empty() => {
                    let mut weights = Vec::new();
                    for (cluster, weight) in split {
                        weights.push((known(cluster)?, *weight));
                    }
                    if weights.iter().all(|(_, w)| *w == 0) {
                        return Err(at(span, "split: every weight is 0".to_owned()));
                    }
                    weights
                }
                _ => {
                    return Err(at(
                        span,
                        "a route needs exactly one of `cluster` and `split`".to_owned(),
                    ));
                }
            };
            let mut overrides = Vec::new();
            for rule in route.overrides {
                let rule_span = rule.span();
                let rule = rule.into_inner();
                let when = match (rule.header, rule.principal) {
                    (Some(name), None) => OverrideWhen::Header {
                        name: name.to_ascii_lowercase(),
                        value: rule.value,
                    },
                    (None, Some(subject)) if rule.value.is_none() => {
                        OverrideWhen::Principal(subject)
                    }
                    _ => {
                        return Err(at(
                            rule_span,
                            "an override needs `header` (and an optional `value`) or `principal`"
                                .to_owned(),
                        ));
                    }
                };
                overrides.push(Override {
                    when,
                    cluster: known(&rule.cluster)?,
                });
            }
            let shadow = route.shadow.as_ref().map(&known).transpose()?;
            let line = line_of(text, span.start);
            routes.push(RouteConfig {
                matches,
                split,
                overrides,
                shadow,
                shadow_side_effects: route.shadow_side_effects,
                shadow_timeout: duration(route.shadow_timeout.as_ref(), "shadow_timeout", &at)?
                    .unwrap_or(DEFAULT_SHADOW_TIMEOUT),
                timeout: duration(route.timeout.as_ref(), "timeout", &at)?,
                max_request_bytes: route.max_request_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
                max_response_bytes: route
                    .max_response_bytes
                    .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
                rate_limit: rate(route.rate_limit.as_ref(), "rate_limit", &at)?,
                client_rate_limit: rate(
                    route.client_rate_limit.as_ref(),
                    "client_rate_limit",
                    &at,
                )?,
                line,
            });
        }
        Ok(Self {
            settings,
            clusters,
            routes,
            path: None,
        })
    }
}

fn settings(
    file: SettingsFile,
    at: &impl Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Settings, ConfigError> {
    let defaults = Settings::default();
    let http_listen = file
        .http_listen
        .map(|addr| {
            addr.get_ref().parse::<SocketAddr>().map_err(|_| {
                at(
                    addr.span(),
                    format!(
                        "gateway.http_listen: `{}` is not an address (host:port)",
                        addr.get_ref()
                    ),
                )
            })
        })
        .transpose()?;
    let openapi_path = match file.openapi_path {
        Some(path) if !path.get_ref().starts_with('/') => {
            return Err(at(
                path.span(),
                format!(
                    "gateway.openapi_path: `{}` must start with /",
                    path.get_ref()
                ),
            ));
        }
        Some(path) => path.into_inner(),
        None => defaults.openapi_path,
    };
    Ok(Settings {
        descriptors: file.descriptors,
        protos: file.protos,
        includes: file.includes,
        http_listen,
        openapi_path,
        forward_credentials: file
            .forward_credentials
            .unwrap_or(defaults.forward_credentials),
        max_body_bytes: file.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        gzip: file.gzip.unwrap_or(defaults.gzip),
        cors_origins: file.cors_origins,
        cors_max_age: duration(file.cors_max_age.as_ref(), "gateway.cors_max_age", at)?
            .unwrap_or(defaults.cors_max_age),
        shadow_max_in_flight: file
            .shadow_max_in_flight
            .unwrap_or(defaults.shadow_max_in_flight),
        shadow_max_bytes: file.shadow_max_bytes.unwrap_or(defaults.shadow_max_bytes),
        rate_limit_max_clients: file
            .rate_limit_max_clients
            .unwrap_or(defaults.rate_limit_max_clients),
        reload_interval: match duration(
            file.reload_interval.as_ref(),
            "gateway.reload_interval",
            at,
        )? {
            Some(every) if every.is_zero() => {
                let span = file.reload_interval.map_or(0..0, |r| r.span());
                return Err(at(
                    span,
                    "gateway.reload_interval: must be above 0".to_owned(),
                ));
            }
            every => every.unwrap_or(defaults.reload_interval),
        },
        seed: file.seed,
    })
}

fn duration(
    value: Option<&Spanned<String>>,
    key: &str,
    at: &impl Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|text| {
            humantime::parse_duration(text.get_ref()).map_err(|error| {
                at(
                    text.span(),
                    format!("{key}: `{}` is not a duration ({error})", text.get_ref()),
                )
            })
        })
        .transpose()
}

fn rate(
    value: Option<&Spanned<RateConfig>>,
    key: &str,
    at: &impl Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Option<RateConfig>, ConfigError> {
    match value {
        Some(rate) if !(rate.get_ref().per_second > 0.0 && rate.get_ref().burst > 0) => Err(at(
            rate.span(),
            format!("{key}: per_second and burst must be above 0"),
        )),
        other => Ok(other.map(|rate| *rate.get_ref())),
    }
}

/// Parses a route's `match`.
fn parse_match(text: &str) -> Result<Match, String> {
    let ident = |part: &str| {
        !part.is_empty()
            && part
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    let text = text.trim_start_matches('/');
    if text == "*" {
        return Ok(Match::Any);
    }
    if let Some((service, method)) = text.split_once('/') {
        if ident(service) && service.contains('.') && ident(method) && !method.contains('.') {
            return Ok(Match::Method(format!("/{service}/{method}")));
        }
    } else if ident(text) {
        // `Service` names start with a capital letter by the style guide;
        // packages are lowercase.
        let last = text.rsplit('.').next().unwrap_or(text);
        return Ok(if last.starts_with(|c: char| c.is_ascii_uppercase()) {
            Match::Service(text.to_owned())
        } else {
            Match::Package(text.to_owned())
        });
    }
    Err(format!(
        "match: `{text}` is not `*`, a package, `package.Service` or `package.Service/Method`"
    ))
}

/// The line (from 1) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[clusters.legacy]
endpoints = ["http://127.0.0.1:1"]

[clusters.v2]
endpoints = ["http://127.0.0.1:2"]
timeout = "2s"

[[routes]]
match = "shop.orders.v1.Orders"
split = { legacy = 95, v2 = 5 }
shadow = "v2"
override = [{ header = "x-canary", value = "1", cluster = "v2" }, { principal = "tester", cluster = "v2" }]

[[routes]]
match = "*"
cluster = "legacy"
"#;

    #[test]
    fn reads_routes_and_clusters() {
        let config = GatewayConfig::parse(GOOD).unwrap();
        assert_eq!(config.clusters.len(), 2);
        assert_eq!(config.clusters["v2"].timeout, Some(Duration::from_secs(2)));
        let route = &config.routes[0];
        assert_eq!(
            route.matches,
            Match::Service("shop.orders.v1.Orders".into())
        );
        assert_eq!(route.split, vec![("legacy".into(), 95), ("v2".into(), 5)]);
        assert_eq!(route.shadow.as_deref(), Some("v2"));
        assert_eq!(route.overrides.len(), 2);
        assert_eq!(route.line, 9, "the line of its [[routes]]");
        assert_eq!(config.routes[1].matches, Match::Any);
    }

    #[test]
    fn an_unknown_cluster_names_its_line() {
        let text = GOOD.replace("shadow = \"v2\"", "shadow = \"v3\"");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert_eq!(error, "<config>:12: unknown cluster `v3`");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let text = GOOD.replace("shadow = \"v2\"", "shadow = \"v2");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert!(error.starts_with("<config>:12: "), "{error}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let text = GOOD.replace("shadow = \"v2\"", "shadw = \"v2\"");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert!(error.starts_with("<config>:12: "), "{error}");
        assert!(error.contains("shadw"), "{error}");
    }

    #[test]
    fn matches_parse() {
        assert_eq!(parse_match("shop").unwrap(), Match::Package("shop".into()));
        assert_eq!(
            parse_match("shop.orders.v1.Orders/Get").unwrap(),
            Match::Method("/shop.orders.v1.Orders/Get".into())
        );
        assert!(parse_match("shop..x").is_err());
        assert!(parse_match("Orders/Get").is_err());
    }

    #[test]
    fn a_route_needs_one_target() {
        let text = GOOD.replace("cluster = \"legacy\"\n", "");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert!(error.contains("exactly one of"), "{error}");
        assert!(error.starts_with("<config>:15: "), "{error}");
    }

    #[test]
    fn bad_endpoints_and_intervals_name_their_line() {
        let text = GOOD.replace("http://127.0.0.1:2", "127.0.0.1:2");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert!(
            error.starts_with("<config>:6: clusters.v2.endpoints:"),
            "{error}"
        );
        let text = format!("[gateway]\nreload_interval = \"0s\"\n{GOOD}");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert_eq!(
            error,
            "<config>:2: gateway.reload_interval: must be above 0"
        );
    }

    #[test]
    fn bad_durations_name_the_key() {
        let text = GOOD.replace("timeout = \"2s\"", "timeout = \"2 parsecs\"");
        let error = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert!(error.starts_with("<config>:7: timeout:"), "{error}");
    }
}
