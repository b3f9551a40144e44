//! Telemetry settings: the standard OpenTelemetry environment variables,
//! overridable in code.
//!
//! [`TelemetryConfig::from_env`] reads the variables in [`VARIABLES`]; the
//! setters then override what they set, so code can pin a value whatever
//! the environment says. The one exception is the service name: per the
//! OpenTelemetry specification, `OTEL_SERVICE_NAME` (then a `service.name`
//! in `OTEL_RESOURCE_ATTRIBUTES`) wins over the name given in code, so an
//! operator can rename a deployment without a rebuild.
//!
//! Every value is checked where it is read, and an invalid one fails with a
//! [`TelemetryError::Invalid`] naming the variable; values set in code are
//! checked by [`init_with`](super::init_with), naming the setter. An empty
//! variable counts as unset, as the specification asks.
//!
//! The TLS files (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`
//! and `_CLIENT_KEY`, and their `_TRACES_` and `_METRICS_` forms) are the
//! exception in time: their paths are read here, the files themselves by
//! [`init_with`](super::init_with), for a signal whose endpoint is
//! `https://` (an `http://` one reads none). A file that is missing, does
//! not parse, or is a key other than its certificate's fails there, naming
//! the variable or the setter.
//!
//! `OTEL_SDK_DISABLED` is the exception both ways. It is never invalid: the
//! specification makes any value but `true` (in any case) mean false, to be
//! warned about rather than refused. And it wins over code, as the service
//! name does: it is the operator's switch for turning telemetry off in a
//! hurry, and a `.disabled(flag)` in code must not quietly undo it. While it
//! is on, the other variables go unused, so the first invalid one (say an
//! endpoint left over from before the switch) is logged rather than failing
//! the start; only `RUST_LOG`, which the console still uses, must be valid.

use std::{fmt, path::PathBuf, time::Duration};

use opentelemetry::trace::SpanContext;
use opentelemetry_sdk::trace::SpanLimits;
use sinew_core::tls::{ClientTls, ClientTlsConfig, TlsError};

use super::TelemetryError;

const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
const METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
const METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
const TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";
const METRICS_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION";
const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
const TRACES_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";
const METRICS_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE";
const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
const TRACES_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE";
const METRICS_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE";
const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
const TRACES_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY";
const METRICS_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
const BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
const BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
const ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_ATTRIBUTE_COUNT_LIMIT";
const SPAN_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT";
const SPAN_EVENT_COUNT_LIMIT: &str = "OTEL_SPAN_EVENT_COUNT_LIMIT";
const SPAN_LINK_COUNT_LIMIT: &str = "OTEL_SPAN_LINK_COUNT_LIMIT";
const EVENT_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT";
const LINK_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT";
const RUST_LOG: &str = "RUST_LOG";

/// Every environment variable [`TelemetryConfig::from_env`] reads. Traces
/// and metrics read the shared ones the same way: one parse, one check,
/// then each signal's own variable over the shared one.
pub const VARIABLES: &[&str] = &[
    SDK_DISABLED,
    ENDPOINT,
    TRACES_ENDPOINT,
    METRICS_ENDPOINT,
    TIMEOUT,
    TRACES_TIMEOUT,
    METRICS_TIMEOUT,
    PROTOCOL,
    TRACES_PROTOCOL,
    METRICS_PROTOCOL,
    HEADERS,
    TRACES_HEADERS,
    METRICS_HEADERS,
    COMPRESSION,
    TRACES_COMPRESSION,
    METRICS_COMPRESSION,
    CERTIFICATE,
    TRACES_CERTIFICATE,
    METRICS_CERTIFICATE,
    CLIENT_CERTIFICATE,
    TRACES_CLIENT_CERTIFICATE,
    METRICS_CLIENT_CERTIFICATE,
    CLIENT_KEY,
    TRACES_CLIENT_KEY,
    METRICS_CLIENT_KEY,
    SERVICE_NAME,
    RESOURCE_ATTRIBUTES,
    SAMPLER,
    SAMPLER_ARG,
    METRIC_EXPORT_INTERVAL,
    BSP_MAX_QUEUE_SIZE,
    BSP_MAX_EXPORT_BATCH_SIZE,
    BSP_SCHEDULE_DELAY,
    ATTRIBUTE_COUNT_LIMIT,
    SPAN_ATTRIBUTE_COUNT_LIMIT,
    SPAN_EVENT_COUNT_LIMIT,
    SPAN_LINK_COUNT_LIMIT,
    EVENT_ATTRIBUTE_COUNT_LIMIT,
    LINK_ATTRIBUTE_COUNT_LIMIT,
    RUST_LOG,
];

/// The specification's default export timeout: 10s.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The specification's default metric export interval: 60s.
const DEFAULT_METRIC_EXPORT_INTERVAL: Duration = Duration::from_secs(60);
/// The specification's default span queue: 2048 spans.
const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// The specification's default export batch: 512 spans.
const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// The specification's default delay between span exports: 5s.
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// Console log directives when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info";

/// How traces are sampled, as named by `OTEL_TRACES_SAMPLER`.
///
/// The parent-based samplers follow the caller's decision (carried in the
/// `traceparent` header) and apply their own rule only to traces that
/// start here; the others decide alone, so a service can drop a trace its
/// caller keeps. A ratio keeps that fraction of traces, chosen by trace
/// id, so every service with the same ratio keeps the same traces.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum TraceSampler {
    /// `always_on`: record every span.
    AlwaysOn,
    /// `always_off`: record none. Trace ids are still made, so logs stay
    /// correlated and callees still see a trace context.
    AlwaysOff,
    /// `traceidratio`: keep this fraction of traces, in `[0, 1]`.
    TraceIdRatio(f64),
    /// `parentbased_always_on`, the default: follow the caller; keep every
    /// trace that starts here.
    #[default]
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: follow the caller; drop every trace that
    /// starts here.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: follow the caller; keep this fraction,
    /// in `[0, 1]`, of the traces that start here.
    ParentBasedTraceIdRatio(f64),
}

/// How an export's body is compressed, as `OTEL_EXPORTER_OTLP_COMPRESSION`
/// and its per-signal variables name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// `none`: sent as it is.
    #[default]
    None,
    /// `gzip`: the gRPC message gzip-compressed (`grpc-encoding: gzip`),
    /// which every OTLP receiver accepts; smaller on the wire for some
    /// CPU on the exporting thread.
    Gzip,
}

/// How exports travel, as `OTEL_EXPORTER_OTLP_PROTOCOL` and its per-signal
/// variables name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// `grpc`: OTLP/gRPC, the collector's port 4317.
    #[default]
    Grpc,
    /// `http/protobuf`: OTLP/HTTP with a protobuf body, the collector's
    /// port 4318; what many hosted backends take. A shared endpoint
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`, [`TelemetryConfig::endpoint`]) is a
    /// base URL that each signal's path (`/v1/traces`, `/v1/metrics`) is
    /// added to; a signal's own endpoint is used as it is.
    HttpProtobuf,
}

/// Export headers: keys lowercased and unique, in order. Their values are
/// often credentials, so `Debug` shows only the keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(pub(crate) Vec<(String, String)>);

/// A file a TLS setting names, and the variable or setter that named it:
/// what an error about the file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFile {
    pub(crate) path: PathBuf,
    pub(crate) source: &'static str,
}

/// The TLS files of one signal's exports, read when its endpoint is
/// `https://`: the CA bundle to trust (the system's roots without one),
/// and the client certificate and its key for mTLS (both or neither).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<TlsFile>,
    pub(crate) client_cert: Option<TlsFile>,
    pub(crate) client_key: Option<TlsFile>,
}

/// Settings for [`init_with`](super::init_with).
///
/// Start from [`from_env`](Self::from_env) (the usual way) or
/// [`new`](Self::new) (defaults only, ignoring the environment), then
/// override in code:
///
/// ```
/// use std::time::Duration;
/// use sinew_telemetry::TelemetryConfig;
///
/// # fn main() -> Result<(), sinew_telemetry::TelemetryError> {
/// let config = TelemetryConfig::from_env("greeter")?
///     .sample_ratio(0.1)
///     .metric_export_interval(Duration::from_secs(15))
///     .resource_attribute("deployment.environment.name", "staging");
/// # drop(config);
/// # Ok(())
/// # }
/// ```
///
/// Without an endpoint (the default) nothing is exported: spans still get
/// ids, so logs carry them and calls propagate them, but they go nowhere.
/// [`disabled`](Self::disabled) goes further and records nothing at all.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Whether telemetry is off, console logs aside: set by
    /// `OTEL_SDK_DISABLED=true` or by code.
    pub(crate) disabled: bool,
    /// Whether `OTEL_SDK_DISABLED` set `disabled`, which code cannot undo.
    pub(crate) disabled_by_env: bool,
    /// An `OTEL_SDK_DISABLED` that is neither `true` nor `false`, taken as
    /// false; logged once the console is up, as the specification asks.
    pub(crate) unrecognised_disabled: Option<String>,
    /// The first invalid variable met while telemetry was disabled, where
    /// reading stopped; logged once the console is up, so the operator
    /// learns of it before switching telemetry back on makes it fail the
    /// start.
    pub(crate) ignored: Option<String>,
    pub(crate) service_name: String,
    /// Whether the service name came from the environment, which code
    /// cannot override.
    service_name_pinned: bool,
    /// In order; a later pair wins over an earlier one with the same key.
    pub(crate) resource: Vec<(String, String)>,
    pub(crate) traces_endpoint: Option<String>,
    pub(crate) metrics_endpoint: Option<String>,
    /// Whether the endpoint is the shared one, a base URL under
    /// `http/protobuf`.
    pub(crate) traces_endpoint_shared: bool,
    pub(crate) metrics_endpoint_shared: bool,
    pub(crate) traces_protocol: Protocol,
    pub(crate) metrics_protocol: Protocol,
    pub(crate) traces_timeout: Duration,
    pub(crate) metrics_timeout: Duration,
    /// Sent with every trace export.
    pub(crate) traces_headers: Headers,
    /// Sent with every metric export.
    pub(crate) metrics_headers: Headers,
    pub(crate) traces_compression: Compression,
    pub(crate) metrics_compression: Compression,
    /// The TLS of an `https://` traces endpoint.
    pub(crate) traces_tls: TlsFiles,
    /// The TLS of an `https://` metrics endpoint.
    pub(crate) metrics_tls: TlsFiles,
    pub(crate) sampler: TraceSampler,
    pub(crate) metric_export_interval: Duration,
    pub(crate) max_queue_size: usize,
    pub(crate) max_export_batch_size: usize,
    pub(crate) schedule_delay: Duration,
    /// What one span may hold; sinew's call spans and the SDK's alike.
    pub(crate) span_limits: SpanLimits,
    pub(crate) log_filter: String,
}

