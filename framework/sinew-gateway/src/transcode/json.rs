//! Requests from body, path and query; responses to JSON.
//!
//! JSON goes through `prost-reflect`'s proto3 JSON mapping. Its errors do
//! not say where in the document they are, so when a body does not fit, it
//! is tried again one field at a time to name the field that does not.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, SerializeOptions, Value,
};
use serde_json::Value as Json;

use super::{
    TranscodeError,
    routes::{Binding, BodyRule, Captures, singular_message},
    template::percent_decode,
};

/// See [`Binding::request`].
pub(crate) fn request(
    binding: &Binding,
    captures: &Captures,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, TranscodeError> {
    let input = binding.method.input();
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match &binding.body {
        BodyRule::None if !blank => {
            return Err(TranscodeError::Body(format!(
                "{} {} takes no request body",
                binding.verb(),
                binding.template()
            )));
        }
        BodyRule::None => DynamicMessage::new(input),
        BodyRule::Whole if blank => DynamicMessage::new(input),
        BodyRule::Whole => read_message(&input, body, "")?,
        BodyRule::Field(field) => {
            let mut message = DynamicMessage::new(input);
            if !blank {
                message.set_field(field, read_field(field, body)?);
            }
            message
        }
    };

    for var in &binding.variables {
        let text = captures
            .get(&var.name)
            .ok_or_else(|| TranscodeError::Path(format!("no value for `{}`", var.name)))?;
        let value = text_value(&var.fields, text).map_err(TranscodeError::Path)?;
        set_path(&mut message, &var.fields, value);
    }

    if let Some(query) = query {
        apply_query(binding, &mut message, query).map_err(TranscodeError::Query)?;
    }
    Ok(message)
}

/// See [`Binding::response_json`].
pub(crate) fn response(
    binding: &Binding,
    response: &DynamicMessage,
    emit_defaults: bool,
) -> Result<Vec<u8>, TranscodeError> {
    let output = binding.method.output();
    if response.descriptor() != output {
        return Err(TranscodeError::Response(format!(
            "expected a {}, got a {}",
            output.full_name(),
            response.descriptor().full_name()
        )));
    }
    let options = SerializeOptions::new().skip_default_fields(!emit_defaults);
    let error = |err: serde_json::Error| TranscodeError::Response(err.to_string());
    let Some(field) = &binding.response_body else {
        let mut out = serde_json::Serializer::new(Vec::new());
        response
            .serialize_with_options(&mut out, &options)
            .map_err(error)?;
        return Ok(out.into_inner());
    };
    // Only one field: serialize a message holding just it, and take it out.
    // A field left out for having its default value is serialized again,
    // defaults included (it is empty or a scalar, so nothing else changes).
    let mut only = DynamicMessage::new(output);
    only.set_field(field, response.get_field(field).into_owned());
    let mut value = Json::Null;
    for options in [options.clone(), options.skip_default_fields(false)] {
        let mut json = only
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(error)?;
        if let Some(taken) = json
            .as_object_mut()
            .and_then(|o| o.remove(field.json_name()))
        {
            value = taken;
            break;
        }
    }
    serde_json::to_vec(&value).map_err(error)
}

/// Reads a whole message from a JSON body.
fn read_message(
    desc: &MessageDescriptor,
    body: &[u8],
    path: &str,
) -> Result<DynamicMessage, TranscodeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &DeserializeOptions::new())
        .and_then(|message| de.end().map(|()| message))
        .map_err(|err| body_error(desc, body, path, &err))
}

