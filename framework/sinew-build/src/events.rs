//! Reads and checks sinew's `(sinew.event)` option on every message, and
//! writes the `Event` impl of each message that has it.
//!
//! protox already rejects an option that does not exist or has the wrong
//! type. What is left for this module is what protobuf cannot say: that the
//! subject is one NATS can publish on, and that the aggregate names a field
//! that can serve as a key. Each failure names the file and line of the
//! option.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use prost_reflect::{Cardinality, DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};
use quote::{format_ident, quote};

use crate::{Error, source::SourceMap};

/// The name of sinew's message option extension.
const EVENT_EXTENSION: &str = "sinew.event";

/// Field number of `options` in `DescriptorProto`, the step from a message
/// to its options in a source-code-info path.
const MESSAGE_OPTIONS_FIELD: i32 = 7;

/// The longest subject accepted, in bytes. NATS itself allows longer ones,
/// but a subject is also a JetStream filter and a header value; 255 keeps it
/// well within every limit on the way.
const MAX_SUBJECT_LEN: usize = 255;

/// A message declared as an event, checked and ready to be written out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventDecl {
    /// The message's full protobuf name, `shop.orders.v1.OrderPlaced`.
    pub(crate) full_name: String,
    /// The path of its Rust type from the package's module, as prost names
    /// it: `OrderPlaced`, or `outer::Inner` for a nested message.
    pub(crate) rust_path: Vec<String>,
    pub(crate) subject: String,
    pub(crate) version: u32,
    /// The aggregate field's proto name, `order_id`.
    pub(crate) aggregate: String,
    /// The aggregate field's Rust name, as prost names it (`r#type`).
    pub(crate) field_ident: String,
    pub(crate) key: KeyKind,
}

/// How an aggregate field turns into the aggregate id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A `string`: cloned.
    String,
    /// Any integer type: its decimal form.
    Integer,
    /// `bytes` (`Vec<u8>`): lowercase hex.
    Bytes,
}

/// Every event declared in `files`, grouped by package, in the order of
/// the files and of the messages in them.
pub(crate) fn read_events(
    pool: &DescriptorPool,
    files: &[String],
    sources: &SourceMap,
) -> Result<BTreeMap<String, Vec<EventDecl>>, Error> {
    let mut events: BTreeMap<String, Vec<EventDecl>> = BTreeMap::new();
    let Some(extension) = pool.get_extension_by_name(EVENT_EXTENSION) else {
        // No contract imports sinew/options.proto: nothing to read.
        return Ok(events);
    };
    for name in files {
        let Some(file) = pool.get_file_by_name(name) else {
            continue;
        };
        let mut pending: Vec<MessageDescriptor> = file.messages().collect();
        pending.reverse();
        // Depth first, in declaration order.
        while let Some(message) = pending.pop() {
            let mut children: Vec<_> = message.child_messages().collect();
            children.reverse();
            pending.extend(children);
            if message.is_map_entry() {
                continue;
            }
            let options = message.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let value = options.get_extension(&extension);
            let Value::Message(option) = value.as_ref() else {
                continue;
            };
            let reader = Reader {
                message: &message,
                option: extension.number(),
                sources,
            };
            let decl = reader.event(option)?;
            events
                .entry(file.package_name().to_owned())
                .or_default()
                .push(decl);
        }
    }
    Ok(events)
}

/// Reads one message's option, and reports errors at that option.
struct Reader<'a> {
    message: &'a MessageDescriptor,
    /// The field number of `(sinew.event)`, to find it in the source.
    option: u32,
    sources: &'a SourceMap,
}