// === impl TraceSampler ===

impl TraceSampler {
    /// Reads `OTEL_TRACES_SAMPLER` and, for the ratio samplers,
    /// `OTEL_TRACES_SAMPLER_ARG` (default 1.0). Other samplers ignore the
    /// argument, as the specification asks.
    fn parse(name: &str, arg: Option<&str>) -> Result<Self, TelemetryError> {
        let ratio = || match arg {
            None => Ok(1.0),
            Some(text) => parse_ratio(SAMPLER_ARG, text),
        };
        Ok(match name.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio(ratio()?),
            _ => {
                return Err(TelemetryError::invalid(
                    SAMPLER,
                    name,
                    "expected always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ));
            }
        })
    }

    fn ratio(self) -> Option<f64> {
        match self {
            Self::TraceIdRatio(ratio) | Self::ParentBasedTraceIdRatio(ratio) => Some(ratio),
            _ => None,
        }
    }

    /// The SDK sampler.
    pub(crate) fn to_sdk(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler;
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(ratio) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

impl TraceSampler {
    /// Whether a span whose parent is `parent` is sure to be left out, as
    /// far as can be told before its trace id is drawn: always with
    /// `always_off`; with a parent-based sampler, when the parent is
    /// unsampled (or, for `parentbased_always_off`, absent). `false` means
    /// it may be recorded, and the SDK's sampler decides.
    ///
    /// The caller can then skip building what only a recorded span needs.
    pub(crate) fn surely_drops_child_of(self, parent: &SpanContext) -> bool {
        match self {
            Self::AlwaysOff => true,
            Self::AlwaysOn | Self::TraceIdRatio(_) => false,
            Self::ParentBasedAlwaysOn | Self::ParentBasedTraceIdRatio(_) => {
                parent.is_valid() && !parent.is_sampled()
            }
            Self::ParentBasedAlwaysOff => !parent.is_valid() || !parent.is_sampled(),
        }
    }
}

impl fmt::Display for TraceSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlwaysOn => f.write_str("always_on"),
            Self::AlwaysOff => f.write_str("always_off"),
            Self::TraceIdRatio(ratio) => write!(f, "traceidratio({ratio})"),
            Self::ParentBasedAlwaysOn => f.write_str("parentbased_always_on"),
            Self::ParentBasedAlwaysOff => f.write_str("parentbased_always_off"),
            Self::ParentBasedTraceIdRatio(ratio) => write!(f, "parentbased_traceidratio({ratio})"),
        }
    }
}

// === impl Headers ===

impl Headers {
    /// Sets `key` (lowercased) to `value`, in place if it is there.
    fn set(&mut self, key: &str, value: String) {
        let key = key.to_ascii_lowercase();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(header) => header.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, _)| (key, "<redacted>")))
            .finish()
    }
}

// === impl TelemetryConfig ===