/// Reads the value of one request field from a JSON body.
fn read_field(field: &FieldDescriptor, body: &[u8]) -> Result<Value, TranscodeError> {
    if let Some(message) = singular_message(field) {
        return read_message(&message, body, field.name()).map(Value::Message);
    }
    // Anything else: `{"field": <body>}` as the request message.
    let json: Json = serde_json::from_slice(body)
        .map_err(|err| TranscodeError::Body(format!("not valid JSON: {err}")))?;
    let wrapped = Json::Object([(field.name().to_owned(), json)].into_iter().collect());
    let parent = field.parent_message();
    let message = DynamicMessage::deserialize(parent.clone(), &wrapped).map_err(|err| {
        TranscodeError::Body(locate(parent, &wrapped, "").unwrap_or_else(|| err.to_string()))
    })?;
    Ok(message.get_field(field).into_owned())
}

/// The error for a body that did not read as `desc`: the JSON syntax error,
/// or the first field that does not fit.
fn body_error(
    desc: &MessageDescriptor,
    body: &[u8],
    path: &str,
    err: &serde_json::Error,
) -> TranscodeError {
    TranscodeError::Body(match serde_json::from_slice::<Json>(body) {
        Err(syntax) => format!("not valid JSON: {syntax}"),
        Ok(json) => locate(desc, &json, path).unwrap_or_else(|| err.to_string()),
    })
}

/// Names the field of `json` (at `path`) that keeps it from reading as
/// `desc`, by reading its fields one at a time and descending into nested
/// messages; `None` if each field reads alone (e.g. a oneof set twice).
fn locate(desc: &MessageDescriptor, json: &Json, path: &str) -> Option<String> {
    if wkt_json_form(desc.full_name()).is_some() {
        // These have JSON forms of their own: the caller names the field.
        return None;
    }
    let Some(object) = json.as_object() else {
        let at = if path.is_empty() { "the body" } else { path };
        return Some(format!(
            "`{at}`: expected a JSON object ({})",
            desc.full_name()
        ));
    };
    for (key, value) in object {
        let field_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            return Some(format!(
                "unknown field `{field_path}` ({} has no such field)",
                desc.full_name()
            ));
        };
        let alone = Json::Object([(key.clone(), value.clone())].into_iter().collect());
        let Err(err) = DynamicMessage::deserialize(desc.clone(), alone) else {
            continue;
        };
        let nested = match (field.kind(), value) {
            (Kind::Message(message), Json::Array(items)) if field.is_list() => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| locate(&message, item, &format!("{field_path}[{i}]"))),
            (Kind::Message(message), _) if !field.is_list() && !field.is_map() => {
                locate(&message, value, &field_path)
            }
            _ => None,
        };
        return Some(nested.unwrap_or_else(|| {
            format!("field `{field_path}`: expected {}: {err}", describe(&field))
        }));
    }
    None
}

/// Fills the request from the query string.
fn apply_query(binding: &Binding, message: &mut DynamicMessage, query: &str) -> Result<(), String> {
    let input = binding.method.input();
    // Singular fields already set from the query: setting one twice is an error.
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, text) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode(&s.replace('+', " "), false)
                .ok_or_else(|| format!("query parameter `{s}` is not UTF-8 once decoded"))
        };
        let (key, text) = (decode(key)?, decode(text)?);
        if binding.body == BodyRule::Whole {
            return Err(format!(
                "unknown query parameter `{key}`: every field of the request comes from the body"
            ));
        }
        let fields = query_fields(&input, &key)?;
        let canonical = fields
            .iter()
            .map(FieldDescriptor::name)
            .collect::<Vec<_>>()
            .join(".");
        if matches!(&binding.body, BodyRule::Field(body) if *body == fields[0]) {
            return Err(format!(
                "query parameter `{key}`: `{}` is the request body",
                fields[0].name()
            ));
        }
        let overlaps = |bound: &str| {
            let (short, long) = if bound.len() <= canonical.len() {
                (bound, &*canonical)
            } else {
                (&*canonical, bound)
            };
            long.strip_prefix(short)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        if let Some(var) = binding.variables.iter().find(|var| overlaps(&var.name)) {
            return Err(format!(
                "query parameter `{key}`: `{}` is bound by the path",
                var.name
            ));
        }
        let leaf = &fields[fields.len() - 1];
        if leaf.is_map() || !takes_text(leaf) {
            return Err(format!(
                "query parameter `{key}` is {}, which a query cannot set{}",
                describe(leaf),
                if singular_message(leaf).is_some() {
                    format!(" (set its fields as `{key}.<field>`)")
                } else {
                    String::new()
                }
            ));
        }
        if !leaf.is_list() {
            if seen.contains(&canonical) {
                return Err(format!(
                    "query parameter `{key}` is given twice but is not repeated"
                ));
            }
            seen.push(canonical);
        }
        let value = text_value(&fields, &text)?;
        set_path(message, &fields, value);
    }
    Ok(())
}

