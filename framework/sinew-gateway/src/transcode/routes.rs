//! The bindings of a set of services, and finding one for a request.

use std::{collections::HashMap, sync::Arc};

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, Value,
};

use super::{RouteError, TranscodeError, json, openapi, template::Template};

/// All HTTP bindings of the services in a pool.
#[derive(Debug, Clone)]
pub struct HttpRoutes {
    bindings: Vec<Binding>,
    /// For each verb, indexes into `bindings`, most specific template first.
    by_verb: HashMap<Method, Vec<usize>>,
}

/// One HTTP binding of one method.
#[derive(Debug, Clone)]
pub struct Binding {
    pub(crate) method: MethodDescriptor,
    grpc_path: String,
    verb: Method,
    template_text: String,
    pub(crate) template: Template,
    /// The template's variables, in order, with the fields they set.
    pub(crate) variables: Vec<BoundVariable>,
    pub(crate) body: BodyRule,
    pub(crate) response_body: Option<FieldDescriptor>,
    /// 0 for the rule itself, `n` for its `n`th additional binding.
    pub(crate) index: usize,
}

/// Where a binding's request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyRule {
    /// No body is accepted.
    None,
    /// `*`: the body is the whole request message.
    Whole,
    /// The body is this top-level request field.
    Field(FieldDescriptor),
}

/// A template variable and the request fields it leads to.
#[derive(Debug, Clone)]
pub(crate) struct BoundVariable {
    /// The field path as written (proto field names), e.g. `book.name`.
    pub(crate) name: Arc<str>,
    /// The fields along it; the last one takes the value.
    pub(crate) fields: Vec<FieldDescriptor>,
}

/// What the path variables of a matched binding captured, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    values: Vec<(Arc<str>, String)>,
}

// === impl HttpRoutes ===

impl HttpRoutes {
    /// Bindings of every method of `services` (full names) found in `pool`,
    /// from their `google.api.http` option (plus additional_bindings); a
    /// method with none gets `POST /package.Service/Method` with body `*`.
    ///
    /// A template that does not parse, or a body, response_body or variable
    /// naming a field that does not exist, is an error naming the method and
    /// the template. Two bindings with the same verb and the same template
    /// (variable names aside, as they match the same paths): an error.
    pub fn new(pool: &DescriptorPool, services: &[&str]) -> Result<Self, RouteError> {
        let http = pool.get_extension_by_name("google.api.http");
        let mut bindings = Vec::new();
        for &name in services {
            let service = pool
                .get_service_by_name(name)
                .ok_or_else(|| RouteError::UnknownService(name.to_owned()))?;
            for method in service.methods() {
                match http_rule(&method, http.as_ref()) {
                    Some(rule) => rule_bindings(&method, &rule, &mut bindings)?,
                    None => {
                        let path = grpc_path(&method);
                        bindings.push(Binding::new(&method, Method::POST, &path, "*", "", 0)?);
                    }
                }
            }
        }

        let mut shapes: HashMap<(Method, String), usize> = HashMap::new();
        let mut by_verb: HashMap<Method, Vec<usize>> = HashMap::new();
        for (i, binding) in bindings.iter().enumerate() {
            let key = (binding.verb.clone(), binding.template.shape());
            if let Some(&first) = shapes.get(&key) {
                return Err(RouteError::Conflict {
                    verb: binding.verb.to_string(),
                    template: binding.template_text.clone(),
                    first: bindings[first].method.full_name().to_owned(),
                    second: binding.method.full_name().to_owned(),
                });
            }
            shapes.insert(key, i);
            by_verb.entry(binding.verb.clone()).or_default().push(i);
        }
        for indexes in by_verb.values_mut() {
            indexes.sort_by(|&a, &b| bindings[a].template.specificity(&bindings[b].template));
        }
        Ok(Self { bindings, by_verb })
    }

    /// The binding for this verb and path (no query), with the captured
    /// variables (percent-decoded). The most specific template wins.
    pub fn find(&self, method: &Method, path: &str) -> Option<(&Binding, Captures)> {
        let mut segments = Vec::new();
        self.by_verb.get(method)?.iter().find_map(|&i| {
            let binding = &self.bindings[i];
            let values = binding.template.matches(path, &mut segments)?;
            let names = binding.variables.iter().map(|v| Arc::clone(&v.name));
            Some((
                binding,
                Captures {
                    values: names.zip(values).collect(),
                },
            ))
        })
    }