impl TelemetryConfig {
    /// The defaults, without reading the environment: service
    /// `service_name`, enabled, no export, `parentbased_always_on` sampling,
    /// metrics every 60s, a queue of 2048 spans exported in batches of 512
    /// every 5s, a 10s export timeout, no export headers, console logs at
    /// `info`.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            disabled: false,
            disabled_by_env: false,
            unrecognised_disabled: None,
            ignored: None,
            service_name: service_name.into(),
            service_name_pinned: false,
            resource: Vec::new(),
            traces_endpoint: None,
            metrics_endpoint: None,
            traces_endpoint_shared: false,
            metrics_endpoint_shared: false,
            traces_protocol: Protocol::Grpc,
            metrics_protocol: Protocol::Grpc,
            traces_timeout: DEFAULT_TIMEOUT,
            metrics_timeout: DEFAULT_TIMEOUT,
            traces_headers: Headers::default(),
            metrics_headers: Headers::default(),
            traces_compression: Compression::None,
            metrics_compression: Compression::None,
            traces_tls: TlsFiles::default(),
            metrics_tls: TlsFiles::default(),
            sampler: TraceSampler::default(),
            metric_export_interval: DEFAULT_METRIC_EXPORT_INTERVAL,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
            schedule_delay: DEFAULT_SCHEDULE_DELAY,
            span_limits: SpanLimits::default(),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }

    /// The settings from this process's environment; `service_name` is
    /// used unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names
    /// the service.
    pub fn from_env(service_name: impl Into<String>) -> Result<Self, TelemetryError> {
        Self::from_env_with(service_name, |key| std::env::var(key).ok())
    }

    /// The settings from the environment as `env` reports it (tests pass a
    /// map; nothing touches the process environment).
    pub fn from_env_with(
        service_name: impl Into<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let read = |key: &str| env(key).filter(|value| !value.trim().is_empty());
        let mut config = Self::new(service_name);

        if let Some(value) = read(SDK_DISABLED) {
            match parse_bool(&value) {
                Some(disabled) => {
                    config.disabled = disabled;
                    config.disabled_by_env = disabled;
                }
                None => config.unrecognised_disabled = Some(value),
            }
        }

        // The console logs whether or not telemetry is disabled, so its
        // filter must be valid either way.
        if let Some(value) = read(RUST_LOG) {
            check_log_filter(RUST_LOG, &value)?;
            config.log_filter = value;
        }

        // Disabled, nothing uses the other settings: one left invalid must
        // not keep the service from starting when an operator has just
        // switched telemetry off to get it going.
        if let Err(error) = config.read_sdk_settings(read) {
            if !config.disabled {
                return Err(error);
            }
            config.ignored = Some(error.to_string());
        }
        Ok(config)
    }

    /// Reads every variable but `OTEL_SDK_DISABLED` and `RUST_LOG` into
    /// `self`, stopping at the first invalid one.
    fn read_sdk_settings(
        &mut self,
        read: impl Fn(&str) -> Option<String>,
    ) -> Result<(), TelemetryError> {
        let protocol = |key: &'static str| {
            read(key)
                .map(|value| parse_protocol(key, &value))
                .transpose()
        };
        let shared = protocol(PROTOCOL)?;
        self.traces_protocol = protocol(TRACES_PROTOCOL)?.or(shared).unwrap_or_default();
        self.metrics_protocol = protocol(METRICS_PROTOCOL)?.or(shared).unwrap_or_default();

        let endpoint = read(ENDPOINT)
            .map(|value| check_endpoint(ENDPOINT, &value))
            .transpose()?;
        (self.traces_endpoint, self.traces_endpoint_shared) = match read(TRACES_ENDPOINT) {
            Some(value) => (Some(check_endpoint(TRACES_ENDPOINT, &value)?), false),
            None => (endpoint.clone(), endpoint.is_some()),
        };
        (self.metrics_endpoint, self.metrics_endpoint_shared) = match read(METRICS_ENDPOINT) {
            Some(value) => (Some(check_endpoint(METRICS_ENDPOINT, &value)?), false),
            None => (endpoint.clone(), endpoint.is_some()),
        };

        if let Some(value) = read(TIMEOUT) {
            let timeout = parse_millis(TIMEOUT, &value)?;
            self.traces_timeout = timeout;
            self.metrics_timeout = timeout;
        }
        if let Some(value) = read(TRACES_TIMEOUT) {
            self.traces_timeout = parse_millis(TRACES_TIMEOUT, &value)?;
        }
        if let Some(value) = read(METRICS_TIMEOUT) {
            self.metrics_timeout = parse_millis(METRICS_TIMEOUT, &value)?;
        }

        // The per-signal variable replaces the generic one whole, as the
        // specification has every per-signal option override its generic
        // one. All three are checked, whichever is used.
        let headers = |key: &'static str| {
            read(key)
                .map(|value| parse_headers(key, &value))
                .transpose()
        };
        let shared = headers(HEADERS)?;
        let traces = headers(TRACES_HEADERS)?;
        let metrics = headers(METRICS_HEADERS)?;
        self.traces_headers = Headers(traces.or_else(|| shared.clone()).unwrap_or_default());
        self.metrics_headers = Headers(metrics.or(shared).unwrap_or_default());

        // Likewise the compression: the per-signal variable wins.
        let compression = |key: &'static str| {
            read(key)
                .map(|value| parse_compression(key, &value))
                .transpose()
        };
        let shared = compression(COMPRESSION)?;
        let traces = compression(TRACES_COMPRESSION)?;
        let metrics = compression(METRICS_COMPRESSION)?;
        self.traces_compression = traces.or(shared).unwrap_or_default();
        self.metrics_compression = metrics.or(shared).unwrap_or_default();

        // And the TLS files, each on its own: a signal's variable wins over
        // the shared one. Only their paths are read here; the files are
        // read, and checked, when the pipeline is built.
        let file = |key: &'static str| {
            read(key).map(|value| TlsFile {
                path: PathBuf::from(value.trim()),
                source: key,
            })
        };
        let (ca, cert, key) = (
            file(CERTIFICATE),
            file(CLIENT_CERTIFICATE),
            file(CLIENT_KEY),
        );
        self.traces_tls = TlsFiles {
            ca: file(TRACES_CERTIFICATE).or_else(|| ca.clone()),
            client_cert: file(TRACES_CLIENT_CERTIFICATE).or_else(|| cert.clone()),
            client_key: file(TRACES_CLIENT_KEY).or_else(|| key.clone()),
        };
        self.metrics_tls = TlsFiles {
            ca: file(METRICS_CERTIFICATE).or(ca),
            client_cert: file(METRICS_CLIENT_CERTIFICATE).or(cert),
            client_key: file(METRICS_CLIENT_KEY).or(key),
        };

        if let Some(value) = read(RESOURCE_ATTRIBUTES) {
            for (key, value) in parse_resource_attributes(&value)? {
                if key == "service.name" {
                    self.service_name = value;
                    self.service_name_pinned = true;
                } else {
                    self.resource.push((key, value));
                }
            }
        }
        if let Some(value) = read(SERVICE_NAME) {
            self.service_name = value.trim().to_owned();
            self.service_name_pinned = true;
        }

        if let Some(name) = read(SAMPLER) {
            self.sampler = TraceSampler::parse(&name, read(SAMPLER_ARG).as_deref())?;
        }

        if let Some(value) = read(METRIC_EXPORT_INTERVAL) {
            self.metric_export_interval = parse_millis(METRIC_EXPORT_INTERVAL, &value)?;
        }
        if let Some(value) = read(BSP_MAX_QUEUE_SIZE) {
            self.max_queue_size = parse_count(BSP_MAX_QUEUE_SIZE, &value)?;
        }
        if let Some(value) = read(BSP_MAX_EXPORT_BATCH_SIZE) {
            self.max_export_batch_size = parse_count(BSP_MAX_EXPORT_BATCH_SIZE, &value)?;
        }
        if let Some(value) = read(BSP_SCHEDULE_DELAY) {
            self.schedule_delay = parse_millis(BSP_SCHEDULE_DELAY, &value)?;
        }

        // The general attribute limit, then the specific ones over it.
        let limit = |key: &'static str| -> Result<Option<u32>, TelemetryError> {
            read(key).map(|value| parse_limit(key, &value)).transpose()
        };
        if let Some(all) = limit(ATTRIBUTE_COUNT_LIMIT)? {
            self.span_limits.max_attributes_per_span = all;
            self.span_limits.max_attributes_per_event = all;
            self.span_limits.max_attributes_per_link = all;
        }
        let limits = &mut self.span_limits;
        for (key, field) in [
            (
                SPAN_ATTRIBUTE_COUNT_LIMIT,
                &mut limits.max_attributes_per_span,
            ),
            (SPAN_EVENT_COUNT_LIMIT, &mut limits.max_events_per_span),
            (SPAN_LINK_COUNT_LIMIT, &mut limits.max_links_per_span),
            (
                EVENT_ATTRIBUTE_COUNT_LIMIT,
                &mut limits.max_attributes_per_event,
            ),
            (
                LINK_ATTRIBUTE_COUNT_LIMIT,
                &mut limits.max_attributes_per_link,
            ),
        ] {
            if let Some(value) = limit(key)? {
                *field = value;
            }
        }

        Ok(())
    }

    /// Exports traces and metrics to this endpoint, such as
    /// `http://localhost:4317` (under `http/protobuf`, a base URL such as
    /// `http://localhost:4318` that each signal's path is added to),
    /// replacing what the environment says for both signals. An
    /// `https://` endpoint is reached over TLS (see
    /// [`certificate`](Self::certificate)).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        self.traces_endpoint = Some(endpoint.clone());
        self.metrics_endpoint = Some(endpoint);
        self.traces_endpoint_shared = true;
        self.metrics_endpoint_shared = true;
        self
    }

    /// Exports traces to this endpoint, used as it is (under
    /// `http/protobuf`, the full URL, path included).
    pub fn traces_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.traces_endpoint = Some(endpoint.into());
        self.traces_endpoint_shared = false;
        self
    }

    /// Exports metrics to this endpoint, used as it is (under
    /// `http/protobuf`, the full URL, path included).
    pub fn metrics_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.metrics_endpoint = Some(endpoint.into());
        self.metrics_endpoint_shared = false;
        self
    }

    /// Exports traces and metrics over this protocol, replacing what the
    /// `OTEL_EXPORTER_OTLP_*PROTOCOL` variables say. Default: gRPC.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.traces_protocol = protocol;
        self.metrics_protocol = protocol;
        self
    }

    /// Where traces go, and how: the endpoint with the signal's path
    /// added when it is the shared one under `http/protobuf`.
    pub(crate) fn traces_target(&self) -> Option<(String, Protocol)> {
        let endpoint = self.traces_endpoint.as_deref()?;
        let url = signal_url(
            endpoint,
            self.traces_endpoint_shared,
            self.traces_protocol,
            "traces",
        );
        Some((url, self.traces_protocol))
    }

    /// Where metrics go, and how; see [`traces_target`](Self::traces_target).
    pub(crate) fn metrics_target(&self) -> Option<(String, Protocol)> {
        let endpoint = self.metrics_endpoint.as_deref()?;
        let url = signal_url(
            endpoint,
            self.metrics_endpoint_shared,
            self.metrics_protocol,
            "metrics",
        );
        Some((url, self.metrics_protocol))
    }

    /// Turns telemetry off (`true`): [`init_with`](super::init_with) then
    /// installs the console logs and the propagator only, records no spans
    /// or metrics, exports nothing and starts no threads, and the
    /// scaffold's and clients' layers cost one atomic load per call. The
    /// code equivalent of `OTEL_SDK_DISABLED=true`.
    ///
    /// `false` does not turn back on what `OTEL_SDK_DISABLED=true` turned
    /// off: that is the operator's switch, and it wins over code, so
    /// `.disabled(args.no_telemetry)` cannot override it.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = disabled || self.disabled_by_env;
        self
    }

    /// Exports nothing, whatever the environment says.
    pub fn no_export(mut self) -> Self {
        self.traces_endpoint = None;
        self.metrics_endpoint = None;
        self
    }

    /// How long one export may take, retries included, for both signals.
    /// Must be above zero.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.traces_timeout = timeout;
        self.metrics_timeout = timeout;
        self
    }

    /// Sends `key: value` as gRPC metadata with every trace export, such
    /// as a collector's or vendor's credentials, replacing a header of the
    /// same key (keys are case-insensitive, sent lowercased) from
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS`.
    ///
    /// The key must be a valid header name not reserved by gRPC (`te`,
    /// `content-type`, `grpc-*`) nor ending in `-bin`; the value printable
    /// ASCII. [`metrics_header`](Self::metrics_header) is the same for
    /// metrics; [`header`](Self::header) sets both.
    pub fn traces_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.traces_headers.set(&key.into(), value.into());
        self
    }

    /// Sends `key: value` with every metric export, as
    /// [`traces_header`](Self::traces_header) does with traces, replacing
    /// a header of the same key from `OTEL_EXPORTER_OTLP_METRICS_HEADERS`
    /// or `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn metrics_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metrics_headers.set(&key.into(), value.into());
        self
    }

    /// Sends `key: value` with every export, traces and metrics alike.
    pub fn header(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.traces_header(key.clone(), value.clone())
            .metrics_header(key, value)
    }

    /// Compresses every export, traces and metrics alike, replacing what
    /// the `OTEL_EXPORTER_OTLP_*COMPRESSION` variables say. Default: none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.traces_compression = compression;
        self.metrics_compression = compression;
        self
    }

    /// Trusts the certificate authorities of this PEM bundle, instead of
    /// the system's roots, for `https://` endpoints of both signals,
    /// replacing what the `OTEL_EXPORTER_OTLP_*CERTIFICATE` variables say.
    /// The file is read, and checked, by [`init_with`](super::init_with).
    pub fn certificate(mut self, bundle: impl Into<PathBuf>) -> Self {
        let ca = Some(TlsFile {
            path: bundle.into(),
            source: "certificate",
        });
        self.traces_tls.ca = ca.clone();
        self.metrics_tls.ca = ca;
        self
    }

    /// Trusts this PEM bundle for an `https://` traces endpoint, as
    /// [`certificate`](Self::certificate) does for both signals.
    pub fn traces_certificate(mut self, bundle: impl Into<PathBuf>) -> Self {
        self.traces_tls.ca = Some(TlsFile {
            path: bundle.into(),
            source: "traces_certificate",
        });
        self
    }

    /// Trusts this PEM bundle for an `https://` metrics endpoint, as
    /// [`certificate`](Self::certificate) does for both signals.
    pub fn metrics_certificate(mut self, bundle: impl Into<PathBuf>) -> Self {
        self.metrics_tls.ca = Some(TlsFile {
            path: bundle.into(),
            source: "metrics_certificate",
        });
        self
    }

    /// Presents this certificate chain and its private key (PEM files) to
    /// `https://` endpoints of both signals that ask for one (mTLS),
    /// replacing what the `OTEL_EXPORTER_OTLP_*CLIENT_CERTIFICATE` and
    /// `*CLIENT_KEY` variables say. The files are read, and checked (the
    /// key must be the certificate's), by [`init_with`](super::init_with).
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        let identity = identity("client_certificate", cert.into(), key.into());
        (self.traces_tls.client_cert, self.traces_tls.client_key) = identity.clone();
        (self.metrics_tls.client_cert, self.metrics_tls.client_key) = identity;
        self
    }

    /// Presents this certificate and key to an `https://` traces endpoint,
    /// as [`client_certificate`](Self::client_certificate) does for both
    /// signals.
    pub fn traces_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        (self.traces_tls.client_cert, self.traces_tls.client_key) =
            identity("traces_client_certificate", cert.into(), key.into());
        self
    }

    /// Presents this certificate and key to an `https://` metrics
    /// endpoint, as [`client_certificate`](Self::client_certificate) does
    /// for both signals.
    pub fn metrics_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        (self.metrics_tls.client_cert, self.metrics_tls.client_key) =
            identity("metrics_client_certificate", cert.into(), key.into());
        self
    }

    /// How traces are sampled.
    pub fn sampler(mut self, sampler: TraceSampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// Keeps this fraction, in `[0, 1]`, of the traces that start here, and
    /// follows the caller's decision for the others: shorthand for
    /// [`TraceSampler::ParentBasedTraceIdRatio`].
    pub fn sample_ratio(self, ratio: f64) -> Self {
        self.sampler(TraceSampler::ParentBasedTraceIdRatio(ratio))
    }

    /// How often metrics are exported. Must be above zero.
    pub fn metric_export_interval(mut self, interval: Duration) -> Self {
        self.metric_export_interval = interval;
        self
    }

    /// Adds an attribute to the resource that describes this process on
    /// every span and metric, replacing one of the same key.
    ///
    /// `service.name` is the service name, which the environment wins
    /// over: this sets it only if `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES` did not.
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        if key == "service.name" {
            if !self.service_name_pinned {
                self.service_name = value;
            }
        } else {
            self.resource.push((key, value));
        }
        self
    }

    /// How many finished spans may wait for export. Beyond it, spans are
    /// dropped and counted (see
    /// [`Telemetry::dropped_spans`](super::Telemetry::dropped_spans)), so
    /// memory stays bounded when the collector is slow or gone. Must be
    /// above zero.
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = size;
        self
    }

    /// How long finished spans wait before they are exported in a batch
    /// (sooner when a batch fills). Must be above zero.
    pub fn schedule_delay(mut self, delay: Duration) -> Self {
        self.schedule_delay = delay;
        self
    }

    /// What one span may hold (attributes, events, links, and the
    /// attributes of each event and link), replacing what the
    /// `OTEL_*_COUNT_LIMIT` variables say. Past a limit, what does not fit
    /// is dropped and counted in the exported span. Default: the SDK's,
    /// 128 of each.
    pub fn span_limits(mut self, limits: SpanLimits) -> Self {
        self.span_limits = limits;
        self
    }

    /// Which events the console shows, in `RUST_LOG` syntax
    /// (`"info,sinew=debug"`), replacing what `RUST_LOG` says.
    pub fn log_filter(mut self, directives: impl Into<String>) -> Self {
        self.log_filter = directives.into();
        self
    }

    /// Checks the values set in code, naming the setter at fault. Values
    /// from the environment were checked when read.
    pub(crate) fn validate(&self) -> Result<(), TelemetryError> {
        if let Some(endpoint) = &self.traces_endpoint {
            check_endpoint("traces_endpoint", endpoint)?;
        }
        if let Some(endpoint) = &self.metrics_endpoint {
            check_endpoint("metrics_endpoint", endpoint)?;
        }
        for (key, value) in &self.traces_headers.0 {
            check_header("traces_header", key, value)?;
        }
        for (key, value) in &self.metrics_headers.0 {
            check_header("metrics_header", key, value)?;
        }
        if let Some(ratio) = self.sampler.ratio() {
            check_ratio("sampler", &ratio.to_string(), ratio)?;
        }
        let positive = [
            ("export_timeout", self.traces_timeout.is_zero()),
            ("export_timeout", self.metrics_timeout.is_zero()),
            (
                "metric_export_interval",
                self.metric_export_interval.is_zero(),
            ),
            ("max_queue_size", self.max_queue_size == 0),
            ("schedule_delay", self.schedule_delay.is_zero()),
        ];
        if let Some((key, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(TelemetryError::invalid(key, "0", "must be above zero"));
        }
        check_log_filter("log_filter", &self.log_filter)
    }

    /// The export batch size, never above the queue size.
    pub(crate) fn batch_size(&self) -> usize {
        self.max_export_batch_size
            .clamp(1, self.max_queue_size.max(1))
    }
}

