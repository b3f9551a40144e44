//! Reads and checks sinew's `(sinew.method)` option on every method, and
//! the `(sinew.service)` defaults of its service.
//!
//! protox already rejects options that do not exist or have the wrong type.
//! What is left for this module is what protobuf cannot say: that a
//! duration parses, that a status code name is real, that hedging is only
//! asked of methods without side effects, that a compensation can undo the
//! method that names it. Each failure names the file and line of the
//! method it is on.

use std::{collections::HashMap, time::Duration};

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};
use prost_types::method_options::IdempotencyLevel;

use crate::{Error, source::SourceMap};

/// The name of sinew's method option extension.
const METHOD_EXTENSION: &str = "sinew.method";

/// The name of sinew's service option extension.
const SERVICE_EXTENSION: &str = "sinew.service";

/// The gRPC status codes by their canonical names, with the variant of
/// `tonic::Code` each is.
const STATUS_CODES: &[(&str, &str)] = &[
    ("OK", "Ok"),
    ("CANCELLED", "Cancelled"),
    ("UNKNOWN", "Unknown"),
    ("INVALID_ARGUMENT", "InvalidArgument"),
    ("DEADLINE_EXCEEDED", "DeadlineExceeded"),
    ("NOT_FOUND", "NotFound"),
    ("ALREADY_EXISTS", "AlreadyExists"),
    ("PERMISSION_DENIED", "PermissionDenied"),
    ("RESOURCE_EXHAUSTED", "ResourceExhausted"),
    ("FAILED_PRECONDITION", "FailedPrecondition"),
    ("ABORTED", "Aborted"),
    ("OUT_OF_RANGE", "OutOfRange"),
    ("UNIMPLEMENTED", "Unimplemented"),
    ("INTERNAL", "Internal"),
    ("UNAVAILABLE", "Unavailable"),
    ("DATA_LOSS", "DataLoss"),
    ("UNAUTHENTICATED", "Unauthenticated"),
];

/// A method's policy, checked and ready to be written out.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Policy {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<Retry>,
    pub(crate) hedging: Option<Hedging>,
    /// The full path of the compensating method, and whether it takes the
    /// action's response (rather than its request).
    pub(crate) compensated_by: Option<(String, bool)>,
    /// Who may call: the method's own `auth`, or its service's.
    pub(crate) auth: Option<Auth>,
}

/// A checked `sinew.Access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    Public,
    /// Every one required; none: any authenticated caller.
    Scopes(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retry {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) backoff_multiplier: f64,
    /// Variant names of `tonic::Code`.
    pub(crate) retryable_codes: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hedging {
    pub(crate) max_attempts: u32,
    pub(crate) hedging_delay: Duration,
    /// Variant names of `tonic::Code`.
    pub(crate) non_fatal_codes: Vec<&'static str>,
}

/// The checked policy of every method that has one, by full path
/// (`/pkg.Service/Method`).
pub(crate) fn read_policies(
    pool: &DescriptorPool,
    files: &[String],
    sources: &SourceMap,
) -> Result<HashMap<String, Policy>, Error> {
    let mut policies = HashMap::new();
    let Some(extension) = pool.get_extension_by_name(METHOD_EXTENSION) else {
        // No contract imports sinew/options.proto: nothing to read.
        return Ok(policies);
    };
    let service_extension = pool.get_extension_by_name(SERVICE_EXTENSION);
    for name in files {
        let Some(file) = pool.get_file_by_name(name) else {
            continue;
        };
        for service in file.services() {
            // The service's default access, for methods without their own.
            let default_auth = match &service_extension {
                Some(extension) if service.options().has_extension(extension) => {
                    let options = service.options();
                    let value = options.get_extension(extension);
                    match value.as_ref() {
                        Value::Message(message) => match message_field(message, "auth") {
                            Some(auth) => Some(read_auth(&auth).map_err(|reason| {
                                service_error(&service, extension.number(), sources, &reason)
                            })?),
                            None => None,
                        },
                        _ => None,
                    }
                }
                _ => None,
            };
            for method in service.methods() {
                let options = method.options();
                let mut policy = if options.has_extension(&extension) {
                    let value = options.get_extension(&extension);
                    let Value::Message(message) = value.as_ref() else {
                        continue;
                    };
                    let reader = Reader {
                        method: &method,
                        option: extension.number(),
                        sources,
                    };
                    reader.policy(message)?
                } else {
                    Policy::default()
                };
                if policy.auth.is_none() {
                    policy.auth.clone_from(&default_auth);
                }
                if policy != Policy::default() {
                    let path = format!("/{}/{}", service.full_name(), method.name());
                    policies.insert(path, policy);
                }
            }
        }
    }
    Ok(policies)
}

/// Reads one method's option, and reports errors at that method.
struct Reader<'a> {
    method: &'a MethodDescriptor,
    /// The field number of `(sinew.method)`, to find it in the source.
    option: u32,
    sources: &'a SourceMap,
}