    /// Every binding (for docs, listing), in the order of the services and
    /// methods given.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter()
    }

    /// An OpenAPI 3.0.3 document describing every binding: paths and their
    /// parameters, request bodies, responses (NDJSON and server-sent events
    /// for server streaming), errors as `google.rpc.Status`, and a schema
    /// for every message and enum reachable, following the proto3 JSON
    /// mapping.
    pub fn openapi(&self, title: &str, version: &str) -> serde_json::Value {
        openapi::document(&self.bindings, title, version)
    }
}

/// The method's `google.api.http` rule, if it has one.
fn http_rule(
    method: &MethodDescriptor,
    http: Option<&ExtensionDescriptor>,
) -> Option<DynamicMessage> {
    let http = http?;
    let options = method.options();
    if !options.has_extension(http) {
        return None;
    }
    options.get_extension(http).as_message().cloned()
}

/// The bindings of one rule: its own, then its additional ones.
fn rule_bindings(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    out: &mut Vec<Binding>,
) -> Result<(), RouteError> {
    let extra = rule.get_field_by_name("additional_bindings");
    let extra = extra
        .as_deref()
        .and_then(Value::as_list)
        .unwrap_or_default();
    let rules = std::iter::once(rule).chain(extra.iter().filter_map(Value::as_message));
    for (index, rule) in rules.enumerate() {
        let error = |template: &str, reason: &str| RouteError::Binding {
            method: method.full_name().to_owned(),
            template: template.to_owned(),
            reason: reason.to_owned(),
        };
        let verbs = [
            ("get", Method::GET),
            ("put", Method::PUT),
            ("post", Method::POST),
            ("delete", Method::DELETE),
            ("patch", Method::PATCH),
        ];
        let (verb, template) = if let Some((name, verb)) = verbs
            .into_iter()
            .find(|(name, _)| rule.has_field_by_name(name))
        {
            (verb, string_field(rule, name))
        } else if let Some(custom) = rule
            .get_field_by_name("custom")
            .filter(|_| rule.has_field_by_name("custom"))
            .and_then(|custom| custom.as_message().cloned())
        {
            let template = string_field(&custom, "path");
            let verb = Method::from_bytes(string_field(&custom, "kind").as_bytes())
                .map_err(|_| error(&template, "the custom kind is not an HTTP method"))?;
            (verb, template)
        } else {
            return Err(error("", "the rule sets no pattern"));
        };
        let nested = rule.get_field_by_name("additional_bindings");
        if index > 0
            && nested
                .as_deref()
                .and_then(Value::as_list)
                .is_some_and(|l| !l.is_empty())
        {
            return Err(error(
                &template,
                "an additional binding has bindings of its own",
            ));
        }
        let body = string_field(rule, "body");
        let response_body = string_field(rule, "response_body");
        out.push(Binding::new(
            method,
            verb,
            &template,
            &body,
            &response_body,
            index,
        )?);
    }
    Ok(())
}

/// A string field of a rule, empty if unset.
fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

// === impl Binding ===