/// Reads a specification boolean: `true` in any case is true and `false`
/// in any case false, blanks around them ignored; anything else is `None`,
/// which callers take as false (never as true: the specification forbids
/// widening what counts as true) and warn about.
fn parse_bool(value: &str) -> Option<bool> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn parse_protocol(key: &str, value: &str) -> Result<Protocol, TelemetryError> {
    match value.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        _ => Err(TelemetryError::invalid(
            key,
            value,
            "expected grpc (the collector's port 4317) or http/protobuf (port 4318); \
             http/json is not supported",
        )),
    }
}

/// The URL a signal is exported to: a shared endpoint under
/// `http/protobuf` is a base that the signal's path is added to, as the
/// specification says; anything else is used as it is.
fn signal_url(endpoint: &str, shared: bool, protocol: Protocol, signal: &str) -> String {
    if shared && protocol == Protocol::HttpProtobuf {
        format!("{}/v1/{signal}", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_owned()
    }
}

/// Checks a compression setting: only `none` is supported.
fn parse_compression(key: &str, value: &str) -> Result<Compression, TelemetryError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        _ => Err(TelemetryError::invalid(
            key,
            value,
            "expected gzip or none (zstd is not supported)",
        )),
    }
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS` or `_TRACES_HEADERS`: `key=value`
/// pairs separated by commas, as in W3C baggage without properties;
/// values percent-encoded, keys lowercased. Blanks around keys and values,
/// and empty pairs, are ignored; of a key given twice, the last wins.
fn parse_headers(variable: &str, text: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    // The values may be credentials: the error names the header, never
    // quotes the text.
    let invalid = |reason: String| TelemetryError::invalid(variable, "<redacted>", reason);
    let mut headers = Headers::default();
    for (index, pair) in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .enumerate()
    {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!(
                "entry {} is not key=value; expected key1=value1,key2=value2",
                index + 1
            )));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = percent_decode(value.trim())
            .map_err(|reason| invalid(format!("the value of {key:?}: {reason}")))?;
        check_header(variable, &key, &value)?;
        headers.set(&key, value);
    }
    Ok(headers.0)
}

/// Checks a header for gRPC metadata: a valid, unreserved, text (not
/// `-bin`) key and a printable ASCII value. Names `key`, never shows the
/// value.
fn check_header(variable: &str, key: &str, value: &str) -> Result<(), TelemetryError> {
    let invalid = |reason: String| TelemetryError::invalid(variable, "<redacted>", reason);
    if key.is_empty() {
        return Err(invalid("a header has an empty key".to_owned()));
    }
    if tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()).is_err() {
        return Err(invalid(format!(
            "{key:?} is not a valid text metadata key (header name characters, \
             not ending in -bin)"
        )));
    }
    if matches!(key, "te" | "content-type") || key.starts_with("grpc-") {
        return Err(invalid(format!("{key:?} is reserved by gRPC")));
    }
    // gRPC's ASCII values: space and printable ASCII. (tonic would also
    // take bytes above 0x7f, which peers may reject.)
    let printable = value.bytes().all(|byte| matches!(byte, 0x20..=0x7e));
    if !printable || tonic::metadata::AsciiMetadataValue::try_from(value).is_err() {
        return Err(invalid(format!(
            "the value of {key:?} is not printable ASCII (percent-decoded)"
        )));
    }
    Ok(())
}

/// Checks an OTLP endpoint: an `http://` or `https://` URL with a host.
fn check_endpoint(key: &str, value: &str) -> Result<String, TelemetryError> {
    const EXPECTED: &str = "expected a URL like http://localhost:4317 or https://collector:4317";
    let value = value.trim();
    let uri: http::Uri = value.parse().map_err(|e: http::uri::InvalidUri| {
        TelemetryError::invalid(key, value, format!("{e}; {EXPECTED}"))
    })?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|host| !host.is_empty()) => {
            Ok(value.to_owned())
        }
        _ => Err(TelemetryError::invalid(key, value, EXPECTED)),
    }
}

