//! Comparing a legacy answer with a shadow answer to the same call.
//!
//! [`compare`] takes each side's response messages as the gRPC frames
//! they came in and its final status, and lists where the two differ:
//!
//! - `<status>`: the status codes differ. Only the codes are compared,
//!   not the status messages, which often carry what varies from call to
//!   call (ids, addresses, times) and would make every error a
//!   difference.
//! - `<message count>`: one side sent more messages than the other. The
//!   messages both sent are compared still, pairwise in order.
//! - `<message N>` (from 0): the `N`th message of one side could not be
//!   compared: compressed (its compression is not undone here), cut
//!   short, with an unknown frame flag, or not decodable as the method's
//!   output message.
//! - a field path such as `items[2].price.units`, `totals["usd"]`, a
//!   oneof's name, or `<unknown 99>` (an unknown field, by number, present
//!   on one side only). When either side sent other than exactly one
//!   message, each path starts with its message: `<message 1>.items[2]`.
//!
//! Messages are compared as protobuf values, not bytes (two encoders may
//! order fields or map entries differently): set fields, lists item by
//! item (a different length is one difference at the list, and the items
//! both have are compared), maps key by key, oneofs by which member is
//! set, then its value, and the presence of fields that track it
//! (`<unset>` against a default value is a difference for them).
//! Unknown fields are compared by presence alone. Floats are equal when
//! `==` says so, and NaN equals NaN. Frames that are byte for byte equal
//! are equal without being decoded.
//!
//! Differences come in this order: the status, the message count, then
//! each message's, field by field in declaration order; at most `limit`
//! of them, then one entry that counts the rest (see [`MORE`]).
//! [`render`] writes them on one bounded line for a log.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use prost::bytes::Bytes;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, OneofDescriptor,
    ReflectMessage, Value,
};
use sinew_core::codes::code_name;
use tonic::Code;

/// The path of the entry [`compare`] ends with when it found more than
/// its `limit` of differences; its `legacy` is how many more, its
/// `shadow` is empty.
pub(crate) const MORE: &str = "<more>";

/// How many characters of a string value a difference shows.
const STRING_CHARS: usize = 32;
/// How many bytes of a bytes value a difference shows.
const BYTES_SHOWN: usize = 16;
/// How many characters of a decoding error a difference shows.
const ERROR_CHARS: usize = 100;

/// One side's answer to one call.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The final status code.
    pub(crate) code: Code,
    /// The final status message (kept for the log; not compared).
    pub(crate) message: String,
    /// The response messages, each as a gRPC frame: a compressed flag
    /// byte, a 4-byte big-endian length, the message.
    pub(crate) frames: Bytes,
}

/// One difference, at a field path like `items[2].price.units` or
/// `<message 3>` or `<status>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Difference {
    /// Where the two differ (see the [module docs](self)).
    pub(crate) path: String,
    /// The legacy side's value there, rendered short.
    pub(crate) legacy: String,
    /// The shadow side's value there, rendered short.
    pub(crate) shadow: String,
}

/// Differences between the legacy and shadow answers to one call whose
/// output message is `output`: at most `limit`, then, if there were more,
/// one entry at [`MORE`] saying how many. Empty when the two agree.
pub(crate) fn compare(
    output: &MessageDescriptor,
    legacy: &Outcome,
    shadow: &Outcome,
    limit: usize,
) -> Vec<Difference> {
    let mut found = Found::new(limit);
    if legacy.code != shadow.code {
        found.push(
            "<status>",
            || code_name(legacy.code).to_owned(),
            || code_name(shadow.code).to_owned(),
        );
    }
    if legacy.frames != shadow.frames {
        let legacy_frames = split(&legacy.frames);
        let shadow_frames = split(&shadow.frames);
        if legacy_frames.len() != shadow_frames.len() {
            found.push(
                "<message count>",
                || legacy_frames.len().to_string(),
                || shadow_frames.len().to_string(),
            );
        }
        let single = legacy_frames.len() == 1 && shadow_frames.len() == 1;
        for (index, (l, s)) in legacy_frames.iter().zip(&shadow_frames).enumerate() {
            compare_frames(output, index, single, l, s, &mut found);
        }
    }
    found.finish()
}

