//! Server settings: safe defaults, overridable from a TOML file, the
//! environment and code.
//!
//! Precedence, lowest to highest:
//!
//! 1. the defaults below;
//! 2. a TOML file, named by [`ServerConfig::config_file`] or the
//!    `SINEW_CONFIG` environment variable, with the keys below;
//! 3. environment variables: `SINEW_` and the key in capitals, such as
//!    `SINEW_MAX_CONCURRENT_STREAMS=100`;
//! 4. values set in code on [`ServerConfig`].
//!
//! So an operator can tune what the code leaves open, and what the code
//! pins stays pinned. Durations are written `"250ms"`, `"5s"`, `"1m 30s"`;
//! sizes are bytes. A duration of zero turns a keepalive off. Every value is
//! checked at start: an invalid one fails [`Server::run`](super::Server::run)
//! with an error that names the key and where it came from.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use sinew_core::compression::Encodings;
use sinew_core::tls::{ClientAuth, ServerTls, ServerTlsConfig};

use crate::auth::Undeclared;

/// The environment variable naming a TOML settings file.
pub const CONFIG_FILE_ENV: &str = "SINEW_CONFIG";

/// The prefix of every settings environment variable.
pub const ENV_PREFIX: &str = "SINEW_";

/// Tables of the settings file that other sinew crates read, and the
/// scaffold leaves alone: `[events]` (sinew-events).
pub(crate) const SECTIONS: &[&str] = &["events"];

/// A setting could not be used. Names the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value does not parse or is out of range.
    #[error("invalid {key} (from {origin}): {value:?}: {reason}")]
    Invalid {
        /// The key, as written where it came from (`SINEW_ADDR`, `addr`).
        key: String,
        /// Where the value came from: `environment`, `code`, or a file path.
        origin: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TOML file has a key that is not a setting.
    #[error("unknown key {key:?} in {origin}; the keys are: {known}", known = KEYS.join(", "))]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The file it is in.
        origin: String,
    },
    /// The TOML file could not be read or parsed.
    #[error("cannot use settings file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// The key at fault, where there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::UnknownKey { key, .. } => Some(key),
            Self::File { .. } => None,
        }
    }
}

/// A value type a setting can have, parsed from text.
trait Value: Sized {
    fn parse(text: &str) -> Result<Self, String>;
}

impl Value for SocketAddr {
    fn parse(text: &str) -> Result<Self, String> {
        SocketAddr::from_str(text.trim())
            .map_err(|e| format!("{e}; expected an address like 0.0.0.0:50051"))
    }
}

impl Value for usize {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|e| format!("{e}; expected a whole number"))
    }
}

impl Value for u32 {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|e| format!("{e}; expected a whole number"))
    }
}

impl Value for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.trim().to_owned())
    }
}

impl Value for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".to_owned()),
        }
    }
}

impl Value for Encodings {
    fn parse(text: &str) -> Result<Self, String> {
        Encodings::parse(text).map_err(|e| e.to_string())
    }
}

impl Value for Option<PathBuf> {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    }
}

impl Value for Undeclared {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

impl Value for ClientAuth {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

impl Value for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("{e}; expected a duration like \"250ms\" or \"5s\""))
    }
}

/// The lame-duck delay when an orchestrator is detected and none is
/// configured: time for its load balancers to see `NOT_SERVING` (and,
/// under Kubernetes, for the endpoint removal to reach every node).
pub const ORCHESTRATED_LAME_DUCK: Duration = Duration::from_secs(5);

/// The orchestrators sinew recognises, each by an environment variable it
/// sets in every workload: Kubernetes (`KUBERNETES_SERVICE_HOST`), Nomad
/// (`NOMAD_ALLOC_ID`), Amazon ECS (`ECS_CONTAINER_METADATA_URI_V4`).
const ORCHESTRATORS: &[(&str, &str)] = &[
    ("KUBERNETES_SERVICE_HOST", "Kubernetes"),
    ("NOMAD_ALLOC_ID", "Nomad"),
    ("ECS_CONTAINER_METADATA_URI_V4", "Amazon ECS"),
];