/// Whether `url` is an `https://` URL.
pub(crate) fn is_https(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme() == Some(&http::uri::Scheme::HTTPS))
}

/// A client certificate and its key, named by `source`.
fn identity(
    source: &'static str,
    cert: PathBuf,
    key: PathBuf,
) -> (Option<TlsFile>, Option<TlsFile>) {
    (
        Some(TlsFile { path: cert, source }),
        Some(TlsFile { path: key, source }),
    )
}

// === impl TlsFiles ===

impl TlsFiles {
    /// The TLS of `signal`'s exports to `url`: for an `https://` URL, built
    /// from the files, which are read, and so checked, now; an error names
    /// the variable or setter of the file at fault, never quoting what it
    /// holds. `None` for `http://`, which reads no file.
    pub(crate) fn load_for(
        &self,
        url: &str,
        signal: &'static str,
    ) -> Result<Option<ClientTls>, TelemetryError> {
        if !is_https(url) {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca(&ca.path);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => config = config.identity(&cert.path, &key.path),
            (None, None) => {}
            (Some(cert), None) => {
                return Err(cert.invalid(
                    "set without a client key; a client certificate and its key go together",
                ));
            }
            (None, Some(key)) => {
                return Err(key.invalid(
                    "set without a client certificate; a client certificate and its key go \
                     together",
                ));
            }
        }
        ClientTls::load(config)
            .map(Some)
            .map_err(|error| self.error(signal, &error))
    }

    /// `error`, from loading the files, as naming the variable or setter of
    /// the file at fault.
    fn error(&self, signal: &'static str, error: &TlsError) -> TelemetryError {
        let file = |key: &str| match key {
            "tls_ca" => self.ca.as_ref(),
            "tls_client_cert" => self.client_cert.as_ref(),
            "tls_client_key" => self.client_key.as_ref(),
            _ => None,
        };
        let reason = match error {
            TlsError::Read { reason, .. } => format!("cannot read the file: {reason}"),
            TlsError::Invalid { reason, .. } | TlsError::Setting { reason, .. } => reason.clone(),
            TlsError::KeyMismatch { cert_key, .. } => match file(cert_key) {
                Some(cert) => format!(
                    "not the key of the client certificate ({}, {})",
                    cert.source,
                    cert.path.display()
                ),
                None => "not the key of the client certificate".to_owned(),
            },
            other => other.to_string(),
        };
        match error.key().and_then(file) {
            Some(at_fault) => at_fault.invalid(reason),
            // No file of its own at fault: the system's roots, say, where
            // there are none.
            None => TelemetryError::Exporter {
                signal,
                reason: format!("cannot set up TLS: {reason} ({CERTIFICATE})"),
            },
        }
    }
}

impl TlsFile {
    fn invalid(&self, reason: impl Into<String>) -> TelemetryError {
        TelemetryError::invalid(self.source, &self.path.display().to_string(), reason)
    }
}

fn parse_millis(key: &str, value: &str) -> Result<Duration, TelemetryError> {
    match value.trim().parse::<u64>() {
        Ok(0) => Err(TelemetryError::invalid(key, value, "must be above zero")),
        Ok(millis) => Ok(Duration::from_millis(millis)),
        Err(e) => Err(TelemetryError::invalid(
            key,
            value,
            format!("{e}; expected milliseconds, a whole number"),
        )),
    }
}

fn parse_count(key: &str, value: &str) -> Result<usize, TelemetryError> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err(TelemetryError::invalid(key, value, "must be above zero")),
        Ok(count) => Ok(count),
        Err(e) => Err(TelemetryError::invalid(
            key,
            value,
            format!("{e}; expected a whole number"),
        )),
    }
}

/// A span limit: a whole number, zero included (a span that keeps none).
fn parse_limit(key: &str, value: &str) -> Result<u32, TelemetryError> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|e| TelemetryError::invalid(key, value, format!("{e}; expected a whole number")))
}

fn parse_ratio(key: &str, value: &str) -> Result<f64, TelemetryError> {
    let ratio = value.trim().parse::<f64>().map_err(|e| {
        TelemetryError::invalid(key, value, format!("{e}; expected a number in [0, 1]"))
    })?;
    check_ratio(key, value, ratio)
}

fn check_ratio(key: &str, value: &str, ratio: f64) -> Result<f64, TelemetryError> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(TelemetryError::invalid(
            key,
            value,
            "expected a number in [0, 1]",
        ))
    }
}