impl Reader<'_> {
    fn policy(&self, message: &DynamicMessage) -> Result<Policy, Error> {
        let timeout = match string_field(message, "timeout") {
            Some(text) => Some(self.duration("timeout", &text, false)?),
            None => None,
        };
        let retry = match message_field(message, "retry") {
            Some(retry) => Some(self.retry(&retry)?),
            None => None,
        };
        let hedging = match message_field(message, "hedging") {
            Some(hedging) => Some(self.hedging(&hedging)?),
            None => None,
        };
        if retry.is_some() && hedging.is_some() {
            return Err(self.error("a method takes `retry` or `hedging`, not both"));
        }
        let compensated_by = match string_field(message, "compensated_by") {
            Some(name) => Some(self.compensation(&name)?),
            None => None,
        };
        let auth = match message_field(message, "auth") {
            Some(auth) => Some(read_auth(&auth).map_err(|reason| self.error(reason))?),
            None => None,
        };
        Ok(Policy {
            timeout,
            retry,
            hedging,
            compensated_by,
            auth,
        })
    }

    /// Checks that the method called `name` can undo this one, and returns
    /// its full path and whether it takes the action's response.
    ///
    /// A compensation may itself declare `compensated_by`: a saga never
    /// compensates a compensation, and symmetric pairs (`Enable` undone by
    /// `Disable`, `Disable` undone by `Enable`) are legitimate.
    fn compensation(&self, name: &str) -> Result<(String, bool), Error> {
        let action = self.method;
        let service = action.parent_service();
        if name.contains(['.', '/']) {
            return Err(self.error(format!(
                "compensated_by: {name:?} is not a method name; write the bare name of a \
                 method of {} (such as \"Refund\")",
                service.full_name()
            )));
        }
        if name == action.name() {
            return Err(self.error(
                "compensated_by: a method cannot compensate itself; name the method that \
                 undoes it",
            ));
        }
        if level(action) == IdempotencyLevel::NoSideEffects {
            return Err(self.error(
                "compensated_by: the method is marked NO_SIDE_EFFECTS, so there is nothing \
                 to undo",
            ));
        }
        let Some(compensation) = service.methods().find(|m| m.name() == name) else {
            let names: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
            return Err(self.error(format!(
                "compensated_by: service {} has no method {name:?} (its methods: {})",
                service.full_name(),
                names.join(", ")
            )));
        };
        for (method, role) in [(action, "the method"), (&compensation, "its compensation")] {
            let streams = match (method.is_client_streaming(), method.is_server_streaming()) {
                (false, false) => continue,
                (true, false) => "its requests",
                (false, true) => "its responses",
                (true, true) => "its requests and responses",
            };
            return Err(self.error(format!(
                "compensated_by: a saga step is one unary call, but {role} {} streams {streams}",
                method.name()
            )));
        }
        match level(&compensation) {
            IdempotencyLevel::Idempotent => {}
            IdempotencyLevel::NoSideEffects => {
                return Err(self.error(format!(
                    "compensated_by: {name} is marked NO_SIDE_EFFECTS, so it would undo \
                     nothing; a compensation changes state and is retried until it \
                     succeeds, so mark it `option idempotency_level = IDEMPOTENT`"
                )));
            }
            IdempotencyLevel::IdempotencyUnknown => {
                return Err(self.error(format!(
                    "compensated_by: {name} is retried until it succeeds, so it must be \
                     marked `option idempotency_level = IDEMPOTENT`"
                )));
            }
        }
        let takes = compensation.input();
        let (request, response) = (action.input(), action.output());
        if takes != request && takes != response {
            return Err(self.error(format!(
                "compensated_by: {name} takes {}, but a saga builds the compensation's \
                 request from the method's request ({}) or response ({}); make {name} take \
                 one of those",
                takes.full_name(),
                request.full_name(),
                response.full_name(),
            )));
        }
        // One type for both: the request (either would do).
        let takes_response = takes != request;
        Ok((format!("/{}/{}", service.full_name(), name), takes_response))
    }

    fn retry(&self, message: &DynamicMessage) -> Result<Retry, Error> {
        let max_attempts = self.attempts(message, "retry.max_attempts")?;
        let initial_backoff = self.required_duration(message, "retry", "initial_backoff")?;
        let max_backoff = self.required_duration(message, "retry", "max_backoff")?;
        if max_backoff < initial_backoff {
            return Err(self.error(format!(
                "retry.max_backoff ({}) is below retry.initial_backoff ({})",
                humantime::format_duration(max_backoff),
                humantime::format_duration(initial_backoff),
            )));
        }
        let backoff_multiplier = message
            .get_field_by_name("backoff_multiplier")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        if !(backoff_multiplier.is_finite() && backoff_multiplier > 0.0) {
            return Err(self.error(format!(
                "retry.backoff_multiplier must be above 0, not {backoff_multiplier}"
            )));
        }
        let retryable_codes = self.codes(message, "retry", "retryable_status_codes")?;
        if retryable_codes.is_empty() {
            return Err(self.error("retry.retryable_status_codes must name at least one code"));
        }
        Ok(Retry {
            max_attempts,
            initial_backoff,
            max_backoff,
            backoff_multiplier,
            retryable_codes,
        })
    }

    fn hedging(&self, message: &DynamicMessage) -> Result<Hedging, Error> {
        if level(self.method) != IdempotencyLevel::NoSideEffects {
            return Err(self.error(
                "hedging sends a request more than once; it is allowed only on methods \
                 with `option idempotency_level = NO_SIDE_EFFECTS`",
            ));
        }
        let max_attempts = self.attempts(message, "hedging.max_attempts")?;
        let hedging_delay = match string_field(message, "hedging_delay") {
            Some(text) => self.duration("hedging.hedging_delay", &text, true)?,
            None => Duration::ZERO,
        };
        let non_fatal_codes = self.codes(message, "hedging", "non_fatal_status_codes")?;
        Ok(Hedging {
            max_attempts,
            hedging_delay,
            non_fatal_codes,
        })
    }

    fn attempts(&self, message: &DynamicMessage, key: &str) -> Result<u32, Error> {
        let value = message
            .get_field_by_name("max_attempts")
            .and_then(|v| v.as_u32())
            .unwrap_or(0);
        if value < 2 {
            return Err(self.error(format!("{key} must be at least 2, not {value}")));
        }
        Ok(value)
    }

    fn required_duration(
        &self,
        message: &DynamicMessage,
        parent: &str,
        field: &str,
    ) -> Result<Duration, Error> {
        match string_field(message, field) {
            Some(text) => self.duration(&format!("{parent}.{field}"), &text, false),
            None => Err(self.error(format!("{parent}.{field} is required"))),
        }
    }

    fn duration(&self, key: &str, text: &str, zero_ok: bool) -> Result<Duration, Error> {
        let duration = humantime::parse_duration(text).map_err(|e| {
            self.error(format!(
                "{key}: {text:?} is not a duration ({e}); write it like \"250ms\" or \"2s\""
            ))
        })?;
        if duration.is_zero() && !zero_ok {
            return Err(self.error(format!("{key} must be above zero")));
        }
        Ok(duration)
    }

    fn codes(
        &self,
        message: &DynamicMessage,
        parent: &str,
        field: &str,
    ) -> Result<Vec<&'static str>, Error> {
        let Some(value) = message.get_field_by_name(field) else {
            return Ok(Vec::new());
        };
        let Some(list) = value.as_list() else {
            return Ok(Vec::new());
        };
        list.iter()
            .filter_map(Value::as_str)
            .map(|name| {
                STATUS_CODES
                    .iter()
                    .find(|(canonical, _)| canonical.eq_ignore_ascii_case(name))
                    .map(|(_, variant)| *variant)
                    .ok_or_else(|| {
                        self.error(format!(
                            "{parent}.{field}: {name:?} is not a gRPC status code \
                             (expected a name such as \"UNAVAILABLE\")"
                        ))
                    })
            })
            .collect()
    }

    fn error(&self, reason: impl std::fmt::Display) -> Error {
        let file = self.method.parent_file();
        let (line, column) = self
            .sources
            .method_position(&file, self.method.path(), self.option)
            .unzip();
        Error::contract(
            self.sources.display_path(file.name()),
            line,
            column,
            format!("method {}: {reason}", self.method.full_name()),
        )
    }
}