/// The orchestrator this process runs under, as the environment read
/// through `env` shows it: its name and the variable that revealed it.
/// `None` on a developer's machine (or under an orchestrator sinew does
/// not know: configure `lame_duck` there).
pub fn detect_orchestrator(
    env: impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, &'static str)> {
    ORCHESTRATORS
        .iter()
        .find(|(variable, _)| env(variable).is_some_and(|value| !value.is_empty()))
        .map(|&(variable, name)| (name, variable))
}

/// Where the lame-duck delay came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LameDuckOrigin {
    /// No orchestrator, nothing configured: none.
    Default,
    /// This orchestrator (its name, the variable) was detected.
    Orchestrator(&'static str, &'static str),
    /// Set in a file, the environment or code.
    Configured,
}

/// Declares every setting once: its type, default and doc. From that list
/// come [`Settings`], the setters of [`ServerConfig`], and parsing by key.
macro_rules! settings {
    ($( $(#[doc = $doc:expr])+ $field:ident : $ty:ty = $default:expr; )+) => {
        /// The settings a server runs with, once every source is applied.
        /// See [`ServerConfig`] for the sources and their order.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
            /// Why `lame_duck` has its value (logged at the drain).
            lame_duck_origin: LameDuckOrigin,
        }

        impl Default for Settings {
            fn default() -> Self {
                Self {
                    $( $field: $default, )+
                    lame_duck_origin: LameDuckOrigin::Default,
                }
            }
        }

        /// Settings chosen in code. They take precedence over the
        /// environment and the settings file; whatever is left unset comes
        /// from those, or from the defaults.
        ///
        /// Precedence, lowest to highest: the defaults; a TOML file named
        /// by [`ServerConfig::config_file`] or `SINEW_CONFIG`, with the
        /// keys in [`KEYS`]; environment variables `SINEW_<KEY>`; values
        /// set here. Durations read `"250ms"`, `"5s"`; sizes are bytes; a
        /// zero duration turns a keepalive off. Every value is checked at
        /// start, and an invalid one fails the start naming the key.
        #[derive(Debug, Clone, Default)]
        pub struct ServerConfig {
            config_file: Option<PathBuf>,
            $( $field: Option<$ty>, )+
        }

        impl ServerConfig {
            $(
                $(#[doc = $doc])+
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = Some(value);
                    self
                }
            )+
        }

        /// Every settings key, as written in a TOML file.
        pub const KEYS: &[&str] = &[$( stringify!($field) ),+];

        impl Settings {
            /// Sets `key` from text; `Err` says why the text is wrong.
            fn set(&mut self, key: &str, text: &str) -> Result<(), String> {
                if key == "lame_duck" {
                    self.lame_duck_origin = LameDuckOrigin::Configured;
                }
                match key {
                    $( stringify!($field) => self.$field = Value::parse(text)?, )+
                    _ => return Err(format!("unknown key {key:?}")),
                }
                Ok(())
            }

            fn apply_code(&mut self, code: &ServerConfig) {
                $( if let Some(value) = &code.$field { self.$field = value.clone(); } )+
                if code.lame_duck.is_some() {
                    self.lame_duck_origin = LameDuckOrigin::Configured;
                }
            }
        }
    };
}

settings! {
    /// Address to listen on. Default `127.0.0.1:50051`: reachable from the
    /// machine only until the deployment says otherwise (`0.0.0.0:50051`
    /// in a container).
    addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 50051));
    /// Largest request message accepted, in bytes (decompressed, for a
    /// compressed one); larger ones fail with `RESOURCE_EXHAUSTED`.
    /// Default 4 MiB.
    max_receive_message_size: usize = 4 * 1024 * 1024;
    /// Largest response message sent, in bytes (decompressed, for a
    /// response the server compresses); a handler returning a larger one
    /// fails the call with `RESOURCE_EXHAUSTED`. Default 4 MiB (tonic
    /// sends any size).
    max_send_message_size: usize = 4 * 1024 * 1024;
    /// Bytes of request data the server holds, over all connections,
    /// while they form whole messages (each call's partial message);
    /// a request that would take it past this fails with
    /// `RESOURCE_EXHAUSTED`. At least `max_receive_message_size`. Default
    /// 256 MiB.
    max_request_buffer: usize = 256 * 1024 * 1024;
    /// The same, for one connection's calls. At least
    /// `max_receive_message_size`. Default 16 MiB.
    max_request_buffer_per_connection: usize = 16 * 1024 * 1024;
    /// HTTP/2 streams (calls) one connection may have open. Default 200
    /// (tonic sets no limit).
    max_concurrent_streams: u32 = 200;
    /// Connections open at once; past it, new ones wait in the listen
    /// backlog until one closes. Default 10,000 (tonic sets no limit).
    max_connections: usize = 10_000;
    /// Streams the server may reset for protocol errors on one connection
    /// before it closes the connection, a guard against reset floods.
    /// Default 1024 (tonic sets no limit).
    max_local_error_reset_streams: usize = 1024;
    /// Streams reset by the client that may wait to be accepted, a guard
    /// against rapid reset (CVE-2023-44487). Default 20.
    max_pending_accept_reset_streams: usize = 20;
    /// Largest header list accepted, in bytes. Default 16 KiB.
    max_header_list_size: u32 = 16 * 1024;
    /// Interval of HTTP/2 pings on a connection; zero turns them off.
    /// Default 60s.
    http2_keepalive_interval: Duration = Duration::from_secs(60);
    /// How long to wait for a ping's answer before closing the connection.
    /// Default 20s.
    http2_keepalive_timeout: Duration = Duration::from_secs(20);
    /// TCP keepalive idle time; zero turns it off. Default 60s.
    tcp_keepalive: Duration = Duration::from_secs(60);
    /// How long a new connection may take to send its side of the HTTP/2
    /// handshake (the preface and its SETTINGS frame); one that has not
    /// sent it all by then is closed, so that connections that never
    /// speak, or stop after the preface, cannot hold sockets open.
    /// Default 10s.
    handshake_timeout: Duration = Duration::from_secs(10);
    /// How long a connection may have no call open before the server sends
    /// it `GOAWAY` and closes it, so that idle connections (which answer
    /// keepalive pings for ever) cannot hold the slots `max_connections`
    /// counts; a client reconnects at its next call. Zero turns it off.
    /// Default 5m (as grpc-go's `MaxConnectionIdle`, which is off by
    /// default).
    max_connection_idle: Duration = Duration::from_secs(300);
    /// How long a connection may live before the server sends it `GOAWAY`:
    /// its calls in flight finish, new ones go to a new connection, so
    /// that long-lived clients spread over servers added since. Each
    /// connection's age is drawn within 10% of it, so that connections
    /// made together do not all go at once. Zero turns it off. Default
    /// off.
    max_connection_age: Duration = Duration::ZERO;
    /// After `max_connection_age`, how long the calls still in flight may
    /// take before the connection is closed. Default 30s.
    max_connection_age_grace: Duration = Duration::from_secs(30);
    /// Ceiling on any call's deadline, whatever the caller's: a handler
    /// still answering, or a response still streaming, beyond it ends the
    /// call with `DEADLINE_EXCEEDED` (health's `Watch`, meant to last, is
    /// bounded by its caller's deadline alone). Default 30s.
    request_timeout: Duration = Duration::from_secs(30);
    /// On shutdown, how long the server keeps serving after it reports
    /// `NOT_SERVING`, so load balancers see it go. Default: 5s when an
    /// orchestrator is detected (see [`detect_orchestrator`]: a load
    /// balancer may still be sending), none otherwise (on a developer's
    /// machine the delay only keeps the old process on its port).
    lame_duck: Duration = Duration::ZERO;
    /// On shutdown, how long calls in flight may take to finish once the
    /// server stops accepting; after it, they are abandoned. Default 20s
    /// (with the lame-duck delay, inside Kubernetes' default 30s).
    grace_period: Duration = Duration::from_secs(20);
    /// How often readiness probes run. Default 5s.
    probe_interval: Duration = Duration::from_secs(5);
    /// How long one readiness probe may take before it counts as failed.
    /// Default 2s.
    probe_timeout: Duration = Duration::from_secs(2);
    /// Encodings to compress responses with, when the caller accepts them
    /// (its `grpc-accept-encoding`): `"gzip"`, `"zstd"`, `"gzip,zstd"`
    /// or `"none"`. Requests compressed with gzip or zstd are accepted
    /// whatever this says. Default none: compressing costs CPU on every
    /// message, and pays only for large messages over slow links.
    send_compressed: Encodings = Encodings::NONE;
    /// Whether to serve gRPC reflection (v1 and v1alpha). Default true.
    reflection: bool = true;
    /// The server's certificate chain, PEM (its own certificate first):
    /// with `tls_key`, the server speaks TLS only (ALPN `h2`, TLS 1.2 and
    /// 1.3). Default none: plain text.
    tls_cert: Option<PathBuf> = None;
    /// The private key of `tls_cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    tls_key: Option<PathBuf> = None;
    /// Whether clients must present certificates (mTLS): `off`,
    /// `optional` (verified when presented) or `required`. Default `off`.
    tls_client_auth: ClientAuth = ClientAuth::Off;
    /// The CA bundle (PEM) client certificates must chain to; needed by
    /// `tls_client_auth` `optional` and `required`.
    tls_client_ca: Option<PathBuf> = None;
    /// How often the TLS files are read again: when they changed, new
    /// connections get the new certificate (open ones keep theirs). A
    /// `SIGHUP` reloads them at once too. Zero: on `SIGHUP` only. Default
    /// 10s.
    tls_reload_interval: Duration = Duration::from_secs(10);
    /// With an authenticator, what a method whose contract declares no
    /// access rule gets: `deny` (every caller is refused,
    /// `PERMISSION_DENIED`) or `allow` (any authenticated caller). Default
    /// `deny`: a method added without a thought for access is closed.
    auth_undeclared: Undeclared = Undeclared::Deny;
    /// With an authenticator, whether health checks need no credentials.
    /// Default true: probes (the kubelet's, a load balancer's) carry none.
    health_public: bool = true;
    /// With an authenticator, whether reflection needs no credentials.
    /// Default false: it lists every method the server hosts.
    reflection_public: bool = false;
    /// Faults to inject into incoming calls, to rehearse failure, in the
    /// form of [`FaultConfig::parse`](sinew_core::fault::FaultConfig::parse),
    /// such as `"/echo.v1.Echo/ error=UNAVAILABLE p=0.2; seed=7"`. Default
    /// empty: none.
    faults: String = String::new();
}