impl Binding {
    /// Parses the template and resolves every field the binding names.
    fn new(
        method: &MethodDescriptor,
        verb: Method,
        template_text: &str,
        body: &str,
        response_body: &str,
        index: usize,
    ) -> Result<Self, RouteError> {
        let error = |reason: String| RouteError::Binding {
            method: method.full_name().to_owned(),
            template: template_text.to_owned(),
            reason,
        };
        let template = Template::parse(template_text).map_err(error)?;
        let input = method.input();
        let variables = template
            .variables
            .iter()
            .map(|var| {
                let fields = variable_fields(&input, &var.field_path).map_err(error)?;
                Ok(BoundVariable {
                    name: Arc::from(&*var.field_path),
                    fields,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = match body {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            name => BodyRule::Field(top_level_field(&input, name, "body").map_err(error)?),
        };
        let response_body = match response_body {
            "" => None,
            name => Some(top_level_field(&method.output(), name, "response_body").map_err(error)?),
        };
        Ok(Self {
            method: method.clone(),
            grpc_path: grpc_path(method),
            verb,
            template_text: template_text.to_owned(),
            template,
            variables,
            body,
            response_body,
            index,
        })
    }

    /// The method this binding calls.
    pub fn method(&self) -> &MethodDescriptor {
        &self.method
    }

    /// The gRPC path `/package.Service/Method`.
    pub fn grpc_path(&self) -> &str {
        &self.grpc_path
    }

    /// The HTTP verb.
    pub fn verb(&self) -> &Method {
        &self.verb
    }

    /// The path template as written, e.g. `/v1/{name=shelves/*}`.
    pub fn template(&self) -> &str {
        &self.template_text
    }

    /// Where the body goes: `None` for no body, `Some("*")` for the whole
    /// request message, or the name of a request field.
    pub fn body(&self) -> Option<&str> {
        match &self.body {
            BodyRule::None => None,
            BodyRule::Whole => Some("*"),
            BodyRule::Field(field) => Some(field.name()),
        }
    }

    /// The response field sent as the response body, if not the whole
    /// response message.
    pub fn response_body(&self) -> Option<&str> {
        self.response_body.as_ref().map(FieldDescriptor::name)
    }

    /// Whether the method streams its responses.
    pub fn is_server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// The request message: the body JSON (all of it for `*`, into the
    /// named field for a field; none is allowed when the binding has no
    /// body), then the path variables (nested field paths `a.b`), then the
    /// query parameters (`?a.b=1&tags=x&tags=y`: only fields the path and
    /// body do not bind; repeated fields by repetition; enums by name or
    /// number; bools, numbers, strings, base64 bytes, and the well-known
    /// types Timestamp, Duration, FieldMask and the wrappers by their JSON
    /// string form).
    ///
    /// Unknown query parameters and JSON that does not fit the message are
    /// an error naming the field and the type it expects; see
    /// [`TranscodeError::code`]. Unknown JSON fields are an error.
    pub fn request(
        &self,
        captures: &Captures,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<DynamicMessage, TranscodeError> {
        json::request(self, captures, query, body)
    }

    /// The JSON of a response message (of its `response_body` field, if the
    /// binding has one) in the proto3 JSON mapping: lowerCamelCase names,
    /// fields with default values left out unless `emit_defaults`.
    pub fn response_json(
        &self,
        response: &DynamicMessage,
        emit_defaults: bool,
    ) -> Result<Vec<u8>, TranscodeError> {
        json::response(self, response, emit_defaults)
    }
}

/// The fields along a variable's field path: singular messages, then a
/// field that can take a value from text.
fn variable_fields(input: &MessageDescriptor, path: &str) -> Result<Vec<FieldDescriptor>, String> {
    let mut message = input.clone();
    let mut fields = Vec::new();
    for name in path.split('.') {
        if let Some(last) = fields.last() {
            message = match singular_message(last) {
                Some(next) => next,
                None => {
                    return Err(format!(
                        "`{path}`: `{}` is not a singular message field",
                        last.name()
                    ));
                }
            };
        }
        let field = message
            .get_field_by_name(name)
            .ok_or_else(|| format!("`{path}`: {} has no field `{name}`", message.full_name()))?;
        fields.push(field);
    }
    match fields.last() {
        Some(leaf) if !leaf.is_list() && !leaf.is_map() && json::takes_text(leaf) => Ok(fields),
        _ => Err(format!("`{path}` must name a singular scalar field")),
    }
}

/// The message of a singular (not repeated, not map) message field.
pub(crate) fn singular_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(message) if !field.is_list() && !field.is_map() => Some(message),
        _ => None,
    }
}

fn top_level_field(
    message: &MessageDescriptor,
    name: &str,
    what: &str,
) -> Result<FieldDescriptor, String> {
    message
        .get_field_by_name(name)
        .ok_or_else(|| format!("{what} `{name}`: {} has no such field", message.full_name()))
}

// === impl Captures ===

impl Captures {
    /// The value of a variable, by its field path as the template writes it.
    pub fn get(&self, field_path: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(name, _)| &**name == field_path)
            .map(|(_, value)| value.as_str())
    }

    /// Every variable and its value, in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(name, value)| (&**name, value.as_str()))
    }

    /// The number of variables.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the template has no variables.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