/// `differences` on one line, such as `items[2].price.units: 3 != 4;
/// <status>: OK != NOT_FOUND`, cut to at most `max_len` bytes (ending in
/// `…` when cut, if there is room for it).
pub(crate) fn render(differences: &[Difference], max_len: usize) -> String {
    let mut line = String::new();
    for difference in differences {
        if !line.is_empty() {
            line.push_str("; ");
        }
        if difference.path == MORE {
            let _ = write!(line, "… and {} more", difference.legacy);
        } else {
            let _ = write!(
                line,
                "{}: {} != {}",
                difference.path, difference.legacy, difference.shadow
            );
        }
        if line.len() > max_len {
            break;
        }
    }
    if line.len() > max_len {
        const ELLIPSIS: &str = "…";
        let mut end = max_len.saturating_sub(ELLIPSIS.len());
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        if max_len >= ELLIPSIS.len() {
            line.push_str(ELLIPSIS);
        }
    }
    line
}

/// The differences found so far, and a count of those past the limit,
/// which are not rendered.
struct Found {
    list: Vec<Difference>,
    limit: usize,
    more: usize,
}

impl Found {
    fn new(limit: usize) -> Self {
        Self {
            list: Vec::with_capacity(limit.min(16)),
            limit,
            more: 0,
        }
    }

    /// Adds a difference at `path`, rendering its values only if it is
    /// within the limit.
    fn push(
        &mut self,
        path: &str,
        legacy: impl FnOnce() -> String,
        shadow: impl FnOnce() -> String,
    ) {
        if self.list.len() < self.limit {
            self.list.push(Difference {
                path: path.to_owned(),
                legacy: legacy(),
                shadow: shadow(),
            });
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<Difference> {
        if self.more > 0 {
            self.list.push(Difference {
                path: MORE.to_owned(),
                legacy: self.more.to_string(),
                shadow: String::new(),
            });
        }
        self.list
    }
}

/// One gRPC frame of a response.
#[derive(Debug)]
struct Frame {
    /// The frame as it came, header and all, to compare byte for byte.
    raw: Bytes,
    kind: FrameKind,
}

#[derive(Debug)]
enum FrameKind {
    /// An uncompressed message.
    Message(Bytes),
    /// A compressed message.
    Compressed,
    /// A frame flag other than 0 and 1.
    BadFlag(u8),
    /// The end of the body, short of a whole frame.
    Truncated,
}

/// The frames of `body`; a last one cut short is [`FrameKind::Truncated`].
fn split(body: &Bytes) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let rest = body.len() - at;
        let length = body
            .get(at + 1..at + 5)
            .and_then(|length| <[u8; 4]>::try_from(length).ok())
            .map(u32::from_be_bytes)
            .and_then(|length| usize::try_from(length).ok());
        let Some(length) = length.filter(|&length| length <= rest - 5) else {
            frames.push(Frame {
                raw: body.slice(at..),
                kind: FrameKind::Truncated,
            });
            break;
        };
        let end = at + 5 + length;
        let kind = match body[at] {
            0 => FrameKind::Message(body.slice(at + 5..end)),
            1 => FrameKind::Compressed,
            flag => FrameKind::BadFlag(flag),
        };
        frames.push(Frame {
            raw: body.slice(at..end),
            kind,
        });
        at = end;
    }
    frames
}

/// The message in `frame`, or why it can't be compared.
fn decode(output: &MessageDescriptor, frame: &Frame) -> Result<DynamicMessage, String> {
    match &frame.kind {
        FrameKind::Message(message) => DynamicMessage::decode(output.clone(), message.clone())
            .map_err(|error| format!("undecodable: {}", cut(&error.to_string(), ERROR_CHARS))),
        FrameKind::Compressed => Err("compressed: not compared".to_owned()),
        FrameKind::BadFlag(flag) => Err(format!("bad frame flag {flag}")),
        FrameKind::Truncated => Err(format!("truncated frame of {} bytes", frame.raw.len())),
    }
}