// === impl ServerConfig ===

impl ServerConfig {
    /// Empty: every setting comes from the file, the environment or the
    /// defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves TLS with this certificate chain and key (PEM files): sets
    /// `tls_cert` and `tls_key`.
    pub fn tls(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert(Some(cert.into())).tls_key(Some(key.into()))
    }

    /// Asks clients for certificates chained to `ca` (mTLS): sets
    /// `tls_client_auth` and `tls_client_ca`.
    pub fn mtls(self, mode: ClientAuth, ca: impl Into<PathBuf>) -> Self {
        self.tls_client_auth(mode).tls_client_ca(Some(ca.into()))
    }

    /// Reads this TOML file, instead of the one `SINEW_CONFIG` names.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }
}

// === impl Settings ===

impl Settings {
    /// The settings from every source, with this process's environment.
    pub fn load(code: &ServerConfig) -> Result<Self, ConfigError> {
        Self::load_with_env(code, |key| std::env::var(key).ok())
    }

    /// The settings from every source, reading the environment through
    /// `env` (tests pass a map; nothing touches the process environment).
    pub fn load_with_env(
        code: &ServerConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some((name, variable)) = detect_orchestrator(&env) {
            settings.lame_duck = ORCHESTRATED_LAME_DUCK;
            settings.lame_duck_origin = LameDuckOrigin::Orchestrator(name, variable);
        }

        let file = code
            .config_file
            .clone()
            .or_else(|| env(CONFIG_FILE_ENV).map(PathBuf::from));
        if let Some(path) = file {
            settings.apply_file(&path)?;
        }

        for key in KEYS {
            let name = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
            if let Some(text) = env(&name) {
                settings
                    .set(key, &text)
                    .map_err(|reason| invalid(&name, "environment", &text, reason))?;
            }
        }

        settings.apply_code(code);
        settings.validate()?;
        Ok(settings)
    }

