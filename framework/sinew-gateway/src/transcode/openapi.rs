//! OpenAPI 3.0.3 from the bindings, with schemas in the proto3 JSON mapping.
//!
//! A variable with a sub-pattern (`{name=shelves/*}`) captures several
//! segments, which an OpenAPI path parameter cannot: its literal segments
//! go into the path, and each of its wildcards becomes a parameter named
//! after the literal before it (`/v1/shelves/{shelves}`), so a client built
//! from the document sends paths the gateway matches.

use std::collections::HashSet;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use super::{
    json::takes_text,
    routes::{Binding, BodyRule, singular_message},
    template::Segment,
};

const STATUS: &str = "google.rpc.Status";
const ANY: &str = "google.protobuf.Any";

/// See [`super::HttpRoutes::openapi`].
pub(crate) fn document(bindings: &[Binding], title: &str, version: &str) -> Json {
    let mut schemas = Schemas::default();
    let mut paths = Map::new();
    let mut operation_ids = HashSet::new();
    for binding in bindings {
        // Verbs other than these cannot be described.
        let verb = binding.verb().as_str().to_ascii_lowercase();
        if !matches!(
            &*verb,
            "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
        ) {
            continue;
        }
        let (path, mut parameters) = path_and_parameters(binding, &mut schemas);
        if binding.body != BodyRule::Whole {
            query_parameters(
                binding,
                &binding.method.input(),
                "",
                &mut Vec::new(),
                &mut schemas,
                &mut parameters,
            );
        }
        let operation = operation(binding, parameters, &mut operation_ids, &mut schemas);
        if let Json::Object(item) = paths.entry(path).or_insert_with(|| json!({})) {
            item.insert(verb, operation);
        }
    }
    schemas.insert_status();
    json!({
        "openapi": "3.0.3",
        "info": { "title": title, "version": version },
        "paths": paths,
        "components": { "schemas": schemas.map },
    })
}

/// The OpenAPI path of a binding, and its path parameters.
fn path_and_parameters(binding: &Binding, schemas: &mut Schemas) -> (String, Vec<Json>) {
    let template = &binding.template;
    let mut path = String::new();
    let mut parameters = Vec::new();
    // Wildcard parameters take names no variable has.
    let mut names: HashSet<String> = template
        .variables
        .iter()
        .map(|v| v.field_path.to_string())
        .collect();
    let mut i = 0;
    while i < template.segments.len() {
        let var = template
            .variables
            .iter()
            .zip(&binding.variables)
            .find(|(v, _)| v.start == i);
        // A variable of one `*`: one parameter, typed as its field.
        if let Some((var, bound)) =
            var.filter(|(v, _)| v.end - v.start == 1 && template.segments[i] == Segment::Single)
        {
            let leaf = &bound.fields[bound.fields.len() - 1];
            path.push_str(&format!("/{{{}}}", var.field_path));
            parameters.push(json!({
                "name": &*var.field_path,
                "in": "path",
                "required": true,
                "schema": schemas.kind(&leaf.kind()),
            }));
            i += 1;
            continue;
        }
        // Otherwise segment by segment, each wildcard a string parameter.
        let end = var.map_or(i + 1, |(v, _)| v.end);
        let pattern = var.map(|(v, _)| {
            let text: Vec<&str> = template.segments[v.start..v.end]
                .iter()
                .map(|s| match s {
                    Segment::Literal(text) => &**text,
                    Segment::Single => "*",
                    Segment::Multi => "**",
                })
                .collect();
            (v.field_path.clone(), text.join("/"))
        });
        for j in i..end {
            let name = match &template.segments[j] {
                Segment::Literal(text) => {
                    path.push('/');
                    path.push_str(text);
                    continue;
                }
                wildcard => {
                    let base = match j.checked_sub(1).map(|k| &template.segments[k]) {
                        Some(Segment::Literal(text)) => text.to_string(),
                        _ => "segment".to_owned(),
                    };
                    let name = (1..)
                        .map(|n| {
                            if n == 1 {
                                base.clone()
                            } else {
                                format!("{base}_{n}")
                            }
                        })
                        .find(|name| !names.contains(name))
                        .unwrap_or(base);
                    names.insert(name.clone());
                    let mut description = match &pattern {
                        Some((field, text)) => {
                            format!("Part of `{field}`, which matches `{text}`.")
                        }
                        None => "Not bound to a field.".to_owned(),
                    };
                    if *wildcard == Segment::Multi {
                        description.push_str(" May span several segments.");
                    }
                    parameters.push(json!({
                        "name": name,
                        "in": "path",
                        "required": true,
                        "description": description,
                        "schema": { "type": "string" },
                    }));
                    name
                }
            };
            path.push_str(&format!("/{{{name}}}"));
        }
        i = end;
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(verb);
    }
    (path, parameters)
}