/// Compares the `index`th frames of each side; `single` when each side
/// sent just this one, whose fields' paths then have no message prefix.
fn compare_frames(
    output: &MessageDescriptor,
    index: usize,
    single: bool,
    legacy: &Frame,
    shadow: &Frame,
    found: &mut Found,
) {
    if legacy.raw == shadow.raw {
        return;
    }
    let mut path = format!("<message {index}>");
    match (decode(output, legacy), decode(output, shadow)) {
        (Ok(legacy), Ok(shadow)) => {
            if single {
                path.clear();
            }
            compare_messages(&legacy, &shadow, &mut path, found);
        }
        (legacy, shadow) => {
            let side = |decoded: Result<DynamicMessage, String>| match decoded {
                Ok(message) => render_message(&message),
                Err(why) => why,
            };
            found.push(&path, || side(legacy), || side(shadow));
        }
    }
}

/// Runs `inner` with `segment` added to `path`: after a dot if `dot` and
/// the path is not empty.
fn nested(
    path: &mut String,
    dot: bool,
    segment: fmt::Arguments<'_>,
    inner: impl FnOnce(&mut String),
) {
    let len = path.len();
    if dot && !path.is_empty() {
        path.push('.');
    }
    let _ = path.write_fmt(segment);
    inner(path);
    path.truncate(len);
}

/// Compares two messages of one type, whose path is `path`.
fn compare_messages(
    legacy: &DynamicMessage,
    shadow: &DynamicMessage,
    path: &mut String,
    found: &mut Found,
) {
    let descriptor = legacy.descriptor();
    for field in descriptor.fields() {
        match field
            .containing_oneof()
            .filter(|oneof| !oneof.is_synthetic())
        {
            None => compare_field(legacy, shadow, &field, path, found),
            // A oneof is compared as a whole, where its first member is.
            Some(oneof) => {
                if oneof.fields().next().map(|first| first.number()) == Some(field.number()) {
                    compare_oneof(legacy, shadow, &oneof, path, found);
                }
            }
        }
    }
    let numbers = |message: &DynamicMessage| -> BTreeSet<u32> {
        message
            .unknown_fields()
            .map(|field| field.number())
            .collect()
    };
    let (legacy_unknown, shadow_unknown) = (numbers(legacy), numbers(shadow));
    for &number in legacy_unknown.symmetric_difference(&shadow_unknown) {
        let presence = |present: bool| if present { "<present>" } else { "<absent>" }.to_owned();
        nested(path, true, format_args!("<unknown {number}>"), |path| {
            found.push(
                path,
                || presence(legacy_unknown.contains(&number)),
                || presence(shadow_unknown.contains(&number)),
            );
        });
    }
}

/// Compares `field` (not a member of a oneof) of two messages.
fn compare_field(
    legacy: &DynamicMessage,
    shadow: &DynamicMessage,
    field: &FieldDescriptor,
    path: &mut String,
    found: &mut Found,
) {
    let (in_legacy, in_shadow) = (legacy.has_field(field), shadow.has_field(field));
    if !in_legacy && !in_shadow {
        return;
    }
    nested(path, true, format_args!("{}", field.name()), |path| {
        if field.supports_presence() && in_legacy != in_shadow {
            let side = |message: &DynamicMessage, present: bool| {
                if present {
                    render_value(&field.kind(), &message.get_field(field))
                } else {
                    "<unset>".to_owned()
                }
            };
            found.push(path, || side(legacy, in_legacy), || side(shadow, in_shadow));
        } else {
            compare_values(
                field,
                &legacy.get_field(field),
                &shadow.get_field(field),
                path,
                found,
            );
        }
    });
}

/// Compares a oneof of two messages: which member is set, then its value.
fn compare_oneof(
    legacy: &DynamicMessage,
    shadow: &DynamicMessage,
    oneof: &OneofDescriptor,
    path: &mut String,
    found: &mut Found,
) {
    let set = |message: &DynamicMessage| oneof.fields().find(|field| message.has_field(field));
    match (set(legacy), set(shadow)) {
        (None, None) => {}
        (Some(l), Some(s)) if l.number() == s.number() => {
            compare_field(legacy, shadow, &l, path, found);
        }
        (l, s) => {
            let side = |message: &DynamicMessage, member: Option<FieldDescriptor>| match member {
                Some(field) => format!(
                    "{}={}",
                    field.name(),
                    render_value(&field.kind(), &message.get_field(&field))
                ),
                None => "<unset>".to_owned(),
            };
            nested(path, true, format_args!("{}", oneof.name()), |path| {
                found.push(path, || side(legacy, l), || side(shadow, s));
            });
        }
    }
}