fn check_log_filter(key: &str, value: &str) -> Result<(), TelemetryError> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(drop)
        .map_err(|e| TelemetryError::invalid(key, value, e.to_string()))
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas,
/// values percent-encoded (`team=a%2Cb` is `a,b`). Blanks around keys and
/// values, and empty pairs, are ignored.
fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let invalid = |reason: String| TelemetryError::invalid(RESOURCE_ATTRIBUTES, text, reason);
    let mut pairs = Vec::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!(
                "{pair:?} is not key=value; expected key1=value1,key2=value2"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(format!("{pair:?} has an empty key")));
        }
        let value = percent_decode(value.trim())
            .map_err(|reason| invalid(format!("the value of {key:?}: {reason}")))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}; expected %XX"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent escapes do not decode to UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| map.get(key).cloned()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, TelemetryError> {
        TelemetryConfig::from_env_with("from-code", env(pairs))
    }

    #[track_caller]
    fn fails_naming(pairs: &[(&str, &str)], key: &str) -> TelemetryError {
        let err = load(pairs).expect_err("the value is invalid");
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains(key), "{err}");
        err
    }

    #[test]
    fn defaults_are_the_specifications() {
        let config = load(&[]).unwrap();
        assert_eq!(config.service_name, "from-code");
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.metrics_endpoint, None);
        assert_eq!(config.traces_timeout, Duration::from_secs(10));
        assert_eq!(config.metrics_timeout, Duration::from_secs(10));
        assert_eq!(config.sampler, TraceSampler::ParentBasedAlwaysOn);
        assert_eq!(config.metric_export_interval, Duration::from_secs(60));
        assert_eq!(config.max_queue_size, 2048);
        assert_eq!(config.max_export_batch_size, 512);
        assert_eq!(config.schedule_delay, Duration::from_secs(5));
        assert_eq!(config.log_filter, "info");
        assert!(config.resource.is_empty());
        config.validate().unwrap();
    }

    #[test]
    fn otel_sdk_disabled_is_true_in_any_case_and_nothing_else() {
        for value in ["true", "TRUE", "True", " tRuE "] {
            let config = load(&[(SDK_DISABLED, value)]).unwrap();
            assert!(config.disabled, "{value:?}");
            assert_eq!(config.unrecognised_disabled, None, "{value:?}");
        }
        // Unset, empty and false leave telemetry on, quietly.
        for pairs in [&[][..], &[(SDK_DISABLED, "")], &[(SDK_DISABLED, "FALSE")]] {
            let config = load(pairs).unwrap();
            assert!(!config.disabled, "{pairs:?}");
            assert_eq!(config.unrecognised_disabled, None, "{pairs:?}");
        }
        // Anything else is false too, never an error, but is kept to be
        // warned about; and no other spelling of true sneaks in.
        for value in ["1", "yes", "on", "t", "truee", "disabled"] {
            let config = load(&[(SDK_DISABLED, value)]).unwrap();
            assert!(!config.disabled, "{value:?}");
            assert_eq!(config.unrecognised_disabled.as_deref(), Some(value));
        }
    }

    #[test]
    fn disabled_ignores_invalid_sdk_settings_but_not_rust_log() {
        let invalid = [
            (ENDPOINT, "ftp://collector:4317"),
            (PROTOCOL, "http/json"),
            (HEADERS, "secret-token"),
            (TRACES_COMPRESSION, "zstd"),
            (SAMPLER, "jaeger_remote"),
            (BSP_MAX_QUEUE_SIZE, "0"),
        ];
        for (key, value) in invalid {
            // Enabled, each fails the start...
            fails_naming(&[(key, value)], key);
            // ...disabled, it is only reported, naming the variable.
            let config = load(&[(SDK_DISABLED, "true"), (key, value)]).unwrap();
            assert!(config.disabled);
            let ignored = config.ignored.expect(key);
            assert!(ignored.contains(key), "{ignored}");
            assert!(!ignored.contains("secret"), "{ignored}");
        }
        assert_eq!(load(&[(SDK_DISABLED, "true")]).unwrap().ignored, None);

        // The console still logs, through RUST_LOG.
        fails_naming(
            &[(SDK_DISABLED, "true"), (RUST_LOG, "sinew=loud")],
            RUST_LOG,
        );
        let config = load(&[(SDK_DISABLED, "true"), (RUST_LOG, "warn")]).unwrap();
        assert_eq!(config.log_filter, "warn");
    }

    #[test]
    fn code_can_disable_but_not_undo_otel_sdk_disabled() {
        let config = TelemetryConfig::new("svc");
        assert!(!config.disabled);
        let config = config.disabled(true);
        assert!(config.disabled && !config.disabled_by_env);
        assert!(!config.disabled(false).disabled);

        let config = load(&[(SDK_DISABLED, "true")]).unwrap().disabled(false);
        assert!(config.disabled);
        let config = load(&[(SDK_DISABLED, "false")]).unwrap().disabled(true);
        assert!(config.disabled);
    }

    #[test]
    fn the_generic_endpoint_serves_both_signals() {
        let config = load(&[(ENDPOINT, "http://collector:4317")]).unwrap();
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://collector:4317")
        );
    }

    #[test]
    fn a_signal_endpoint_wins_over_the_generic_one() {
        let config = load(&[
            (ENDPOINT, "http://collector:4317"),
            (TRACES_ENDPOINT, "http://tempo:4317"),
            (METRICS_ENDPOINT, "http://prometheus:4317"),
        ])
        .unwrap();
        assert_eq!(config.traces_endpoint.as_deref(), Some("http://tempo:4317"));
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://prometheus:4317")
        );

        let config = load(&[(TRACES_ENDPOINT, "http://tempo:4317")]).unwrap();
        assert_eq!(config.traces_endpoint.as_deref(), Some("http://tempo:4317"));
        assert_eq!(config.metrics_endpoint, None);
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let config = load(&[(ENDPOINT, ""), (SAMPLER, "  "), (SERVICE_NAME, "")]).unwrap();
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.sampler, TraceSampler::ParentBasedAlwaysOn);
        assert_eq!(config.service_name, "from-code");
    }

    #[test]
    fn invalid_endpoints_name_their_variable() {
        for key in [ENDPOINT, TRACES_ENDPOINT, METRICS_ENDPOINT] {
            fails_naming(&[(key, "localhost:4317")], key);
            fails_naming(&[(key, "not a url")], key);
            fails_naming(&[(key, "ftp://collector:4317")], key);
            fails_naming(&[(key, "https://")], key);
        }
    }

    #[test]
    fn https_endpoints_are_taken() {
        let config = load(&[
            (ENDPOINT, "https://collector:4317"),
            (METRICS_ENDPOINT, "https://metrics.example/v1/metrics"),
        ])
        .unwrap();
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("https://collector:4317")
        );
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("https://metrics.example/v1/metrics")
        );
        TelemetryConfig::new("svc")
            .endpoint("https://collector:4317")
            .validate()
            .unwrap();
    }

    #[test]
    fn tls_files_are_shared_unless_a_signal_names_its_own() {
        let file = |path: &str, source| {
            Some(TlsFile {
                path: PathBuf::from(path),
                source,
            })
        };
        let config = load(&[
            (CERTIFICATE, "/ca.pem"),
            (CLIENT_CERTIFICATE, "/client.pem"),
            (CLIENT_KEY, " /client.key "),
        ])
        .unwrap();
        assert_eq!(config.traces_tls, config.metrics_tls);
        assert_eq!(config.traces_tls.ca, file("/ca.pem", CERTIFICATE));
        assert_eq!(
            config.traces_tls.client_key,
            file("/client.key", CLIENT_KEY)
        );

        // Each signal's variable wins over the shared one, file by file.
        let config = load(&[
            (CERTIFICATE, "/ca.pem"),
            (TRACES_CERTIFICATE, "/traces-ca.pem"),
            (CLIENT_CERTIFICATE, "/client.pem"),
            (CLIENT_KEY, "/client.key"),
            (METRICS_CLIENT_CERTIFICATE, "/metrics.pem"),
            (METRICS_CLIENT_KEY, "/metrics.key"),
        ])
        .unwrap();
        assert_eq!(
            config.traces_tls,
            TlsFiles {
                ca: file("/traces-ca.pem", TRACES_CERTIFICATE),
                client_cert: file("/client.pem", CLIENT_CERTIFICATE),
                client_key: file("/client.key", CLIENT_KEY),
            }
        );
        assert_eq!(
            config.metrics_tls,
            TlsFiles {
                ca: file("/ca.pem", CERTIFICATE),
                client_cert: file("/metrics.pem", METRICS_CLIENT_CERTIFICATE),
                client_key: file("/metrics.key", METRICS_CLIENT_KEY),
            }
        );

        // Code replaces the environment's, naming its setter.
        let config = config
            .certificate("/code-ca.pem")
            .traces_client_certificate("/t.pem", "/t.key");
        assert_eq!(config.metrics_tls.ca, file("/code-ca.pem", "certificate"));
        assert_eq!(config.traces_tls.ca, config.metrics_tls.ca);
        assert_eq!(
            config.traces_tls.client_key,
            file("/t.key", "traces_client_certificate")
        );
        assert_eq!(
            config.metrics_tls.client_key,
            file("/metrics.key", METRICS_CLIENT_KEY)
        );
        let config = TelemetryConfig::new("svc")
            .client_certificate("/c.pem", "/c.key")
            .metrics_certificate("/m-ca.pem");
        assert_eq!(
            config.metrics_tls.client_cert,
            file("/c.pem", "client_certificate")
        );
        assert_eq!(config.traces_tls.ca, None);
        assert_eq!(
            config.metrics_tls.ca,
            file("/m-ca.pem", "metrics_certificate")
        );
    }

    #[test]
    fn tls_files_are_read_only_for_https_and_fail_naming_their_variable() {
        let missing = "/nonexistent/sinew-test/ca.pem";
        let config = load(&[(CERTIFICATE, missing), (CLIENT_KEY, "/nonexistent/key")]).unwrap();
        // Plain text reads no file: nothing changes for http://.
        assert!(
            config
                .traces_tls
                .load_for("http://collector:4317", "traces")
                .unwrap()
                .is_none()
        );
        // A key without its certificate.
        let err = config
            .traces_tls
            .load_for("https://collector:4317", "traces")
            .unwrap_err();
        assert_eq!(err.key(), Some(CLIENT_KEY), "{err}");

        let config = load(&[(CERTIFICATE, missing)]).unwrap();
        let err = config
            .metrics_tls
            .load_for("https://collector:4317", "metrics")
            .unwrap_err();
        assert_eq!(err.key(), Some(CERTIFICATE), "{err}");
        assert!(err.to_string().contains(missing), "{err}");

        let err = TelemetryConfig::new("svc")
            .traces_certificate(missing)
            .traces_tls
            .load_for("https://collector:4317", "traces")
            .unwrap_err();
        assert_eq!(err.key(), Some("traces_certificate"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_fails_naming_the_key_and_not_quoting_it() {
        let pki = sinew_testing::pki::TestPki::new("test CA");
        let (one, other) = (pki.client("one", None), pki.client("other", None));
        let cert_path = one.cert.display().to_string();
        let key_path = other.key.display().to_string();
        let config = load(&[
            (CERTIFICATE, &pki.ca().display().to_string()),
            (CLIENT_CERTIFICATE, &cert_path),
            (TRACES_CLIENT_KEY, &key_path),
        ])
        .unwrap();
        let err = config
            .traces_tls
            .load_for("https://collector:4317", "traces")
            .unwrap_err();
        assert_eq!(err.key(), Some(TRACES_CLIENT_KEY), "{err}");
        let text = err.to_string();
        assert!(text.contains(CLIENT_CERTIFICATE), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        let key = std::fs::read_to_string(&other.key).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!text.contains(body), "{text}");

        // Its own key is taken; the metrics, with no key, are refused.
        let config = load(&[
            (CLIENT_CERTIFICATE, &cert_path),
            (TRACES_CLIENT_KEY, &one.key.display().to_string()),
            (CERTIFICATE, &pki.ca().display().to_string()),
        ])
        .unwrap();
        let tls = config
            .traces_tls
            .load_for("https://collector:4317", "traces")
            .unwrap()
            .unwrap();
        assert!(tls.has_identity());
        let err = config
            .metrics_tls
            .load_for("https://collector:4317", "metrics")
            .unwrap_err();
        assert_eq!(err.key(), Some(CLIENT_CERTIFICATE), "{err}");
    }

    #[test]
    fn the_protocol_is_grpc_or_http_protobuf_per_signal() {
        let config = load(&[(PROTOCOL, "grpc"), (ENDPOINT, "http://c:4317")]).unwrap();
        assert_eq!(
            config.traces_target(),
            Some(("http://c:4317".to_owned(), Protocol::Grpc))
        );
        // Under http/protobuf the shared endpoint is a base for each
        // signal's path; a signal's own endpoint is used as it is.
        let config = load(&[
            (PROTOCOL, "http/protobuf"),
            (ENDPOINT, "http://c:4318/"),
            (METRICS_ENDPOINT, "http://m:9000/ingest"),
        ])
        .unwrap();
        assert_eq!(
            config.traces_target(),
            Some(("http://c:4318/v1/traces".to_owned(), Protocol::HttpProtobuf))
        );
        assert_eq!(
            config.metrics_target(),
            Some(("http://m:9000/ingest".to_owned(), Protocol::HttpProtobuf))
        );
        // Each signal's variable wins over the shared one.
        let config = load(&[
            (PROTOCOL, "http/protobuf"),
            (TRACES_PROTOCOL, "grpc"),
            (ENDPOINT, "http://c:4317"),
        ])
        .unwrap();
        assert_eq!(config.traces_target().unwrap().1, Protocol::Grpc);
        assert_eq!(
            config.metrics_target(),
            Some((
                "http://c:4317/v1/metrics".to_owned(),
                Protocol::HttpProtobuf
            ))
        );
        // In code, likewise.
        let config = TelemetryConfig::new("svc")
            .endpoint("http://c:4318")
            .protocol(Protocol::HttpProtobuf)
            .traces_endpoint("http://t:1/x");
        assert_eq!(config.traces_target().unwrap().0, "http://t:1/x");
        assert_eq!(
            config.metrics_target().unwrap().0,
            "http://c:4318/v1/metrics"
        );
        for key in [PROTOCOL, TRACES_PROTOCOL, METRICS_PROTOCOL] {
            let err = fails_naming(&[(key, "http/json")], key);
            assert!(err.to_string().contains("http/protobuf"), "{err}");
            fails_naming(&[(key, "HTTP")], key);
        }
    }

    #[test]
    fn headers_are_split_decoded_and_lowercased() {
        let config = load(&[(
            HEADERS,
            " Authorization = Bearer%20abc%3D%3D ,x-tenant=acme, ,X-Tenant=acme2,empty=",
        )])
        .unwrap();
        assert_eq!(
            config.traces_headers.0,
            [
                ("authorization".to_owned(), "Bearer abc==".to_owned()),
                ("x-tenant".to_owned(), "acme2".to_owned()),
                ("empty".to_owned(), String::new()),
            ]
        );
        assert!(load(&[]).unwrap().traces_headers.0.is_empty());
    }

    #[test]
    fn the_traces_headers_replace_the_generic_ones_whole() {
        let config = load(&[(HEADERS, "a=1,b=2"), (TRACES_HEADERS, "b=3")]).unwrap();
        assert_eq!(config.traces_headers.0, [("b".to_owned(), "3".to_owned())]);
        let config = load(&[(TRACES_HEADERS, "c=4")]).unwrap();
        assert_eq!(config.traces_headers.0, [("c".to_owned(), "4".to_owned())]);
    }

    #[test]
    fn invalid_headers_name_their_variable_but_not_their_value() {
        for key in [HEADERS, TRACES_HEADERS] {
            for text in [
                "secret-token",
                "=secret",
                "bad key=secret",
                "k=secret%zz",
                "k=secret%C3%A9",
                "k=secret%0A",
                "te=secret",
                "content-type=secret",
                "grpc-timeout=secret",
                "x-bin=secret",
            ] {
                let err = fails_naming(&[(key, text)], key);
                assert!(!err.to_string().contains("secret"), "{err}");
            }
            // Nor does the configuration's debug output show values.
            let config = load(&[(key, "authorization=secret")]).unwrap();
            let debug = format!("{config:?}");
            assert!(
                debug.contains("authorization") && !debug.contains("secret"),
                "{debug}"
            );
        }
        // The generic variable is checked even when overridden: the
        // other signal may read it.
        fails_naming(&[(HEADERS, "oops"), (TRACES_HEADERS, "a=1")], HEADERS);
    }

    #[test]
    fn compression_is_gzip_or_none_per_signal() {
        let config = load(&[]).unwrap();
        assert_eq!(
            (config.traces_compression, config.metrics_compression),
            (Compression::None, Compression::None)
        );
        for value in ["gzip", "GZIP", " Gzip "] {
            let config = load(&[(COMPRESSION, value)]).unwrap();
            assert_eq!(config.traces_compression, Compression::Gzip);
            assert_eq!(config.metrics_compression, Compression::Gzip);
        }
        // Each signal's variable wins over the shared one.
        let config = load(&[
            (COMPRESSION, "gzip"),
            (TRACES_COMPRESSION, "none"),
            (METRICS_COMPRESSION, "gzip"),
        ])
        .unwrap();
        assert_eq!(config.traces_compression, Compression::None);
        assert_eq!(config.metrics_compression, Compression::Gzip);
        for key in [COMPRESSION, TRACES_COMPRESSION, METRICS_COMPRESSION] {
            fails_naming(&[(key, "zstd")], key);
            fails_naming(&[(key, "deflate")], key);
        }
        let config = TelemetryConfig::new("svc").compression(Compression::Gzip);
        assert_eq!(config.metrics_compression, Compression::Gzip);
    }

    #[test]
    fn metrics_read_the_shared_headers_as_traces_do() {
        let config = load(&[(HEADERS, "a=1,b=2")]).unwrap();
        assert_eq!(config.metrics_headers, config.traces_headers);
        let config = load(&[(HEADERS, "a=1"), (METRICS_HEADERS, "m=%20x")]).unwrap();
        assert_eq!(config.traces_headers.0, [("a".to_owned(), "1".to_owned())]);
        assert_eq!(
            config.metrics_headers.0,
            [("m".to_owned(), " x".to_owned())]
        );
        // Checked the same way, naming the variable, never the value.
        let err = fails_naming(&[(METRICS_HEADERS, "k=secret%zz")], METRICS_HEADERS);
        assert!(!err.to_string().contains("secret"), "{err}");
        let config = TelemetryConfig::new("svc").header("x-tenant", "t1");
        assert_eq!(config.metrics_headers, config.traces_headers);
        let err = TelemetryConfig::new("svc")
            .metrics_header("grpc-x", "v")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("metrics_header"), "{err}");
    }

    #[test]
    fn a_header_set_in_code_replaces_the_environments() {
        let config = load(&[(HEADERS, "authorization=from-env,x-a=1")])
            .unwrap()
            .traces_header("Authorization", "from-code")
            .traces_header("x-b", "2");
        assert_eq!(
            config.traces_headers.0,
            [
                ("authorization".to_owned(), "from-code".to_owned()),
                ("x-a".to_owned(), "1".to_owned()),
                ("x-b".to_owned(), "2".to_owned()),
            ]
        );
        config.validate().unwrap();
    }

    #[test]
    fn timeouts_are_milliseconds_and_signal_ones_win() {
        let config = load(&[(TIMEOUT, "2500")]).unwrap();
        assert_eq!(config.traces_timeout, Duration::from_millis(2500));
        assert_eq!(config.metrics_timeout, Duration::from_millis(2500));

        let config = load(&[
            (TIMEOUT, "2500"),
            (TRACES_TIMEOUT, "100"),
            (METRICS_TIMEOUT, "200"),
        ])
        .unwrap();
        assert_eq!(config.traces_timeout, Duration::from_millis(100));
        assert_eq!(config.metrics_timeout, Duration::from_millis(200));

        for key in [TIMEOUT, TRACES_TIMEOUT, METRICS_TIMEOUT] {
            fails_naming(&[(key, "5s")], key);
            fails_naming(&[(key, "0")], key);
            fails_naming(&[(key, "-1")], key);
        }
    }

    #[test]
    fn otel_service_name_wins_over_code_and_resource_attributes() {
        let config = load(&[(SERVICE_NAME, "from-env")]).unwrap();
        assert_eq!(config.service_name, "from-env");

        let config = load(&[
            (SERVICE_NAME, "from-env"),
            (RESOURCE_ATTRIBUTES, "service.name=from-attributes"),
        ])
        .unwrap();
        assert_eq!(config.service_name, "from-env");

        let config = load(&[(RESOURCE_ATTRIBUTES, "service.name=from-attributes")]).unwrap();
        assert_eq!(config.service_name, "from-attributes");
        assert!(config.resource.is_empty(), "{:?}", config.resource);

        // Code cannot override the environment's name.
        let config = load(&[(SERVICE_NAME, "from-env")])
            .unwrap()
            .resource_attribute("service.name", "from-setter");
        assert_eq!(config.service_name, "from-env");
        let config = load(&[])
            .unwrap()
            .resource_attribute("service.name", "from-setter");
        assert_eq!(config.service_name, "from-setter");
    }

    #[test]
    fn resource_attributes_are_split_trimmed_and_percent_decoded() {
        let config = load(&[(
            RESOURCE_ATTRIBUTES,
            " team = payments ,deployment.environment.name=prod%2Deu,note=a%2Cb%3Dc%20d, ,k=",
        )])
        .unwrap();
        assert_eq!(
            config.resource,
            [
                ("team".to_owned(), "payments".to_owned()),
                (
                    "deployment.environment.name".to_owned(),
                    "prod-eu".to_owned()
                ),
                ("note".to_owned(), "a,b=c d".to_owned()),
                ("k".to_owned(), String::new()),
            ]
        );

        let config = load(&[(RESOURCE_ATTRIBUTES, "city=K%C3%B6ln")]).unwrap();
        assert_eq!(config.resource, [("city".to_owned(), "Köln".to_owned())]);
    }

    #[test]
    fn malformed_resource_attributes_name_the_variable() {
        for text in [
            "team",
            "=payments",
            "team=payments,oops",
            "note=100%",
            "note=%zz",
            "note=%C3",
        ] {
            let err = fails_naming(&[(RESOURCE_ATTRIBUTES, text)], RESOURCE_ATTRIBUTES);
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn code_attributes_come_after_the_environments() {
        let config = load(&[(RESOURCE_ATTRIBUTES, "team=payments")])
            .unwrap()
            .resource_attribute("team", "search");
        assert_eq!(config.resource.last().unwrap().1, "search");
    }

    #[test]
    fn every_sampler_parses() {
        let cases = [
            ("always_on", TraceSampler::AlwaysOn),
            ("always_off", TraceSampler::AlwaysOff),
            ("traceidratio", TraceSampler::TraceIdRatio(1.0)),
            ("parentbased_always_on", TraceSampler::ParentBasedAlwaysOn),
            ("parentbased_always_off", TraceSampler::ParentBasedAlwaysOff),
            (
                "parentbased_traceidratio",
                TraceSampler::ParentBasedTraceIdRatio(1.0),
            ),
        ];
        for (name, sampler) in cases {
            assert_eq!(load(&[(SAMPLER, name)]).unwrap().sampler, sampler, "{name}");
        }
    }

    #[test]
    fn the_sampler_argument_is_the_ratio() {
        let config = load(&[(SAMPLER, "traceidratio"), (SAMPLER_ARG, "0.25")]).unwrap();
        assert_eq!(config.sampler, TraceSampler::TraceIdRatio(0.25));
        let config = load(&[(SAMPLER, "parentbased_traceidratio"), (SAMPLER_ARG, "0")]).unwrap();
        assert_eq!(config.sampler, TraceSampler::ParentBasedTraceIdRatio(0.0));
        // Samplers without an argument ignore it.
        let config = load(&[(SAMPLER, "always_on"), (SAMPLER_ARG, "lots")]).unwrap();
        assert_eq!(config.sampler, TraceSampler::AlwaysOn);
    }

    #[test]
    fn span_limits_come_from_the_specific_then_the_general_variable() {
        let config = load(&[]).unwrap();
        assert_eq!(config.span_limits.max_attributes_per_span, 128);
        assert_eq!(config.span_limits.max_events_per_span, 128);
        let config = load(&[
            (ATTRIBUTE_COUNT_LIMIT, "16"),
            (SPAN_ATTRIBUTE_COUNT_LIMIT, "32"),
            (SPAN_EVENT_COUNT_LIMIT, "4"),
            (SPAN_LINK_COUNT_LIMIT, "0"),
            (LINK_ATTRIBUTE_COUNT_LIMIT, "2"),
        ])
        .unwrap();
        let limits = config.span_limits;
        assert_eq!(limits.max_attributes_per_span, 32);
        assert_eq!(limits.max_events_per_span, 4);
        assert_eq!(limits.max_links_per_span, 0);
        // The general limit, where no specific one is set.
        assert_eq!(limits.max_attributes_per_event, 16);
        assert_eq!(limits.max_attributes_per_link, 2);
        for key in [
            ATTRIBUTE_COUNT_LIMIT,
            SPAN_ATTRIBUTE_COUNT_LIMIT,
            SPAN_EVENT_COUNT_LIMIT,
            SPAN_LINK_COUNT_LIMIT,
            EVENT_ATTRIBUTE_COUNT_LIMIT,
            LINK_ATTRIBUTE_COUNT_LIMIT,
        ] {
            fails_naming(&[(key, "-1")], key);
            fails_naming(&[(key, "lots")], key);
        }
    }

    #[test]
    fn invalid_samplers_name_their_variable() {
        fails_naming(&[(SAMPLER, "jaeger_remote")], SAMPLER);
        fails_naming(&[(SAMPLER, "AlwaysOn")], SAMPLER);
        for arg in ["1.5", "-0.1", "half", "NaN"] {
            fails_naming(
                &[(SAMPLER, "traceidratio"), (SAMPLER_ARG, arg)],
                SAMPLER_ARG,
            );
        }
    }

    #[test]
    fn metric_interval_and_span_queue_are_read() {
        let config = load(&[
            (METRIC_EXPORT_INTERVAL, "1500"),
            (BSP_MAX_QUEUE_SIZE, "64"),
            (BSP_MAX_EXPORT_BATCH_SIZE, "128"),
            (BSP_SCHEDULE_DELAY, "50"),
        ])
        .unwrap();
        assert_eq!(config.metric_export_interval, Duration::from_millis(1500));
        assert_eq!(config.max_queue_size, 64);
        assert_eq!(config.schedule_delay, Duration::from_millis(50));
        // A batch never exceeds the queue.
        assert_eq!(config.batch_size(), 64);

        for key in [METRIC_EXPORT_INTERVAL, BSP_SCHEDULE_DELAY] {
            fails_naming(&[(key, "1m")], key);
            fails_naming(&[(key, "0")], key);
        }
        for key in [BSP_MAX_QUEUE_SIZE, BSP_MAX_EXPORT_BATCH_SIZE] {
            fails_naming(&[(key, "many")], key);
            fails_naming(&[(key, "0")], key);
        }
    }

    #[test]
    fn rust_log_sets_the_console_filter() {
        let config = load(&[(RUST_LOG, "warn,sinew=debug")]).unwrap();
        assert_eq!(config.log_filter, "warn,sinew=debug");
        fails_naming(&[(RUST_LOG, "sinew=loud")], RUST_LOG);
    }

    #[test]
    fn setters_override_the_environment() {
        let config = load(&[
            (ENDPOINT, "http://collector:4317"),
            (SAMPLER, "always_off"),
            (METRIC_EXPORT_INTERVAL, "1000"),
        ])
        .unwrap()
        .endpoint("http://127.0.0.1:4317")
        .sample_ratio(0.5)
        .metric_export_interval(Duration::from_secs(3));
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(config.sampler, TraceSampler::ParentBasedTraceIdRatio(0.5));
        assert_eq!(config.metric_export_interval, Duration::from_secs(3));
        config.validate().unwrap();

        let config = load(&[(ENDPOINT, "http://collector:4317")])
            .unwrap()
            .no_export();
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.metrics_endpoint, None);
    }

    #[test]
    fn invalid_values_set_in_code_name_their_setter() {
        let base = || TelemetryConfig::new("svc");
        let cases = [
            (base().endpoint("collector:4317"), "traces_endpoint"),
            (base().metrics_endpoint("ftp://x"), "metrics_endpoint"),
            (base().sample_ratio(2.0), "sampler"),
            (base().sampler(TraceSampler::TraceIdRatio(-1.0)), "sampler"),
            (base().export_timeout(Duration::ZERO), "export_timeout"),
            (
                base().metric_export_interval(Duration::ZERO),
                "metric_export_interval",
            ),
            (base().max_queue_size(0), "max_queue_size"),
            (base().schedule_delay(Duration::ZERO), "schedule_delay"),
            (base().log_filter("sinew=loud"), "log_filter"),
            (base().traces_header("grpc-status", "0"), "traces_header"),
            (base().traces_header("x-bin", "AA=="), "traces_header"),
            (base().traces_header("x-line", "a\nb"), "traces_header"),
            (base().traces_header("", "x"), "traces_header"),
        ];
        for (config, key) in cases {
            let err = config.validate().expect_err(key);
            assert_eq!(err.key(), Some(key), "{err}");
        }
    }

    #[test]
    fn every_variable_read_is_listed() {
        let read = std::cell::RefCell::new(Vec::new());
        TelemetryConfig::from_env_with("svc", |key| {
            read.borrow_mut().push(key.to_owned());
            None
        })
        .unwrap();
        let mut read = read.into_inner();
        // The sampler argument is read only with a sampler.
        read.push(SAMPLER_ARG.to_owned());
        read.sort();
        let mut listed: Vec<_> = VARIABLES.iter().map(|key| (*key).to_owned()).collect();
        listed.sort();
        assert_eq!(read, listed);
    }

    #[test]
    fn a_span_is_surely_dropped_only_when_the_sampler_has_no_choice_left() {
        let parent = |flags| {
            SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                flags,
                true,
                TraceState::default(),
            )
        };
        let (sampled, unsampled, root) = (
            parent(TraceFlags::SAMPLED),
            parent(TraceFlags::NOT_SAMPLED),
            SpanContext::empty_context(),
        );
        use TraceSampler::*;
        for (sampler, [under_sampled, under_unsampled, as_root]) in [
            (AlwaysOn, [false, false, false]),
            (AlwaysOff, [true, true, true]),
            // Decided by the trace id, drawn later.
            (TraceIdRatio(0.5), [false, false, false]),
            (ParentBasedAlwaysOn, [false, true, false]),
            (ParentBasedAlwaysOff, [false, true, true]),
            (ParentBasedTraceIdRatio(0.5), [false, true, false]),
        ] {
            assert_eq!(
                [
                    sampler.surely_drops_child_of(&sampled),
                    sampler.surely_drops_child_of(&unsampled),
                    sampler.surely_drops_child_of(&root),
                ],
                [under_sampled, under_unsampled, as_root],
                "{sampler}"
            );
            // And the SDK's sampler agrees: what is surely dropped is.
            use opentelemetry::trace::{
                Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _,
            };
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_sampler(sampler.to_sdk())
                .build();
            let tracer = provider.tracer("test");
            for parent in [&sampled, &unsampled, &root] {
                let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
                let span = tracer.start_with_context("child", &cx);
                if sampler.surely_drops_child_of(parent) {
                    assert!(!span.is_recording(), "{sampler} recorded {parent:?}");
                }
            }
        }
    }
}