/// The fields a query parameter name leads to: proto or JSON field names,
/// through singular messages.
fn query_fields(input: &MessageDescriptor, key: &str) -> Result<Vec<FieldDescriptor>, String> {
    let mut message = input.clone();
    let mut fields: Vec<FieldDescriptor> = Vec::new();
    for name in key.split('.') {
        if let Some(last) = fields.last() {
            message = singular_message(last)
                .filter(|m| wkt_json_form(m.full_name()).is_none())
                .ok_or_else(|| {
                    format!(
                        "unknown query parameter `{key}`: `{}` has no fields to set",
                        last.name()
                    )
                })?;
        }
        let field = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
            .ok_or_else(|| {
                format!(
                    "unknown query parameter `{key}`: {} has no field `{name}`",
                    message.full_name()
                )
            })?;
        fields.push(field);
    }
    Ok(fields)
}

/// Sets (or for a list, appends) the last field of `fields`, creating the
/// messages along the way.
fn set_path(message: &mut DynamicMessage, fields: &[FieldDescriptor], value: Value) {
    let Some((leaf, parents)) = fields.split_last() else {
        return;
    };
    let mut target = message;
    for field in parents {
        // Only singular message fields are ever parents (checked when the
        // path was resolved), so this always finds a message.
        let Some(next) = target.get_field_mut(field).as_message_mut() else {
            return;
        };
        target = next;
    }
    match target.get_field_mut(leaf) {
        Value::List(items) => items.push(value),
        slot => *slot = value,
    }
}

/// The value of the last of `fields` (an element, for a list) read from a
/// path or query text; the error names the field and the expected type.
fn text_value(fields: &[FieldDescriptor], text: &str) -> Result<Value, String> {
    let leaf = &fields[fields.len() - 1];
    parse_text(leaf, text).map_err(|detail| {
        let path = fields
            .iter()
            .map(FieldDescriptor::name)
            .collect::<Vec<_>>()
            .join(".");
        let detail = if detail.is_empty() {
            detail
        } else {
            format!(" ({detail})")
        };
        format!(
            "field `{path}`: expected {}, got {text:?}{detail}",
            describe_kind(&leaf.kind())
        )
    })
}

/// Whether a field's values can be read from text (path and query).
pub(crate) fn takes_text(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(message) => {
            matches!(
                message.full_name(),
                "google.protobuf.Timestamp"
                    | "google.protobuf.Duration"
                    | "google.protobuf.FieldMask"
            ) || wrapped_field(&message).is_some()
        }
        _ => true,
    }
}

/// The `value` field of a wrapper type such as `google.protobuf.Int64Value`.
fn wrapped_field(message: &MessageDescriptor) -> Option<FieldDescriptor> {
    let name = message.full_name().strip_prefix("google.protobuf.")?;
    matches!(
        name,
        "DoubleValue"
            | "FloatValue"
            | "Int64Value"
            | "UInt64Value"
            | "Int32Value"
            | "UInt32Value"
            | "BoolValue"
            | "StringValue"
            | "BytesValue"
    )
    .then(|| message.get_field_by_name("value"))
    .flatten()
}