/// One query parameter per field a query can set, that the path and body
/// do not bind, through nested messages (`filter.pages.min`).
fn query_parameters(
    binding: &Binding,
    message: &MessageDescriptor,
    prefix: &str,
    visiting: &mut Vec<String>,
    schemas: &mut Schemas,
    out: &mut Vec<Json>,
) {
    visiting.push(message.full_name().to_owned());
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        let in_body =
            matches!(&binding.body, BodyRule::Field(body) if prefix.is_empty() && *body == field);
        let in_path = |var: &str| var == name || name.starts_with(&format!("{var}."));
        if in_body || field.is_map() || binding.variables.iter().any(|v| in_path(&v.name)) {
            continue;
        }
        if takes_text(&field) {
            out.push(json!({ "name": name, "in": "query", "schema": schemas.field(&field) }));
        } else if let Some(nested) = singular_message(&field)
            && !visiting.iter().any(|v| v == nested.full_name())
        {
            query_parameters(
                binding,
                &nested,
                &format!("{name}."),
                visiting,
                schemas,
                out,
            );
        }
    }
    visiting.pop();
}

/// The operation object of a binding.
fn operation(
    binding: &Binding,
    parameters: Vec<Json>,
    operation_ids: &mut HashSet<String>,
    schemas: &mut Schemas,
) -> Json {
    let method = binding.method();
    let service = method.parent_service();
    let mut id = format!("{}_{}", service.name(), method.name());
    if binding.index > 0 {
        id.push_str(&format!("_{}", binding.index));
    }
    if !operation_ids.insert(id.clone()) {
        // The same service name in another package.
        id = format!("{}_{}", service.full_name().replace('.', "_"), id);
        operation_ids.insert(id.clone());
    }

    let response = match &binding.response_body {
        Some(field) => schemas.field(field),
        None => schemas.message(&method.output()),
    };
    let ok = if binding.is_server_streaming() {
        json!({
            "description": "A stream of responses: one JSON value per line (NDJSON), or per event (server-sent events).",
            "content": {
                "application/x-ndjson": { "schema": response },
                "text/event-stream": { "schema": response },
            },
        })
    } else {
        json!({ "description": "OK", "content": { "application/json": { "schema": response } } })
    };
    let mut operation = json!({
        "operationId": id,
        "tags": [service.full_name()],
        "description": format!("gRPC `{}`.", binding.grpc_path()),
        "parameters": Json::Array(parameters),
        "responses": {
            "200": ok,
            "default": {
                "description": "An error.",
                "content": { "application/json": { "schema": reference(STATUS) } },
            },
        },
    });
    let body = match &binding.body {
        BodyRule::None => None,
        BodyRule::Whole => Some(schemas.message(&method.input())),
        BodyRule::Field(field) => Some(schemas.field(field)),
    };
    if let (Some(body), Json::Object(operation)) = (body, &mut operation) {
        operation.insert(
            "requestBody".into(),
            json!({ "content": { "application/json": { "schema": body } } }),
        );
    }
    operation
}

