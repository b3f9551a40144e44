//! Crate names `sinew new` accepts, and the Rust and protobuf names derived
//! from them and from contracts (as prost and tonic derive theirs).

use heck::{ToSnakeCase, ToUpperCamelCase};

use super::NewError;

/// Rust's keywords, strict and reserved (2024 edition): none can name a
/// crate that code says `use name::...` of.
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "try",
    "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield",
];

/// Names taken, with the reason why.
const RESERVED: &[(&str, &str)] = &[
    ("test", "it is the name of Rust's built-in test crate"),
    ("std", "it is the name of Rust's standard library"),
    ("core", "it is the name of Rust's core library"),
    ("alloc", "it is the name of Rust's allocation library"),
    (
        "proc_macro",
        "it is the name of Rust's procedural macro library",
    ),
    (
        "proc-macro",
        "it is the name of Rust's procedural macro library",
    ),
    ("build", "cargo uses it for a folder of its own in target/"),
    ("deps", "cargo uses it for a folder of its own in target/"),
    (
        "examples",
        "cargo uses it for a folder of its own in target/",
    ),
    (
        "incremental",
        "cargo uses it for a folder of its own in target/",
    ),
    ("sinew", "the new crate depends on the `sinew` crate"),
    (
        "sinew-build",
        "the new crate depends on the `sinew-build` crate",
    ),
    (
        "sinew_build",
        "the new crate depends on the `sinew-build` crate",
    ),
    ("tokio", "the new crate depends on the `tokio` crate"),
];

/// sinew's own crates, which the new crate depends on through `sinew`.
const SINEW_CRATES: &[&str] = &[
    "sinew-core",
    "sinew-telemetry",
    "sinew-client",
    "sinew-server",
    "sinew-testing",
    "sinew-events",
    "sinew-saga",
    "sinew-gateway",
    "sinew-cli",
];

/// File names Windows reserves for devices, in any case.
const WINDOWS_DEVICES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Checks that `name` can name the new crate (and its folder, its Rust
/// library and its protobuf package), saying why not otherwise.
pub fn validate_name(name: &str) -> Result<(), NewError> {
    let refuse = |reason: String| {
        Err(NewError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return refuse("a crate needs a name".to_owned());
    };
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return refuse(format!(
            "{bad:?} is not allowed: use ASCII letters, digits, `-` and `_`"
        ));
    }
    if first.is_ascii_digit() {
        return refuse("it starts with a digit; a crate name starts with a letter".to_owned());
    }
    if !first.is_ascii_alphabetic() {
        return refuse(format!(
            "it starts with {first:?}; a crate name starts with a letter"
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return refuse(format!(
            "it has capital letters, which Rust warns about in crate names; try `{}`",
            name.to_ascii_lowercase()
        ));
    }
    if RUST_KEYWORDS.contains(&name) {
        return refuse("it is a Rust keyword".to_owned());
    }
    if let Some((_, why)) = RESERVED.iter().find(|(taken, _)| *taken == name) {
        return refuse(format!("cargo would refuse it or confuse it: {why}"));
    }
    if SINEW_CRATES.contains(&name.replace('_', "-").as_str()) {
        return refuse(
            "it is the name of one of sinew's own crates, which the new crate depends on"
                .to_owned(),
        );
    }
    if WINDOWS_DEVICES.contains(&name) {
        return refuse("Windows reserves it for a device; no folder can have it".to_owned());
    }
    if name.len() > 64 {
        return refuse("it is longer than 64 characters, cargo's limit".to_owned());
    }
    Ok(())
}

/// The name Rust code knows the crate by (`my-service` → `my_service`).
pub(crate) fn crate_ident(name: &str) -> String {
    name.replace('-', "_")
}

/// A Rust identifier for `name`: raw (`r#type`) for a keyword, suffixed for
/// those that cannot be raw, prefixed when it starts with a digit — the
/// rule prost applies to every name it writes.
pub(crate) fn sanitize(name: &str) -> String {
    match name {
        "_" | "self" | "Self" | "super" | "crate" | "extern" => format!("{name}_"),
        _ if name.starts_with(|c: char| c.is_ascii_digit()) => format!("_{name}"),
        _ if RUST_KEYWORDS.contains(&name) => format!("r#{name}"),
        _ => name.to_owned(),
    }
}

/// A field, function or module name, as prost makes it (`GetItem` →
/// `get_item`).
pub(crate) fn snake(name: &str) -> String {
    sanitize(&name.to_snake_case())
}

/// A type name, as prost makes it (`get_item` → `GetItem`).
pub(crate) fn upper_camel(name: &str) -> String {
    sanitize(&name.to_upper_camel_case())
}

/// A package segment as sinew-build names its module: as written, raw if a
/// keyword.
pub(crate) fn package_module(segment: &str) -> String {
    if RUST_KEYWORDS.contains(&segment) && !matches!(segment, "self" | "Self" | "super" | "crate") {
        format!("r#{segment}")
    } else {
        segment.to_owned()
    }
}

/// tonic's name for a service's server module: the service's Rust name in
/// lower case, with `_` before each capital but the first
/// (`KeyValue` → `key_value_server`).
pub(crate) fn server_module(service: &str) -> String {
    let mut out = String::new();
    for (i, c) in service.chars().enumerate() {
        if i > 0 && c.is_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out.push_str("_server");
    out
}