/// Compares the values of `field`, at `path`.
fn compare_values(
    field: &FieldDescriptor,
    legacy: &Value,
    shadow: &Value,
    path: &mut String,
    found: &mut Found,
) {
    match (legacy, shadow) {
        (Value::List(l), Value::List(s)) => {
            if l.len() != s.len() {
                found.push(
                    path,
                    || format!("{} items", l.len()),
                    || format!("{} items", s.len()),
                );
            }
            let kind = field.kind();
            for (index, (l, s)) in l.iter().zip(s).enumerate() {
                nested(path, false, format_args!("[{index}]"), |path| {
                    compare_single(&kind, l, s, path, found);
                });
            }
        }
        (Value::Map(l), Value::Map(s)) => {
            let kind = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                kind => kind,
            };
            let keys: BTreeSet<&MapKey> = l.keys().chain(s.keys()).collect();
            for key in keys {
                nested(
                    path,
                    false,
                    format_args!("[{}]", MapKeyShown(key)),
                    |path| match (l.get(key), s.get(key)) {
                        (Some(l), Some(s)) => compare_single(&kind, l, s, path, found),
                        (l, s) => {
                            let side = |value: Option<&Value>| {
                                value.map_or_else(
                                    || "<absent>".to_owned(),
                                    |value| render_value(&kind, value),
                                )
                            };
                            found.push(path, || side(l), || side(s));
                        }
                    },
                );
            }
        }
        _ => compare_single(&field.kind(), legacy, shadow, path, found),
    }
}

/// Compares two values of `kind` (neither a list nor a map), at `path`.
fn compare_single(
    kind: &Kind,
    legacy: &Value,
    shadow: &Value,
    path: &mut String,
    found: &mut Found,
) {
    match (legacy, shadow) {
        (Value::Message(l), Value::Message(s)) => compare_messages(l, s, path, found),
        (Value::F32(l), Value::F32(s)) if l == s || (l.is_nan() && s.is_nan()) => {}
        (Value::F64(l), Value::F64(s)) if l == s || (l.is_nan() && s.is_nan()) => {}
        _ if legacy == shadow => {}
        _ => found.push(
            path,
            || render_value(kind, legacy),
            || render_value(kind, shadow),
        ),
    }
}

/// A short rendering of `value`, of `kind`: strings quoted and cut,
/// bytes in hex and cut, enums by name, messages as `{..}` (`{}` when
/// nothing is set), lists and maps by size.
fn render_value(kind: &Kind, value: &Value) -> String {
    match value {
        Value::Bool(v) => v.to_string(),
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F32(v) => v.to_string(),
        Value::F64(v) => v.to_string(),
        Value::String(v) => {
            let shown = cut(v, STRING_CHARS);
            if shown.len() < v.len() {
                format!("{shown:?}…")
            } else {
                format!("{shown:?}")
            }
        }
        Value::Bytes(v) => {
            let mut text = String::from("0x");
            for byte in v.iter().take(BYTES_SHOWN) {
                let _ = write!(text, "{byte:02x}");
            }
            if v.len() > BYTES_SHOWN {
                let _ = write!(text, "… ({} bytes)", v.len());
            }
            text
        }
        Value::EnumNumber(number) => match kind {
            Kind::Enum(enumeration) => enumeration
                .get_value(*number)
                .map_or_else(|| number.to_string(), |value| value.name().to_owned()),
            _ => number.to_string(),
        },
        Value::Message(message) => render_message(message),
        Value::List(items) => format!("[{} items]", items.len()),
        Value::Map(entries) => format!("{{{} entries}}", entries.len()),
    }
}

/// `{}` for a message with nothing set, else `{..}`.
fn render_message(message: &DynamicMessage) -> String {
    if message.fields().next().is_none() && message.unknown_fields().next().is_none() {
        "{}".to_owned()
    } else {
        "{..}".to_owned()
    }
}