/// Reads one value of `field`'s kind from text; the error is a detail to
/// add to `expected <type>` (often empty).
fn parse_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    fn number<T: std::str::FromStr<Err: ToString>>(
        text: &str,
        wrap: fn(T) -> Value,
    ) -> Result<Value, String> {
        text.parse()
            .map(wrap)
            .map_err(|err: T::Err| err.to_string())
    }
    match field.kind() {
        Kind::Double => number(text, Value::F64),
        Kind::Float => number(text, Value::F32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => number(text, Value::I32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => number(text, Value::I64),
        Kind::Uint32 | Kind::Fixed32 => number(text, Value::U32),
        Kind::Uint64 | Kind::Fixed64 => number(text, Value::U64),
        Kind::Bool => match text {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(String::new()),
        },
        Kind::String => Ok(Value::String(text.to_owned())),
        Kind::Enum(desc) => desc
            .get_value_by_name(text)
            .map(|value| value.number())
            .or_else(|| text.parse().ok())
            .map(Value::EnumNumber)
            .ok_or_else(String::new),
        Kind::Bytes => from_json(field, text),
        Kind::Message(desc) => match wrapped_field(&desc) {
            Some(inner) => {
                let mut wrapper = DynamicMessage::new(desc);
                wrapper.set_field(&inner, parse_text(&inner, text)?);
                Ok(Value::Message(wrapper))
            }
            None if takes_text(field) => from_json(field, text),
            None => Err(String::new()),
        },
    }
}

/// Reads a JSON string as a value of `field` with the JSON mapping (base64
/// bytes, RFC 3339 timestamps, ...), by reading `{"field": "text"}` as the
/// message the field belongs to.
fn from_json(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let mut json = Json::String(text.to_owned());
    if field.is_list() {
        json = Json::Array(vec![json]);
    }
    let wrapped = Json::Object([(field.name().to_owned(), json)].into_iter().collect());
    let message = DynamicMessage::deserialize(field.parent_message().clone(), wrapped)
        .map_err(|err| err.to_string())?;
    match message.get_field(field).into_owned() {
        Value::List(mut items) => items.pop().ok_or_else(String::new),
        value => Ok(value),
    }
}

/// What a field's JSON must look like, for error messages.
fn describe(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(entry) if field.is_map() => {
            format!(
                "an object of {}",
                describe_kind(&entry.map_entry_value_field().kind())
            )
        }
        kind if field.is_list() => format!("a list of {}", describe_kind(&kind)),
        kind => describe_kind(&kind),
    }
}

/// What a value of `kind` must look like, for error messages.
fn describe_kind(kind: &Kind) -> String {
    let scalar = match kind {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes (base64)",
        Kind::Enum(desc) => return format!("enum {} (a value name or number)", desc.full_name()),
        Kind::Message(desc) => {
            return match wkt_json_form(desc.full_name()) {
                Some(form) => format!("{} ({form})", desc.full_name()),
                None => format!("message {} (a JSON object)", desc.full_name()),
            };
        }
    };
    scalar.to_owned()
}

/// The JSON form of a well-known type that the JSON mapping treats
/// specially; `None` for any other message.
pub(crate) fn wkt_json_form(full_name: &str) -> Option<&'static str> {
    let form = match full_name.strip_prefix("google.protobuf.")? {
        "Timestamp" => "an RFC 3339 date-time string",
        "Duration" => "a string of seconds such as \"1.5s\"",
        "FieldMask" => "a string of comma-separated lowerCamelCase field paths",
        "Struct" => "a JSON object",
        "Value" => "any JSON value",
        "ListValue" => "a JSON array",
        "Empty" => "an empty JSON object",
        "Any" => "a JSON object with \"@type\"",
        "DoubleValue" | "FloatValue" => "a number",
        "Int64Value" | "UInt64Value" | "Int32Value" | "UInt32Value" => "an integer",
        "BoolValue" => "true or false",
        "StringValue" => "a string",
        "BytesValue" => "a base64 string",
        _ => return None,
    };
    Some(form)
}