    fn apply_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: origin.clone(),
            reason: e.to_string(),
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: origin.clone(),
                reason: e.to_string(),
            })?;
        for (key, value) in &table {
            if value.is_table() && SECTIONS.contains(&key.as_str()) {
                // Another sinew crate's settings, in the same file.
                continue;
            }
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey {
                    key: key.clone(),
                    origin,
                });
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(invalid(
                        key,
                        &origin,
                        other.type_str(),
                        "expected a string, a whole number or a boolean".to_owned(),
                    ));
                }
            };
            self.set(key, &text)
                .map_err(|reason| invalid(key, &origin, &text, reason))?;
        }
        Ok(())
    }

    /// Checks what parsing cannot: zero limits that would stop all traffic.
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "max_receive_message_size",
                self.max_receive_message_size == 0,
            ),
            ("max_send_message_size", self.max_send_message_size == 0),
            ("max_concurrent_streams", self.max_concurrent_streams == 0),
            ("max_connections", self.max_connections == 0),
            ("max_header_list_size", self.max_header_list_size == 0),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("request_timeout", self.request_timeout.is_zero()),
            ("probe_interval", self.probe_interval.is_zero()),
            ("probe_timeout", self.probe_timeout.is_zero()),
        ];
        if let Some((key, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(invalid(
                key,
                "settings",
                "0",
                "must be above zero".to_owned(),
            ));
        }
        // A budget smaller than one message would refuse every large one.
        for (key, budget) in [
            ("max_request_buffer", self.max_request_buffer),
            (
                "max_request_buffer_per_connection",
                self.max_request_buffer_per_connection,
            ),
        ] {
            if budget < self.max_receive_message_size.saturating_add(5) {
                return Err(invalid(
                    key,
                    "settings",
                    &budget.to_string(),
                    format!(
                        "must hold at least one whole message: max_receive_message_size ({}) \
                         and its 5-byte header",
                        self.max_receive_message_size
                    ),
                ));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls_key",
                    "settings",
                    "",
                    "tls_cert needs its key".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls_cert",
                    "settings",
                    "",
                    "tls_key needs its certificate".to_owned(),
                ));
            }
            (_, _) if self.tls_client_auth == ClientAuth::Off && self.tls_client_ca.is_some() => {
                // A CA with client certificates off would read as mTLS and
                // let every client in.
                return Err(invalid(
                    "tls_client_ca",
                    "settings",
                    &key_path(&self.tls_client_ca),
                    "client certificates are off: set tls_client_auth to optional or required"
                        .to_owned(),
                ));
            }
            (None, None) if self.tls_client_auth != ClientAuth::Off => {
                return Err(invalid(
                    "tls_client_auth",
                    "settings",
                    &format!("{:?}", self.tls_client_auth).to_lowercase(),
                    "client certificates need TLS: set tls_cert and tls_key".to_owned(),
                ));
            }
            _ => {}
        }
        sinew_core::fault::FaultConfig::parse(&self.faults)
            .map(drop)
            .map_err(|e| invalid("faults", "settings", &self.faults, e.to_string()))
    }

    /// What the drain does before it stops accepting, and why, as the
    /// drain logs it: `lame duck 5s: Kubernetes detected
    /// (KUBERNETES_SERVICE_HOST)`, `lame duck 10s: configured`, or `no
    /// lame duck: no orchestrator detected`.
    pub fn lame_duck_reason(&self) -> String {
        let delay = humantime::format_duration(self.lame_duck);
        match (self.lame_duck.is_zero(), self.lame_duck_origin) {
            (true, LameDuckOrigin::Configured) => "no lame duck: configured".to_owned(),
            (true, _) => "no lame duck: no orchestrator detected".to_owned(),
            (false, LameDuckOrigin::Orchestrator(name, variable)) => {
                format!("lame duck {delay}: {name} detected ({variable})")
            }
            (false, _) => format!("lame duck {delay}: configured"),
        }
    }

    /// The server's TLS, when `tls_cert` and `tls_key` are set: its files
    /// read and checked (a missing or invalid file, or a key that is not
    /// the certificate's, fails naming its key).
    pub fn tls(&self) -> Result<Option<ServerTls>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let config = ServerTlsConfig::new(cert, key)
            .client_auth(self.tls_client_auth, self.tls_client_ca.clone());
        ServerTls::load(config).map(Some).map_err(|error| {
            let key = error.key().unwrap_or("tls_cert");
            ConfigError::Invalid {
                key: key.to_owned(),
                origin: "settings".to_owned(),
                value: match key {
                    "tls_key" => key_path(&self.tls_key),
                    "tls_client_ca" => key_path(&self.tls_client_ca),
                    _ => key_path(&self.tls_cert),
                },
                reason: error.to_string(),
            }
        })
    }

    /// The faults to inject, if any (checked when the settings loaded).
    pub(crate) fn fault_config(&self) -> Option<sinew_core::fault::FaultConfig> {
        sinew_core::fault::FaultConfig::parse(&self.faults)
            .ok()
            .filter(|config| !config.is_empty())
    }
}

