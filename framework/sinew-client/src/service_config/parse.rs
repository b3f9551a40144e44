//! From JSON text to a validated [`ServiceConfig`].
//!
//! The document is read as a `serde_json::Value` and walked by hand rather
//! than derived: unknown fields must be ignored, `null` means absent, and
//! every error must name the JSON path it is about, which serde's derive
//! errors do not.

use std::{collections::HashMap, collections::hash_map::Entry, time::Duration};

use serde_json::{Map, Value};
use sinew_core::codes::{code_from_name, code_from_number};
use tonic::Code;

use crate::{CodeSet, HedgingPolicy, RetryPolicy};

use super::{
    MethodConfig, RetryThrottling, ServiceConfig, ServiceConfigError, duration::parse_duration,
};

type Result<T> = std::result::Result<T, ServiceConfigError>;

pub(super) fn parse(json: &str) -> Result<ServiceConfig> {
    let root: Value = serde_json::from_str(json)
        .map_err(|e| ServiceConfigError::new("", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = &root else {
        return Err(ServiceConfigError::new(
            "",
            format!("expected a JSON object, got {}", describe(&root)),
        ));
    };
    let root = Obj {
        map,
        path: String::new(),
    };

    let mut config = ServiceConfig::default();
    // Each name, to the path where it first appeared, to report duplicates.
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    for (i, entry) in root
        .array("methodConfig")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let entry = Obj::of(entry, format!("methodConfig[{i}]"))?;
        let index = config.methods.len();
        for (service, method) in names(&entry, &mut seen)? {
            config
                .names
                .entry(service)
                .or_default()
                .insert(method, index);
        }
        config.methods.push(method_config(&entry)?);
    }
    config.retry_throttling = root
        .object("retryThrottling")?
        .map(|o| retry_throttling(&o))
        .transpose()?;
    Ok(config)
}

/// The names of one `methodConfig` entry, as (service, method) with empty
/// strings for "every": ("", "") is the default, (S, "") all of S.
fn names(
    entry: &Obj<'_>,
    seen: &mut HashMap<(String, String), String>,
) -> Result<Vec<(String, String)>> {
    let mut names = Vec::new();
    // An entry without names applies to nothing; grpc-java and grpc-go
    // accept it, so it is not an error.
    for (j, name) in entry.array("name")?.into_iter().flatten().enumerate() {
        let name = Obj::of(name, entry.at(&format!("name[{j}]")))?;
        let service = name.string("service")?.unwrap_or_default();
        let method = name.string("method")?.unwrap_or_default();
        if service.is_empty() && !method.is_empty() {
            return Err(name.error(
                "method",
                format!("{method:?} names a method of no service; set service too, or leave both empty for the default"),
            ));
        }
        let key = (service.to_owned(), method.to_owned());
        match seen.entry(key.clone()) {
            Entry::Occupied(first) => {
                let what = match (service, method) {
                    ("", _) => "the default name (no service)".to_owned(),
                    (s, "") => format!("service {s:?} (all methods)"),
                    (s, m) => format!("method {s:?}/{m:?}"),
                };
                return Err(ServiceConfigError::new(
                    name.path,
                    format!("duplicate name: {what} is already named at {}", first.get()),
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert(name.path.clone());
            }
        }
        names.push(key);
    }
    Ok(names)
}

fn method_config(entry: &Obj<'_>) -> Result<MethodConfig> {
    let timeout = entry.duration("timeout")?;
    let retry = entry.object("retryPolicy")?;
    let hedging = entry.object("hedgingPolicy")?;
    if retry.is_some() && hedging.is_some() {
        return Err(entry.error(
            "hedgingPolicy",
            "cannot be set together with retryPolicy; an entry has one or the other",
        ));
    }
    Ok(MethodConfig {
        timeout,
        retry: retry.map(|o| retry_policy(&o)).transpose()?,
        hedging: hedging.map(|o| hedging_policy(&o)).transpose()?,
    })
}

fn retry_policy(policy: &Obj<'_>) -> Result<RetryPolicy> {
    let max_attempts = policy.required("maxAttempts", Obj::integer)?;
    let initial_backoff = policy.required("initialBackoff", Obj::duration)?;
    let max_backoff = policy.required("maxBackoff", Obj::duration)?;
    let backoff_multiplier = policy.required("backoffMultiplier", Obj::number)?;
    let retryable_codes = policy.required("retryableStatusCodes", Obj::codes)?;
    for (key, backoff) in [
        ("initialBackoff", initial_backoff),
        ("maxBackoff", max_backoff),
    ] {
        if backoff.is_zero() {
            return Err(policy.error(key, "must be above zero, got \"0s\""));
        }
    }
    if backoff_multiplier <= 0.0 {
        return Err(policy.error(
            "backoffMultiplier",
            format!("must be above zero, got {backoff_multiplier}"),
        ));
    }
    if retryable_codes.is_empty() {
        return Err(policy.error("retryableStatusCodes", "must not be empty"));
    }
    Ok(RetryPolicy {
        max_attempts: attempts(policy, max_attempts)?,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_codes,
    })
}

fn hedging_policy(policy: &Obj<'_>) -> Result<HedgingPolicy> {
    let max_attempts = policy.required("maxAttempts", Obj::integer)?;
    Ok(HedgingPolicy {
        max_attempts: attempts(policy, max_attempts)?,
        // Zero sends every copy at once; A6 allows it and it is the default.
        hedging_delay: policy.duration("hedgingDelay")?.unwrap_or_default(),
        // Optional in service_config.proto: none means every non-OK status
        // ends the hedged call.
        non_fatal_codes: policy.codes("nonFatalStatusCodes")?.unwrap_or_default(),
    })
}

/// `maxAttempts`: at least 2. Values past `u32` saturate; the cap applied
/// later is far below anyway.
fn attempts(policy: &Obj<'_>, value: i128) -> Result<u32> {
    if value < 2 {
        return Err(policy.error("maxAttempts", format!("must be at least 2, got {value}")));
    }
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

fn retry_throttling(throttling: &Obj<'_>) -> Result<RetryThrottling> {
    let max_tokens = throttling.required("maxTokens", Obj::integer)?;
    let token_ratio = throttling.required("tokenRatio", Obj::number)?;
    let max_tokens = u32::try_from(max_tokens)
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| {
            throttling.error("maxTokens", format!("must be 1 to 1000, got {max_tokens}"))
        })?;
    if token_ratio <= 0.0 {
        return Err(throttling.error(
            "tokenRatio",
            format!("must be above zero, got {token_ratio}"),
        ));
    }
    // The spec keeps three decimal places. The tiny nudge stops a ratio
    // such as 0.007, stored as 0.00699999..., from losing its last digit.
    let thousandths = (token_ratio * 1000.0 + 1e-6).floor();
    if thousandths < 1.0 {
        return Err(throttling.error(
            "tokenRatio",
            format!("must be at least 0.001 (three decimal places are kept), got {token_ratio}"),
        ));
    }
    Ok(RetryThrottling {
        max_tokens,
        token_ratio: thousandths / 1000.0,
    })
}

/// A JSON object and its path, for reading fields with errors that name
/// them.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    /// `value` as an object, or an error naming `path`.
    fn of(value: &'a Value, path: String) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => Err(ServiceConfigError::new(
                path,
                format!("expected an object, got {}", describe(other)),
            )),
        }
    }

    /// The path of field `key`.
    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> ServiceConfigError {
        ServiceConfigError::new(self.at(key), reason)
    }

    fn wrong_type(&self, key: &str, expected: &str, got: &Value) -> ServiceConfigError {
        self.error(key, format!("expected {expected}, got {}", describe(got)))
    }

    /// Field `key`; `null` counts as absent, as in proto3 JSON.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Reads `key` with `read`, which must find it.
    fn required<T>(&self, key: &str, read: fn(&Self, &str) -> Result<Option<T>>) -> Result<T> {
        read(self, key)?.ok_or_else(|| self.error(key, "required, but missing"))
    }

    fn object(&self, key: &str) -> Result<Option<Obj<'a>>> {
        self.get(key).map(|v| Obj::of(v, self.at(key))).transpose()
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.wrong_type(key, "an array", other)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s)
                .map(Some)
                .map_err(|reason| self.error(key, format!("invalid duration {s:?}: {reason}"))),
            Some(other) => Err(self.wrong_type(key, "a duration string like \"1.5s\"", other)),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong_type(key, "a number", other)),
        }
    }

    /// A whole number. `4.0` counts, as in grpc-java; `4.5` does not.
    fn integer(&self, key: &str) -> Result<Option<i128>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let Value::Number(n) = value else {
            return Err(self.wrong_type(key, "a whole number", value));
        };
        let whole = n
            .as_u64()
            .map(i128::from)
            .or_else(|| n.as_i64().map(i128::from))
            .or_else(|| {
                // In range of i64, so the cast is exact.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                    .map(|f| f as i128)
            });
        whole
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "a whole number", value))
    }

    /// A list of status codes, by name or number. OK is refused: it is not
    /// a failure, so it can be neither retried nor non-fatal (grpc-java
    /// refuses it too).
    fn codes(&self, key: &str) -> Result<Option<CodeSet>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        let mut set = CodeSet::EMPTY;
        for (k, item) in items.iter().enumerate() {
            let path = self.at(&format!("{key}[{k}]"));
            let code = match item {
                Value::String(name) => code_from_name(name).ok_or_else(|| {
                    ServiceConfigError::new(
                        path.clone(),
                        format!(
                            "unknown status code {name:?}; expected a name like \"UNAVAILABLE\""
                        ),
                    )
                })?,
                Value::Number(n) => n.as_u64().and_then(code_from_number).ok_or_else(|| {
                    ServiceConfigError::new(
                        path.clone(),
                        format!("status code numbers are 0 to 16, got {n}"),
                    )
                })?,
                other => {
                    return Err(ServiceConfigError::new(
                        path,
                        format!(
                            "expected a status code name or number, got {}",
                            describe(other)
                        ),
                    ));
                }
            };
            if code == Code::Ok {
                return Err(ServiceConfigError::new(path, "OK is not a failure status"));
            }
            set = set.with(code);
        }
        Ok(Some(set))
    }
}

/// A value for an error message: scalars as written, containers by kind.
fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        scalar => scalar.to_string(),
    }
}