/// Checks a `sinew.Access`: public or scoped, not both; each scope an
/// OAuth 2.0 scope token (printable ASCII but space, `"` and `\`), listed
/// once.
fn read_auth(message: &DynamicMessage) -> Result<Auth, String> {
    let public = message
        .get_field_by_name("public")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let scopes: Vec<String> = message
        .get_field_by_name("scopes")
        .and_then(|v| {
            v.as_list().map(|list| {
                list.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    if public && !scopes.is_empty() {
        return Err(format!(
            "auth: a public method needs no scope, but it lists {scopes:?}; \
             write `public: true` or `scopes`, not both"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for scope in &scopes {
        let well_formed = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !well_formed {
            return Err(format!(
                "auth.scopes: {scope:?} is not a scope: use printable ASCII without \
                 spaces, quotes or backslashes, such as \"orders.write\""
            ));
        }
        if !seen.insert(scope) {
            return Err(format!("auth.scopes: {scope:?} is listed twice"));
        }
    }
    Ok(if public {
        Auth::Public
    } else {
        Auth::Scopes(scopes)
    })
}

/// An error at a service's `(sinew.service)` option.
fn service_error(
    service: &prost_reflect::ServiceDescriptor,
    option: u32,
    sources: &SourceMap,
    reason: &str,
) -> Error {
    let file = service.parent_file();
    // ServiceDescriptorProto.options is field 3.
    let (line, column) = sources
        .option_position(&file, service.path(), 3, option)
        .unzip();
    Error::contract(
        sources.display_path(file.name()),
        line,
        column,
        format!("service {}: {reason}", service.full_name()),
    )
}

/// The `idempotency_level` a method declares.
fn level(method: &MethodDescriptor) -> IdempotencyLevel {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .map_or(IdempotencyLevel::IdempotencyUnknown, |o| {
            o.idempotency_level()
        })
}

fn string_field(message: &DynamicMessage, name: &str) -> Option<String> {
    if !message.has_field_by_name(name) {
        return None;
    }
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn message_field(message: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !message.has_field_by_name(name) {
        return None;
    }
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_message().cloned())
}