impl Reader<'_> {
    fn event(&self, option: &DynamicMessage) -> Result<EventDecl, Error> {
        let subject = string_field(option, "subject");
        if subject.is_empty() {
            return Err(self.error(
                "(sinew.event) needs a `subject`, the NATS subject the event is published \
                 on, such as \"shop.orders.placed\"",
            ));
        }
        check_subject(&subject).map_err(|reason| self.error(reason))?;

        let aggregate = string_field(option, "aggregate");
        if aggregate.is_empty() {
            return Err(self.error(
                "(sinew.event) needs an `aggregate`, the field holding the id of the \
                 aggregate the event belongs to, such as \"order_id\"",
            ));
        }
        let key = self.aggregate_key(&aggregate)?;

        let version = option
            .get_field_by_name("version")
            .and_then(|v| v.as_u32())
            .unwrap_or(0)
            .max(1);

        Ok(EventDecl {
            full_name: self.message.full_name().to_owned(),
            rust_path: rust_path(self.message),
            subject,
            version,
            field_ident: to_snake(&aggregate),
            aggregate,
            key,
        })
    }

    /// Checks that `aggregate` names a field fit to be a key: one value,
    /// always present, compared exactly.
    fn aggregate_key(&self, aggregate: &str) -> Result<KeyKind, Error> {
        let full_name = self.message.full_name();
        let Some(field) = self.message.get_field_by_name(aggregate) else {
            return Err(self.error(format!(
                "aggregate field `{aggregate}` does not exist in {full_name}"
            )));
        };
        let unfit = |why: &str| {
            self.error(format!(
                "aggregate field `{aggregate}` of {full_name} {why}; the aggregate must be a \
                 string, integer or bytes field"
            ))
        };
        if field.is_map() {
            return Err(unfit("is a map, not one value"));
        }
        if field.is_list() {
            return Err(unfit("is repeated, not one value"));
        }
        let key = match field.kind() {
            Kind::String => KeyKind::String,
            Kind::Bytes => KeyKind::Bytes,
            Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64 => KeyKind::Integer,
            Kind::Message(_) => return Err(unfit("is a message, not a scalar")),
            Kind::Enum(_) => {
                return Err(unfit(
                    "is an enum: it names a category, not one aggregate, and its numbers \
                     are not a stable key",
                ));
            }
            Kind::Float | Kind::Double => {
                return Err(unfit(
                    "is a floating-point number: rounding and its decimal form make it no \
                     stable key",
                ));
            }
            Kind::Bool => return Err(unfit("is a bool: two values are no key")),
        };
        // A field with presence is `Option<T>` in prost (or a oneof variant),
        // so an event could go out without its aggregate id.
        if let Some(oneof) = field.containing_oneof() {
            if oneof.is_synthetic() {
                return Err(unfit(
                    "is `optional`: an event must always carry its aggregate id",
                ));
            }
            return Err(unfit(&format!(
                "is in oneof `{}`: an event must always carry its aggregate id",
                oneof.name()
            )));
        }
        if field.supports_presence() && field.cardinality() != Cardinality::Required {
            return Err(unfit(
                "is `optional`: an event must always carry its aggregate id",
            ));
        }
        Ok(key)
    }

    fn error(&self, reason: impl std::fmt::Display) -> Error {
        let file = self.message.parent_file();
        let (line, column) = self
            .sources
            .option_position(
                &file,
                self.message.path(),
                MESSAGE_OPTIONS_FIELD,
                self.option,
            )
            .unzip();
        Error::contract(
            self.sources.display_path(file.name()),
            line,
            column,
            format!("message {}: {reason}", self.message.full_name()),
        )
    }
}

/// Checks that `subject` is a subject NATS can publish on: dot-separated
/// tokens of ASCII letters, digits, `_` and `-`, at most
/// [`MAX_SUBJECT_LEN`] bytes. The error says what is wrong and shows it.
pub(crate) fn check_subject(subject: &str) -> Result<(), String> {
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(format!(
            "subject {subject:?} is {} bytes long; the limit is {MAX_SUBJECT_LEN}",
            subject.len()
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!(
                "subject {subject:?} has an empty token (a leading, trailing or doubled \
                 dot); write it like \"shop.orders.placed\""
            ));
        }
        for c in token.chars() {
            if c == '*' || c == '>' {
                return Err(format!(
                    "subject {subject:?} has the wildcard `{c}`; an event is published on \
                     one exact subject"
                ));
            }
            if c.is_whitespace() {
                return Err(format!(
                    "subject {subject:?} has whitespace; tokens are ASCII letters, digits, \
                     `_` and `-`"
                ));
            }
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!(
                    "subject {subject:?} has `{}`; tokens are ASCII letters, digits, `_` \
                     and `-`",
                    c.escape_debug()
                ));
            }
        }
    }
    Ok(())
}