/// A map key as a path shows it: strings quoted, others plain.
struct MapKeyShown<'a>(&'a MapKey);

impl fmt::Display for MapKeyShown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            MapKey::Bool(key) => write!(f, "{key}"),
            MapKey::I32(key) => write!(f, "{key}"),
            MapKey::I64(key) => write!(f, "{key}"),
            MapKey::U32(key) => write!(f, "{key}"),
            MapKey::U64(key) => write!(f, "{key}"),
            MapKey::String(key) => {
                let shown = cut(key, STRING_CHARS);
                if shown.len() < key.len() {
                    write!(f, "{shown:?}…")
                } else {
                    write!(f, "{shown:?}")
                }
            }
        }
    }
}

/// The first `chars` characters of `text`.
fn cut(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(end, _)| &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    use prost::Message as _;
    use prost_reflect::DescriptorPool;

    const PROTO: &str = r#"
        syntax = "proto3";
        package shop;

        enum State {
            STATE_UNSPECIFIED = 0;
            OPEN = 1;
            CLOSED = 2;
        }

        message Money {
            string currency = 1;
            int64 units = 2;
        }

        message Item {
            string name = 1;
            Money price = 2;
            repeated string tags = 3;
        }

        message Order {
            string id = 1;
            repeated Item items = 2;
            map<string, Money> totals = 3;
            State state = 4;
            oneof payment {
                string card = 5;
                int64 cash_cents = 6;
            }
            optional int32 priority = 7;
            double ratio = 8;
            bytes blob = 9;
            Money discount = 10;
            map<int32, string> notes = 11;
        }
    "#;

    /// Serves `PROTO` as `shop.proto`.
    struct Source;

    impl protox::file::FileResolver for Source {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            if name == "shop.proto" {
                protox::file::File::from_source(name, PROTO)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }

    fn pool() -> DescriptorPool {
        protox::Compiler::with_file_resolver(Source)
            .open_file("shop.proto")
            .unwrap()
            .descriptor_pool()
    }

    fn order_type() -> MessageDescriptor {
        pool().get_message_by_name("shop.Order").unwrap()
    }

    fn money(currency: &str, units: i64) -> Value {
        let mut money = DynamicMessage::new(pool().get_message_by_name("shop.Money").unwrap());
        money.set_field_by_name("currency", Value::String(currency.into()));
        money.set_field_by_name("units", Value::I64(units));
        Value::Message(money)
    }

    fn item(name: &str, units: i64, tags: &[&str]) -> Value {
        let mut item = DynamicMessage::new(pool().get_message_by_name("shop.Item").unwrap());
        item.set_field_by_name("name", Value::String(name.into()));
        item.set_field_by_name("price", money("EUR", units));
        item.set_field_by_name(
            "tags",
            Value::List(
                tags.iter()
                    .map(|tag| Value::String((*tag).into()))
                    .collect(),
            ),
        );
        Value::Message(item)
    }

    /// An order with a bit of everything set.
    fn order() -> DynamicMessage {
        let mut order = DynamicMessage::new(order_type());
        order.set_field_by_name("id", Value::String("o-1".into()));
        order.set_field_by_name(
            "items",
            Value::List(vec![
                item("pen", 3, &["blue"]),
                item("ink", 7, &[]),
                item("pad", 2, &["a5", "lined"]),
            ]),
        );
        order.set_field_by_name(
            "totals",
            Value::Map(
                [
                    (MapKey::String("usd".into()), money("USD", 13)),
                    (MapKey::String("eur".into()), money("EUR", 12)),
                ]
                .into(),
            ),
        );
        order.set_field_by_name("state", Value::EnumNumber(1));
        order.set_field_by_name("card", Value::String("4111".into()));
        order.set_field_by_name("ratio", Value::F64(f64::NAN));
        order.set_field_by_name(
            "notes",
            Value::Map([(MapKey::I32(7), Value::String("hi".into()))].into()),
        );
        order
    }

    fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut frame = vec![flag];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    fn outcome(code: Code, messages: &[&DynamicMessage]) -> Outcome {
        let frames: Vec<u8> = messages
            .iter()
            .flat_map(|message| frame(0, &message.encode_to_vec()))
            .collect();
        Outcome {
            code,
            message: String::new(),
            frames: frames.into(),
        }
    }

    fn diff(path: &str, legacy: &str, shadow: &str) -> Difference {
        Difference {
            path: path.into(),
            legacy: legacy.into(),
            shadow: shadow.into(),
        }
    }

    /// The differences between `order()` and `order()` changed by `change`.
    fn changed(change: impl FnOnce(&mut DynamicMessage)) -> Vec<Difference> {
        let legacy = order();
        let mut shadow = order();
        change(&mut shadow);
        compare(
            &order_type(),
            &outcome(Code::Ok, &[&legacy]),
            &outcome(Code::Ok, &[&shadow]),
            10,
        )
    }

    fn items(order: &mut DynamicMessage) -> &mut Vec<Value> {
        order
            .get_field_by_name_mut("items")
            .unwrap()
            .as_list_mut()
            .unwrap()
    }

    #[test]
    fn equal_answers_have_no_differences() {
        assert_eq!(changed(|_| {}), vec![]);
        // The same message in other bytes: fields in another order (a
        // message's encoding is the concatenation of its fields'), and
        // the status messages differ.
        let whole = order();
        let mut first = whole.clone();
        first.clear_field_by_name("items");
        let mut second = DynamicMessage::new(order_type());
        second.set_field_by_name(
            "items",
            whole.get_field_by_name("items").unwrap().into_owned(),
        );
        let reordered = [second.encode_to_vec(), first.encode_to_vec()].concat();
        assert_ne!(reordered, whole.encode_to_vec());
        let shadow = Outcome {
            code: Code::Ok,
            message: "took 12ms".into(),
            frames: frame(0, &reordered).into(),
        };
        assert_eq!(
            compare(&order_type(), &outcome(Code::Ok, &[&whole]), &shadow, 10),
            vec![]
        );
        // No messages, same code, different messages.
        let empty = |message: &str| Outcome {
            code: Code::NotFound,
            message: message.into(),
            frames: Bytes::new(),
        };
        assert_eq!(
            compare(&order_type(), &empty("no o-1"), &empty("no o-2"), 10),
            vec![]
        );
    }

    #[test]
    fn a_nested_scalar_is_found_at_its_path() {
        let found = changed(|order| {
            let item = items(order)[2].as_message_mut().unwrap();
            let price = item
                .get_field_by_name_mut("price")
                .unwrap()
                .as_message_mut()
                .unwrap();
            price.set_field_by_name("units", Value::I64(4));
        });
        assert_eq!(found, vec![diff("items[2].price.units", "2", "4")]);
    }

    #[test]
    fn lists_differ_by_length_and_by_item() {
        let found = changed(|order| {
            items(order).push(item("cap", 1, &[]));
            let pen = items(order)[0].as_message_mut().unwrap();
            pen.set_field_by_name("tags", Value::List(vec![Value::String("red".into())]));
        });
        assert_eq!(
            found,
            vec![
                diff("items", "3 items", "4 items"),
                diff("items[0].tags[0]", "\"blue\"", "\"red\""),
            ]
        );
        // An emptied list: its length, and nothing in it to compare.
        let found = changed(|order| order.clear_field_by_name("items"));
        assert_eq!(found, vec![diff("items", "3 items", "0 items")]);
    }

    #[test]
    fn maps_differ_by_key_and_by_value() {
        let found = changed(|order| {
            let totals = order
                .get_field_by_name_mut("totals")
                .unwrap()
                .as_map_mut()
                .unwrap();
            totals.remove(&MapKey::String("eur".into()));
            totals.insert(MapKey::String("gbp".into()), money("GBP", 11));
            totals.insert(MapKey::String("usd".into()), money("USD", 14));
            let notes = order
                .get_field_by_name_mut("notes")
                .unwrap()
                .as_map_mut()
                .unwrap();
            notes.insert(MapKey::I32(7), Value::String("bye".into()));
        });
        assert_eq!(
            found,
            vec![
                diff("totals[\"eur\"]", "{..}", "<absent>"),
                diff("totals[\"gbp\"]", "<absent>", "{..}"),
                diff("totals[\"usd\"].units", "13", "14"),
                diff("notes[7]", "\"hi\"", "\"bye\""),
            ]
        );
    }

    #[test]
    fn enums_are_named() {
        let found = changed(|order| order.set_field_by_name("state", Value::EnumNumber(2)));
        assert_eq!(found, vec![diff("state", "OPEN", "CLOSED")]);
        let found = changed(|order| order.set_field_by_name("state", Value::EnumNumber(9)));
        assert_eq!(found, vec![diff("state", "OPEN", "9")]);
    }

    #[test]
    fn oneofs_differ_by_member_and_by_value() {
        let found = changed(|order| order.set_field_by_name("cash_cents", Value::I64(300)));
        assert_eq!(
            found,
            vec![diff("payment", "card=\"4111\"", "cash_cents=300")]
        );
        let found = changed(|order| order.set_field_by_name("card", Value::String("5500".into())));
        assert_eq!(found, vec![diff("card", "\"4111\"", "\"5500\"")]);
        let found = changed(|order| order.clear_field_by_name("card"));
        assert_eq!(found, vec![diff("payment", "card=\"4111\"", "<unset>")]);
    }

    #[test]
    fn presence_is_compared_where_fields_track_it() {
        let found = changed(|order| order.set_field_by_name("priority", Value::I32(0)));
        assert_eq!(found, vec![diff("priority", "<unset>", "0")]);
        let found = changed(|order| {
            let money = pool().get_message_by_name("shop.Money").unwrap();
            order.set_field_by_name("discount", Value::Message(DynamicMessage::new(money)));
        });
        assert_eq!(found, vec![diff("discount", "<unset>", "{}")]);
        // Without presence, a default value is just a value.
        let found = changed(|order| order.set_field_by_name("id", Value::String(String::new())));
        assert_eq!(found, vec![diff("id", "\"o-1\"", "\"\"")]);
    }

    #[test]
    fn values_are_rendered_short() {
        let long = "x".repeat(100);
        let found = changed(|order| {
            order.set_field_by_name("id", Value::String(long.clone()));
            order.set_field_by_name("blob", Value::Bytes(Bytes::from(vec![0xab; 40])));
            order.set_field_by_name("ratio", Value::F64(0.5));
        });
        assert_eq!(
            found,
            vec![
                diff("id", "\"o-1\"", &format!("{:?}…", &long[..32])),
                diff("ratio", "NaN", "0.5"),
                diff("blob", "0x", &format!("0x{}… (40 bytes)", "ab".repeat(16))),
            ]
        );
    }

    #[test]
    fn unknown_fields_are_compared_by_presence() {
        let legacy = order();
        // Field 99, varint 1: a field the gateway's descriptor lacks.
        let with_unknown = [legacy.encode_to_vec(), vec![0x98, 0x06, 0x01]].concat();
        let shadow = Outcome {
            code: Code::Ok,
            message: String::new(),
            frames: frame(0, &with_unknown).into(),
        };
        assert_eq!(
            compare(&order_type(), &outcome(Code::Ok, &[&legacy]), &shadow, 10),
            vec![diff("<unknown 99>", "<absent>", "<present>")]
        );
        // Present on both sides, with other values: not a difference.
        let other_value = [legacy.encode_to_vec(), vec![0x98, 0x06, 0x02]].concat();
        let legacy = Outcome {
            frames: frame(0, &other_value).into(),
            ..shadow.clone()
        };
        assert_eq!(compare(&order_type(), &legacy, &shadow, 10), vec![]);
    }

    #[test]
    fn status_codes_are_compared_and_their_messages_are_not() {
        let order = order();
        let legacy = outcome(Code::Ok, &[&order]);
        let shadow = Outcome {
            code: Code::NotFound,
            message: "no such order".into(),
            frames: Bytes::new(),
        };
        assert_eq!(
            compare(&order_type(), &legacy, &shadow, 10),
            vec![
                diff("<status>", "OK", "NOT_FOUND"),
                diff("<message count>", "1", "0"),
            ]
        );
    }

    #[test]
    fn several_messages_are_compared_pairwise_with_their_index_in_the_path() {
        let first = order();
        let mut second = order();
        second.set_field_by_name("id", Value::String("o-2".into()));
        let mut changed_second = second.clone();
        changed_second.set_field_by_name("state", Value::EnumNumber(2));
        let legacy = outcome(Code::Ok, &[&first, &second]);
        let shadow = outcome(Code::Ok, &[&first, &changed_second, &first]);
        assert_eq!(
            compare(&order_type(), &legacy, &shadow, 10),
            vec![
                diff("<message count>", "2", "3"),
                diff("<message 1>.state", "OPEN", "CLOSED"),
            ]
        );
    }

    #[test]
    fn messages_that_cannot_be_compared_say_why() {
        let order = order();
        let encoded = order.encode_to_vec();
        let legacy = outcome(Code::Ok, &[&order]);
        let with = |frames: Vec<u8>| Outcome {
            code: Code::Ok,
            message: String::new(),
            frames: frames.into(),
        };
        let cases = [
            (frame(1, &encoded), "compressed: not compared"),
            (frame(7, &encoded), "bad frame flag 7"),
            (
                frame(0, &encoded)[..20].to_vec(),
                "truncated frame of 20 bytes",
            ),
            (vec![0, 0, 0], "truncated frame of 3 bytes"),
        ];
        for (frames, why) in cases {
            assert_eq!(
                compare(&order_type(), &legacy, &with(frames), 10),
                vec![diff("<message 0>", "{..}", why)],
                "{why}"
            );
        }
        // A wire type that does not match field 1's (a string): undecodable.
        let found = compare(&order_type(), &legacy, &with(frame(0, &[0x08, 0x01])), 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "<message 0>");
        assert!(found[0].shadow.starts_with("undecodable: "), "{found:?}");
        // Byte for byte the same: equal, even compressed.
        let compressed = with(frame(1, &encoded));
        assert_eq!(
            compare(&order_type(), &compressed, &compressed.clone(), 10),
            vec![]
        );
    }

    #[test]
    fn differences_are_bounded_and_the_rest_counted() {
        let legacy = outcome(Code::Ok, &[]);
        let order = order();
        let shadow = Outcome {
            code: Code::Internal,
            ..outcome(Code::Ok, &[&order, &order, &order])
        };
        let found = compare(&order_type(), &legacy, &shadow, 1);
        assert_eq!(
            found,
            vec![diff("<status>", "OK", "INTERNAL"), diff(MORE, "1", "")]
        );
        let found = compare(&order_type(), &legacy, &shadow, 0);
        assert_eq!(found, vec![diff(MORE, "2", "")]);
        let found = changed(|order| {
            for item in items(order) {
                let item = item.as_message_mut().unwrap();
                item.set_field_by_name("name", Value::String("?".into()));
            }
        });
        assert_eq!(found.len(), 3);
        let legacy = self::order();
        let mut shadow = legacy.clone();
        for item in items(&mut shadow) {
            let item = item.as_message_mut().unwrap();
            item.set_field_by_name("name", Value::String("?".into()));
        }
        let found = compare(
            &order_type(),
            &outcome(Code::Ok, &[&legacy]),
            &outcome(Code::Ok, &[&shadow]),
            2,
        );
        assert_eq!(found.len(), 3);
        assert_eq!(found[2], diff(MORE, "1", ""));
    }

    #[test]
    fn rendering_is_one_bounded_line() {
        let differences = vec![
            diff("items[2].price.units", "3", "4"),
            diff("<status>", "OK", "NOT_FOUND"),
            diff(MORE, "5", ""),
        ];
        assert_eq!(
            render(&differences, 200),
            "items[2].price.units: 3 != 4; <status>: OK != NOT_FOUND; … and 5 more"
        );
        assert_eq!(render(&[], 200), "");
        let cut = render(&differences, 20);
        assert_eq!(cut, "items[2].price.un…");
        assert!(cut.len() <= 20);
        // Never in the middle of a character.
        let wide = vec![diff("name", "\"ééééé\"", "\"ààààà\"")];
        for max_len in 0..40 {
            let line = render(&wide, max_len);
            assert!(line.len() <= max_len, "{max_len}: {line}");
        }
    }
}