fn reference(name: &str) -> Json {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `components/schemas`: a schema per message and enum met, by full name.
#[derive(Default)]
struct Schemas {
    map: Map<String, Json>,
}

impl Schemas {
    /// The schema of a field: its kind, in a list or a map if it is one.
    fn field(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::Message(entry) if field.is_map() => {
                json!({ "type": "object", "additionalProperties": self.kind(&entry.map_entry_value_field().kind()) })
            }
            kind if field.is_list() => json!({ "type": "array", "items": self.kind(&kind) }),
            kind => self.kind(&kind),
        }
    }

    /// The schema of one value of `kind`, as the JSON mapping writes it.
    fn kind(&mut self, kind: &Kind) -> Json {
        match kind {
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
            }
            // 64-bit integers are strings, so JavaScript does not round them.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({ "type": "string", "format": "int64" })
            }
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "format": "byte" }),
            Kind::Enum(desc) => {
                let names: Vec<String> = desc.values().map(|v| v.name().to_owned()).collect();
                self.map
                    .entry(desc.full_name())
                    .or_insert_with(|| json!({ "type": "string", "enum": names }));
                reference(desc.full_name())
            }
            Kind::Message(desc) => self.message(desc),
        }
    }

    /// A message: a well-known type inline, anything else by reference.
    fn message(&mut self, desc: &MessageDescriptor) -> Json {
        if let Some(schema) = self.well_known(desc) {
            return schema;
        }
        let name = desc.full_name();
        if !self.map.contains_key(name) {
            // In first, so a recursive message refers to itself.
            self.map.insert(name.to_owned(), json!({}));
            let properties: Map<String, Json> = desc
                .fields()
                .map(|f| (f.json_name().to_owned(), self.field(&f)))
                .collect();
            self.map.insert(
                name.to_owned(),
                json!({ "type": "object", "properties": properties }),
            );
        }
        reference(name)
    }

    /// The well-known types, as the JSON mapping writes them.
    fn well_known(&mut self, desc: &MessageDescriptor) -> Option<Json> {
        let schema = match desc.full_name().strip_prefix("google.protobuf.")? {
            "Timestamp" => json!({ "type": "string", "format": "date-time" }),
            "Duration" => json!({
                "type": "string",
                "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
                "example": "1.5s",
            }),
            "FieldMask" => json!({
                "type": "string",
                "description": "Comma-separated field paths, lowerCamelCase.",
            }),
            "Struct" => json!({ "type": "object", "additionalProperties": true }),
            "Value" => json!({}),
            "ListValue" => json!({ "type": "array", "items": {} }),
            "Empty" => json!({ "type": "object" }),
            "Any" => {
                self.insert_any();
                reference(ANY)
            }
            "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
            | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => {
                let value = desc.get_field_by_name("value")?;
                let mut schema = self.kind(&value.kind());
                if let Json::Object(schema) = &mut schema {
                    schema.insert("nullable".into(), true.into());
                }
                schema
            }
            _ => return None,
        };
        Some(schema)
    }

    fn insert_any(&mut self) {
        self.map.entry(ANY).or_insert_with(|| {
            json!({
                "type": "object",
                "description": "A message of the type `@type` names, its fields beside `@type` (or its JSON under `value` for a well-known type).",
                "properties": { "@type": { "type": "string" } },
                "required": ["@type"],
                "additionalProperties": true,
            })
        });
    }

    /// `google.rpc.Status`, the body of every error.
    fn insert_status(&mut self) {
        self.insert_any();
        self.map.insert(
            STATUS.to_owned(),
            json!({
                "type": "object",
                "properties": {
                    "code": { "type": "integer", "format": "int32", "description": "The gRPC status code." },
                    "message": { "type": "string" },
                    "details": { "type": "array", "items": reference(ANY) },
                },
            }),
        );
    }
}