fn key_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default()
}

fn invalid(key: &str, origin: &str, value: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        origin: origin.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::load_with_env(&ServerConfig::new(), env(&[])).unwrap();
        assert_eq!(s.max_receive_message_size, 4 * 1024 * 1024);
        assert_eq!(s.max_send_message_size, 4 * 1024 * 1024);
        assert_eq!(s.max_concurrent_streams, 200);
        assert_eq!(s.max_local_error_reset_streams, 1024);
        assert_eq!(s.handshake_timeout, Duration::from_secs(10));
        assert_eq!(s.max_connections, 10_000);
        assert_eq!(s.max_request_buffer, 256 * 1024 * 1024);
        assert_eq!(s.max_request_buffer_per_connection, 16 * 1024 * 1024);
        assert_eq!(s.max_connection_idle, Duration::from_secs(300));
        assert_eq!(s.max_connection_age, Duration::ZERO);
        assert_eq!(s.max_connection_age_grace, Duration::from_secs(30));
        assert!(s.reflection);
        assert_eq!(s.send_compressed, Encodings::NONE);
    }

    #[test]
    fn send_compressed_reads_a_list_and_names_its_key_when_wrong() {
        let s = Settings::load_with_env(
            &ServerConfig::new(),
            env(&[("SINEW_SEND_COMPRESSED", "zstd, gzip")]),
        )
        .unwrap();
        assert_eq!(s.send_compressed, Encodings::ALL);
        let err = Settings::load_with_env(
            &ServerConfig::new(),
            env(&[("SINEW_SEND_COMPRESSED", "brotli")]),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("SINEW_SEND_COMPRESSED"));
        assert!(err.to_string().contains("brotli"), "{err}");
    }

    #[test]
    fn the_lame_duck_is_kept_only_under_an_orchestrator_or_when_configured() {
        let load = |code: ServerConfig, pairs: &[(&str, &str)]| {
            let s = Settings::load_with_env(&code, env(pairs)).unwrap();
            (s.lame_duck, s.lame_duck_reason())
        };
        // A developer's machine: none, and the log says why.
        assert_eq!(
            load(ServerConfig::new(), &[]),
            (
                Duration::ZERO,
                "no lame duck: no orchestrator detected".to_owned()
            )
        );
        // Under Kubernetes (or Nomad, or ECS): 5s.
        let k8s = [("KUBERNETES_SERVICE_HOST", "10.96.0.1")];
        assert_eq!(
            load(ServerConfig::new(), &k8s),
            (
                Duration::from_secs(5),
                "lame duck 5s: Kubernetes detected (KUBERNETES_SERVICE_HOST)".to_owned()
            )
        );
        assert_eq!(
            load(ServerConfig::new(), &[("NOMAD_ALLOC_ID", "a1")]).0,
            Duration::from_secs(5)
        );
        // An empty variable reveals nothing.
        assert_eq!(
            load(ServerConfig::new(), &[("KUBERNETES_SERVICE_HOST", "")]).0,
            Duration::ZERO
        );
        // Configured anywhere, the configured value wins, either way.
        assert_eq!(
            load(ServerConfig::new(), &[("SINEW_LAME_DUCK", "10s")]),
            (
                Duration::from_secs(10),
                "lame duck 10s: configured".to_owned()
            )
        );
        assert_eq!(
            load(ServerConfig::new().lame_duck(Duration::ZERO), &k8s),
            (Duration::ZERO, "no lame duck: configured".to_owned())
        );
        assert_eq!(
            load(
                ServerConfig::new(),
                &[
                    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                    ("SINEW_LAME_DUCK", "0s")
                ]
            )
            .0,
            Duration::ZERO
        );
    }

    #[test]
    fn a_request_budget_must_hold_one_whole_message() {
        let err = Settings::load_with_env(
            &ServerConfig::new(),
            env(&[("SINEW_MAX_RECEIVE_MESSAGE_SIZE", "33554432")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("max_request_buffer_per_connection"),
            "{err}"
        );
        let err = Settings::load_with_env(&ServerConfig::new().max_request_buffer(1024), env(&[]))
            .unwrap_err();
        assert_eq!(err.key(), Some("max_request_buffer"));
        // Raised together, they load.
        Settings::load_with_env(
            &ServerConfig::new()
                .max_receive_message_size(32 << 20)
                .max_request_buffer_per_connection(64 << 20),
            env(&[]),
        )
        .unwrap();
    }

    #[test]
    fn an_invalid_environment_value_names_its_variable() {
        let err = Settings::load_with_env(
            &ServerConfig::new(),
            env(&[("SINEW_MAX_CONCURRENT_STREAMS", "lots")]),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("SINEW_MAX_CONCURRENT_STREAMS"));
        assert!(
            err.to_string().contains("SINEW_MAX_CONCURRENT_STREAMS"),
            "{err}"
        );
        assert!(err.to_string().contains("lots"), "{err}");
    }

    #[test]
    fn a_zero_limit_set_in_code_is_rejected() {
        let err =
            Settings::load_with_env(&ServerConfig::new().max_receive_message_size(0), env(&[]))
                .unwrap_err();
        assert_eq!(err.key(), Some("max_receive_message_size"));
        let err = Settings::load_with_env(
            &ServerConfig::new(),
            env(&[("SINEW_HANDSHAKE_TIMEOUT", "0s")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("handshake_timeout"), "{err}");
    }
}