/// The impls of the events of one package, to be placed in the package's
/// module. `framework` is the path the code reaches sinew through.
pub(crate) fn impls(framework: &TokenStream, events: &[EventDecl]) -> TokenStream {
    let impls = events.iter().map(|event| {
        let segments = event.rust_path.iter().map(|s| format_ident!("{s}"));
        let ty = quote!(#(#segments)::*);
        let full_name = &event.full_name;
        let subject = &event.subject;
        let version = proc_macro2::Literal::u32_unsuffixed(event.version);
        let field = format_ident!("{}", event.field_ident);
        let body = match event.key {
            KeyKind::String => quote!(self.#field.clone()),
            KeyKind::Integer => quote!(self.#field.to_string()),
            KeyKind::Bytes => quote! {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.#field
                    .iter()
                    .flat_map(|&byte| {
                        [
                            ::core::primitive::char::from(HEX[usize::from(byte >> 4)]),
                            ::core::primitive::char::from(HEX[usize::from(byte & 0x0f)]),
                        ]
                    })
                    .collect()
            },
        };
        let doc = format!(
            " `{full_name}` is an event: published on `{subject}`, schema version {}, \
             keyed by its aggregate `{}`.",
            event.version, event.aggregate
        );
        quote! {
            #[doc = #doc]
            impl #framework::event::Event for #ty {
                const TYPE: &'static str = #full_name;
                const SUBJECT: &'static str = #subject;
                const SCHEMA_VERSION: u32 = #version;

                fn aggregate_id(&self) -> ::std::string::String {
                    #body
                }
            }
        }
    });
    quote!(#(#impls)*)
}

/// The impls of the events of one package as formatted Rust, to append to
/// the package's code.
pub(crate) fn render(framework: &TokenStream, events: &[EventDecl]) -> Result<String, Error> {
    let tokens = impls(framework, events);
    let file = syn::parse2::<syn::File>(tokens).map_err(|e| {
        Error::generate(std::io::Error::other(format!(
            "the event impls do not parse as Rust ({e}); is framework_path a path?"
        )))
    })?;
    Ok(prettyplease::unparse(&file))
}

/// The path of a message's Rust type from its package's module, as prost
/// names it: each enclosing message is a `snake_case` module.
fn rust_path(message: &MessageDescriptor) -> Vec<String> {
    let mut path = vec![to_upper_camel(message.name())];
    let mut parent = message.parent_message();
    while let Some(outer) = parent {
        path.push(to_snake(outer.name()));
        parent = outer.parent_message();
    }
    path.reverse();
    path
}

/// A field or module name as prost-build writes it.
fn to_snake(name: &str) -> String {
    sanitize(heck::ToSnakeCase::to_snake_case(name))
}

/// A type name as prost-build writes it.
fn to_upper_camel(name: &str) -> String {
    sanitize(heck::ToUpperCamelCase::to_upper_camel_case(name))
}

/// prost-build's rule (its `ident::sanitize_identifier`, which it does not
/// export) for names that are not valid identifiers as they stand.
fn sanitize(ident: String) -> String {
    const RAW: &[&str] = &[
        "as", "break", "const", "continue", "else", "enum", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
        "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "dyn", "abstract",
        "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
        "virtual", "yield", "async", "await", "try", "gen",
    ];
    // Keywords that cannot be raw identifiers get an underscore instead.
    const SUFFIXED: &[&str] = &["_", "super", "self", "Self", "extern", "crate"];
    if RAW.contains(&ident.as_str()) {
        format!("r#{ident}")
    } else if SUFFIXED.contains(&ident.as_str()) {
        format!("{ident}_")
    } else if ident.starts_with(|c: char| c.is_numeric()) {
        format!("_{ident}")
    } else {
        ident
    }
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_nats_can_publish_on_pass() {
        for subject in ["shop.orders.placed", "a", "a-b_c.D9", &"x".repeat(255)] {
            assert_eq!(check_subject(subject), Ok(()), "{subject}");
        }
    }

    #[test]
    fn bad_subjects_say_what_is_wrong() {
        let cases = [
            ("shop.*.placed", "wildcard `*`"),
            ("shop.orders.>", "wildcard `>`"),
            ("shop..placed", "empty token"),
            (".shop", "empty token"),
            ("shop.", "empty token"),
            ("shop orders", "whitespace"),
            ("shop.örders", "has `ö`"),
            ("shop/orders", "has `/`"),
        ];
        for (subject, reason) in cases {
            let error = check_subject(subject).unwrap_err();
            assert!(error.contains(reason), "{subject}: {error}");
            assert!(
                error.contains(&format!("{subject:?}")),
                "{subject}: {error}"
            );
        }
        let long = "x".repeat(256);
        assert!(check_subject(&long).unwrap_err().contains("256 bytes long"));
    }

    #[test]
    fn names_follow_prost() {
        assert_eq!(to_snake("orderId"), "order_id");
        assert_eq!(to_snake("type"), "r#type");
        assert_eq!(to_snake("self"), "self_");
        assert_eq!(to_snake("OrderLine"), "order_line");
        assert_eq!(to_upper_camel("order_placed"), "OrderPlaced");
        assert_eq!(to_upper_camel("Self"), "Self_");
    }
}
