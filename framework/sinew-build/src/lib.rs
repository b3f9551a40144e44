//! Codegen for [sinew](https://docs.rs/sinew): typed gRPC code from `.proto`
//! contracts, with nothing to install.
//!
//! One call from a `build.rs` compiles every contract under a folder with
//! [protox] (a protobuf compiler written in Rust, so no `protoc`) and writes:
//!
//! - prost messages, and tonic clients and servers, for every package;
//! - for every service, a **method table**: a unit type `FooContract`
//!   implementing `sinew::contract::Contract`, with a `MethodInfo` constant
//!   per RPC giving its path, streaming kind, `idempotency_level`, and the
//!   defaults of sinew's `(sinew.method)` option (with the method that
//!   compensates it);
//! - for every service, a resilient client `FooClient` (beside tonic's
//!   `foo_client::FooClient`, which it dereferences to) built with
//!   `FooClient::connect(config)`: deadlines, retries, hedging, a breaker,
//!   a bulkhead and load balancing, with policy from the method table;
//! - for every server, the glue that lets `sinew::Server` host it with its
//!   message limits, health and reflection;
//! - for every message declared an event with `(sinew.event)`, an impl of
//!   `sinew::event::Event` giving its type, subject, schema version and
//!   aggregate id;
//! - the encoded descriptor set of the contracts and their imports, as
//!   `FILE_DESCRIPTOR_SET`, which the scaffold serves over reflection.
//!
//! Proto comments become doc comments. Each generated top-level module
//! carries its own commented `#![allow(...)]` list, so a crate that denies
//! `missing_docs` or runs clippy with `-D warnings` needs to silence nothing.
//!
//! # Example
//!
//! `build.rs`:
//!
//! ```no_run
//! fn main() -> Result<(), sinew_build::Error> {
//!     sinew_build::compile_protos("proto")
//! }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```ignore
//! pub mod proto {
//!     sinew::include_contracts!();
//! }
//! // The resilient client, the server and the method table:
//! use proto::greeter::v1::{GreeterClient, GreeterContract, greeter_server::GreeterServer};
//!
//! let mut client = GreeterClient::connect(sinew::client::ClientConfig::endpoint(addr)).await?;
//! ```
//!
//! The crate needs `sinew` as a dependency and `sinew-build` as a build
//! dependency, and nothing else gRPC-related: the generated code reaches
//! tonic, prost, prost-types and tonic-prost through `::sinew`.
//!
//! # sinew's method options
//!
//! A contract may `import "sinew/options.proto";` without having the file:
//! sinew-build serves it. It declares `(sinew.method)`:
//!
//! ```proto
//! rpc GetOrder(GetOrderRequest) returns (Order) {
//!   option idempotency_level = NO_SIDE_EFFECTS;
//!   option (sinew.method) = {
//!     timeout: "250ms"
//!     retry: { max_attempts: 3 initial_backoff: "50ms" max_backoff: "1s"
//!              backoff_multiplier: 2 retryable_status_codes: ["UNAVAILABLE"] }
//!   };
//! }
//! ```
//!
//! The full text is [`OPTIONS_PROTO`].
//!
//! ## Compensations
//!
//! `compensated_by` names the RPC, in the same service, that undoes a
//! method: a saga step built from the method compensates with it.
//!
//! ```proto
//! rpc Charge(ChargeRequest) returns (Charge) {
//!   option (sinew.method) = { compensated_by: "Refund" };
//! }
//! rpc Refund(Charge) returns (RefundReply) {
//!   option idempotency_level = IDEMPOTENT;
//! }
//! ```
//!
//! The method table carries the compensation's full path
//! (`MethodPolicy::compensated_by`, here `Some("/shop.payments.v1.Payments/Refund")`),
//! and `Contract::compensation_of(path)` finds its `MethodInfo`. The build
//! checks, and fails at the option's line otherwise, that:
//!
//! - the value is the bare name of another method of the same service (not
//!   a qualified name, not the method itself);
//! - the compensation is marked `idempotency_level = IDEMPOTENT`: it is
//!   retried until it succeeds, so repeating it must be harmless, and a
//!   `NO_SIDE_EFFECTS` method would undo nothing;
//! - the compensation's request type is the method's request type or its
//!   response type, so a saga builds it without a hand-written mapping;
//! - both methods are unary, and the method is not `NO_SIDE_EFFECTS`
//!   (a read has nothing to undo).
//!
//! A compensation may declare a `compensated_by` of its own: a saga never
//! compensates a compensation, and pairs that undo each other (`Enable` and
//! `Disable`) can each be a step.
//!
//! # sinew's event option
//!
//! The same file declares `(sinew.event)`, which makes a message (top-level
//! or nested) a domain event:
//!
//! ```proto
//! message OrderConfirmed {
//!   option (sinew.event) = {
//!     subject: "shop.orders.confirmed"
//!     aggregate: "order_id"
//!     version: 2
//!   };
//!   string order_id = 1;
//! }
//! ```
//!
//! sinew-build implements `sinew::event::Event` for it, beside the message
//! in its package's module: `TYPE` is the full protobuf name
//! (`shop.orders.v1.OrderConfirmed`), `SUBJECT` the subject, and
//! `SCHEMA_VERSION` the version (1 when unset or 0). `aggregate_id()` reads
//! the aggregate field: a string as it is, an integer in decimal, bytes in
//! lowercase hex. The build checks, and fails at the option's line
//! otherwise, that:
//!
//! - `subject` is set and is a subject NATS can publish on: dot-separated,
//!   non-empty tokens of ASCII letters, digits, `_` and `-` (so no wildcard
//!   `*` or `>`, no whitespace, no leading, trailing or doubled dot), at
//!   most 255 bytes;
//! - `aggregate` is set and names a field of the message (by its proto
//!   name) that is a `string`, an integer type (`int32`, `uint64`,
//!   `sint32`, `fixed64`, `sfixed32` and the rest) or `bytes`, and that is
//!   always present: not `repeated`, not a map, not a message, not an enum
//!   or a `bool` or a floating-point number (none is a stable key), not
//!   `optional` and not in a `oneof` (an event must always carry its
//!   aggregate id).
//!
//! `sinew/events.proto` holds the envelope events travel in, for reference
//! and for contracts that import it ([`EVENTS_PROTO`]). Neither of sinew's
//! files gets code in a user's crate, and
//! [`compile_dir`](Builder::compile_dir) skips the `sinew/` folder, so a
//! contracts folder may hold a link to sinew's.
//!
//! # Errors
//!
//! A malformed contract, or an option value that makes no sense (a duration
//! that does not parse, an unknown status code, hedging on a method that has
//! side effects, a compensation that is not `IDEMPOTENT`, an event subject
//! with a wildcard), fails the build with `file:line:column: reason`.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use prost_build::Module;
use protox::{
    Compiler,
    file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver},
};

mod error;
mod events;
mod generator;
mod options;
mod source;

pub use error::Error;

use generator::SinewGenerator;
use source::SourceMap;

/// The text of `sinew/options.proto`, which every contract can import.
pub const OPTIONS_PROTO: &str = include_str!("../proto/sinew/options.proto");

/// The text of `sinew/events.proto`, the envelope events travel in, which
/// every contract can import. No code is generated for it: sinew's events
/// crate has the envelope.
pub const EVENTS_PROTO: &str = include_str!("../proto/sinew/events.proto");

/// The text of `google/api/http.proto`: the HTTP bindings of methods that
/// sinew's gateway transcodes HTTP/JSON calls by.
pub const GOOGLE_API_HTTP_PROTO: &str = include_str!("../proto/google/api/http.proto");

/// The text of `google/api/annotations.proto`: the `google.api.http`
/// method option.
pub const GOOGLE_API_ANNOTATIONS_PROTO: &str =
    include_str!("../proto/google/api/annotations.proto");

/// sinew's own files, by the names contracts import them by, with their
/// text. They get no code in a user's crate.
const SINEW_PROTOS: &[(&str, &str)] = &[
    ("sinew/options.proto", OPTIONS_PROTO),
    ("sinew/events.proto", EVENTS_PROTO),
    ("google/api/http.proto", GOOGLE_API_HTTP_PROTO),
    ("google/api/annotations.proto", GOOGLE_API_ANNOTATIONS_PROTO),
];

/// The folder of sinew's own files; [`Builder::compile_dir`] skips it, so a
/// contracts folder may hold a link to sinew's `proto/sinew`.
const SINEW_PROTO_DIR: &str = "sinew/";

/// Whether `name` is one of sinew's own files, which get no code.
fn is_sinew_proto(name: &str) -> bool {
    SINEW_PROTOS.iter().any(|(own, _)| *own == name)
}

/// The file, inside the output folder, that `sinew::include_contracts!()`
/// includes.
pub const CONTRACTS_FILE: &str = "sinew_contracts.rs";

/// The file, inside the output folder, holding the encoded descriptor set.
pub const DESCRIPTOR_FILE: &str = "sinew_descriptor.bin";

/// Compiles every `.proto` file under `dir` with the default settings.
///
/// `dir` is also the include path: a file at `proto/greeter/v1/greeter.proto`
/// is imported as `greeter/v1/greeter.proto`. Call it from `build.rs`.
pub fn compile_protos(dir: impl AsRef<Path>) -> Result<(), Error> {
    configure().compile_dir(dir)
}

/// A [`Builder`] with the default settings: clients and servers for every
/// service, written to `OUT_DIR`.
pub fn configure() -> Builder {
    Builder::default()
}

/// Options for a build of contracts.
#[derive(Debug, Clone)]
pub struct Builder {
    includes: Vec<PathBuf>,
    services: Option<HashSet<String>>,
    build_client: bool,
    build_server: bool,
    type_attributes: Vec<(String, String)>,
    out_dir: Option<PathBuf>,
    framework_path: String,
}

/// Where generated code finds the framework by default: the `sinew` facade,
/// which re-exports tonic, prost, prost-types and tonic-prost, so that a
/// crate needs `sinew` and `sinew-build` alone.
const FRAMEWORK_PATH: &str = "::sinew";

impl Default for Builder {
    fn default() -> Self {
        Self {
            includes: Vec::new(),
            services: None,
            build_client: true,
            build_server: true,
            type_attributes: Vec::new(),
            out_dir: None,
            framework_path: FRAMEWORK_PATH.to_owned(),
        }
    }
}

// === impl Builder ===

impl Builder {
    /// Adds a folder to search for imports, after those added before.
    pub fn include(mut self, dir: impl Into<PathBuf>) -> Self {
        self.includes.push(dir.into());
        self
    }

    /// Generates clients, servers and method tables only for these services
    /// (fully qualified, such as `greeter.v1.Greeter`). Messages are always
    /// generated. By default every service is.
    pub fn services<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Whether to generate clients (default `true`).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Whether to generate servers (default `true`).
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Adds an attribute, such as `#[derive(serde::Serialize)]`, to the
    /// messages and enums matching `path` (`.` for all, `.greeter.v1` for a
    /// package, `.greeter.v1.HelloRequest` for one type).
    pub fn type_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.type_attributes.push((path.into(), attribute.into()));
        self
    }

    /// The path generated code reaches sinew through: its method tables,
    /// client and server glue, and the tonic, prost, prost-types and
    /// tonic-prost it re-exports. Default `::sinew`, the facade a user
    /// depends on; only a crate of sinew's own that generates code for
    /// itself (the server scaffold's health service) names another, such as
    /// `crate::codegen`, a module with the same items.
    pub fn framework_path(mut self, path: impl Into<String>) -> Self {
        self.framework_path = path.into();
        self
    }

    /// Writes the code here instead of `OUT_DIR`. Without `OUT_DIR` (outside
    /// a build script) this must be set.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Compiles every `.proto` file under `dir`, which is added as the
    /// first include path. Files under `sinew/` are skipped: that folder is
    /// sinew's own (`sinew/options.proto`, `sinew/events.proto`), which
    /// sinew-build provides and generates no code for. So are copies of
    /// `google/api/http.proto` and `google/api/annotations.proto`, which
    /// it provides too (import them for `google.api.http` bindings).
    pub fn compile_dir(mut self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        let names = source::find_protos(dir)?
            .into_iter()
            .filter(|name| !name.starts_with(SINEW_PROTO_DIR) && !is_sinew_proto(name))
            .collect::<Vec<_>>();
        self.includes.insert(0, dir.to_path_buf());
        if self.out_dir.is_none() {
            cargo_rerun_if_changed(dir);
        }
        self.compile(&names)
    }

    /// Compiles the given files, given as names relative to an include path
    /// (`greeter/v1/greeter.proto`) or as paths inside one.
    pub fn compile(self, files: &[impl AsRef<Path>]) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    Error::generate(std::io::Error::other(
                        "OUT_DIR is not set: call sinew-build from a build script, or set out_dir",
                    ))
                })?,
        };
        // The contracts file includes the code by absolute path.
        let out_dir = std::path::absolute(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
        let sources = SourceMap::new(self.includes.clone());
        let mut compiler = Compiler::with_file_resolver(self.resolver());
        compiler.include_source_info(true).include_imports(true);
        for file in files {
            compiler
                .open_file(file.as_ref())
                .map_err(|e| sources.compile_error(&e))?;
        }

        // Code is generated for the contracts and whatever they import,
        // except what other crates already provide.
        let generated: Vec<String> = compiler
            .files()
            .map(|f| f.name().to_owned())
            .filter(|name| !is_sinew_proto(name) && !name.starts_with("google/protobuf/"))
            .collect();
        if self.out_dir.is_none() {
            for name in &generated {
                cargo_rerun_if_changed(Path::new(&sources.display_path(name)));
            }
        }

        let pool = compiler.descriptor_pool();
        let policies = options::read_policies(&pool, &generated, &sources)?;
        let events = events::read_events(&pool, &generated, &sources)?;

        // Encoded by protox itself, so that the options' extensions
        // (`sinew.method`, `google.api.http`) stay in the set: reflection
        // serves them, and sinew's gateway reads them.
        write(
            &out_dir.join(DESCRIPTOR_FILE),
            &compiler.encode_file_descriptor_set(),
        )?;
        let mut set = compiler.file_descriptor_set();
        // The well-known types stay in the set so that prost knows their
        // shapes (whether a message holding a `Timestamp` can derive `Eq`);
        // it writes no code for them, since they resolve to prost-types.
        set.file.retain(|f| {
            generated.iter().any(|g| g == f.name()) || f.name().starts_with("google/protobuf/")
        });
        let packages: Vec<String> = set
            .file
            .iter()
            .filter(|f| generated.iter().any(|g| g == f.name()))
            .map(|f| f.package().to_owned())
            .collect();

        let root = &self.framework_path;
        let framework: proc_macro2::TokenStream = root.parse().map_err(|_| {
            Error::generate(std::io::Error::other(format!(
                "framework_path {root:?} is not a Rust path"
            )))
        })?;
        let tonic = tonic_prost_build::configure()
            .build_client(self.build_client)
            .build_server(self.build_server)
            .codec_path(format!("{root}::tonic_prost::ProstCodec"))
            .service_generator();
        let mut config = prost_build::Config::new();
        config.out_dir(&out_dir);
        // Messages derive prost's traits, and name the well-known types,
        // through the framework's re-exports.
        config.prost_path(format!("{root}::prost"));
        config.prost_types_path(format!("{root}::prost_types"));
        config.service_generator(Box::new(SinewGenerator {
            tonic,
            framework: framework.clone(),
            policies,
            services: self.services.clone(),
            build_client: self.build_client,
            build_server: self.build_server,
        }));
        for (path, attribute) in &self.type_attributes {
            config.type_attribute(path, attribute);
        }
        // prost's `compile_fds`, with the event impls added to each
        // package's code before it is written: prost calls a service
        // generator only for packages that have services, and events are
        // messages, so they have no hook of their own.
        let requests = set
            .file
            .into_iter()
            .map(|file| (Module::from_protobuf_package_name(file.package()), file))
            .collect();
        let mut modules = config.generate(requests).map_err(Error::generate)?;
        for (package, decls) in &events {
            let module = Module::from_protobuf_package_name(package);
            let code = modules.entry(module).or_default();
            code.push_str(&events::render(&framework, decls)?);
        }
        for (module, code) in &modules {
            write(
                &out_dir.join(module.to_file_name_or(DEFAULT_PACKAGE_FILE)),
                code.as_bytes(),
            )?;
        }

        write(
            &out_dir.join(CONTRACTS_FILE),
            contracts_file(&out_dir, &packages).as_bytes(),
        )
    }

    /// sinew's options first, then the include paths, then the well-known
    /// types.
    fn resolver(&self) -> ChainFileResolver {
        file_resolver(&self.includes)
    }
}

/// Resolves imports as sinew-build does: sinew's own files
/// ([`SinewFiles`]) first, then each of `includes` in turn, then protobuf's
/// well-known types. For a protox compiler of your own that compiles
/// contracts at run time (sinew's gateway at start, the `sinew` command's
/// `--proto`, `breaking` and `new`).
pub fn file_resolver(includes: &[PathBuf]) -> ChainFileResolver {
    let mut chain = ChainFileResolver::new();
    chain.add(SinewFiles);
    for dir in includes {
        chain.add(IncludeFileResolver::new(dir.clone()));
    }
    chain.add(GoogleFileResolver::new());
    chain
}

/// Serves sinew's own files (`sinew/options.proto`, `sinew/events.proto`,
/// `google/api/http.proto`, `google/api/annotations.proto`) from the text
/// compiled into this crate, ahead of any copy on disk: for a protox
/// compiler of your own that must resolve contracts' imports as
/// sinew-build does (sinew's gateway compiles `.proto` files at start).
#[derive(Debug, Clone, Copy, Default)]
pub struct SinewFiles;

impl FileResolver for SinewFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match SINEW_PROTOS.iter().find(|(own, _)| *own == name) {
            Some((_, text)) => File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The name prost gives the code of the package without a name.
const DEFAULT_PACKAGE_FILE: &str = "_";

/// The file, inside the output folder, holding a package's code.
fn package_file(package: &str) -> String {
    Module::from_protobuf_package_name(package).to_file_name_or(DEFAULT_PACKAGE_FILE)
}

/// The file `include_contracts!` pulls in: the descriptor set, and one
/// nested module per package around the code prost wrote for it.
fn contracts_file(out_dir: &Path, packages: &[String]) -> String {
    #[derive(Default)]
    struct Module {
        package: Option<String>,
        children: BTreeMap<String, Module>,
    }

    fn render(out: &mut String, out_dir: &Path, name: &str, module: &Module, top: bool) {
        let _ = writeln!(out, "pub mod {} {{", escape(name));
        if top {
            out.push_str(ALLOW_LIST);
        }
        if let Some(package) = &module.package {
            let path = out_dir.join(package_file(package));
            let _ = writeln!(out, "include!({:?});", path.display().to_string());
        }
        for (child, module) in &module.children {
            let _ = writeln!(out, "/// Code generated from the `{child}` contracts.");
            render(out, out_dir, child, module, false);
        }
        out.push_str("}\n");
    }

    let mut root = Module::default();
    let mut seen = HashSet::new();
    for package in packages {
        if !seen.insert(package) {
            continue;
        }
        if package.is_empty() {
            root.package = Some(String::new());
            continue;
        }
        let mut module = &mut root;
        for segment in package.split('.') {
            module = module.children.entry(segment.to_owned()).or_default();
        }
        module.package = Some(package.clone());
    }

    let mut out =
        String::from("// Generated by sinew-build from the project's contracts. Do not edit.\n\n");
    let descriptor = out_dir.join(DESCRIPTOR_FILE);
    let _ = writeln!(
        out,
        "/// The encoded `FileDescriptorSet` of these contracts and all they import, \
         served by gRPC reflection.\n\
         pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!({:?});",
        descriptor.display().to_string()
    );
    if let Some(package) = &root.package {
        let path = out_dir.join(package_file(package));
        let _ = writeln!(out, "include!({:?});", path.display().to_string());
    }
    for (name, module) in &root.children {
        let _ = writeln!(out, "/// Code generated from the `{name}` contracts.");
        render(&mut out, out_dir, name, module, true);
    }
    out
}

/// Lints the generated code opts out of, each with its reason, so the
/// including crate silences nothing.
const ALLOW_LIST: &str = "#![allow(
    // prost documents exactly what the contract comments; an uncommented
    // message or field has nothing to say.
    missing_docs,
    // The contracts may be included in a private module.
    unreachable_pub,
    // tonic and prost spell paths out in full so that the code works
    // wherever it is included.
    unused_qualifications,
    // tonic's generated servers box their futures by their full names.
    clippy::type_complexity,
    // A crate uses what it needs of a contract: a binary that only serves
    // never calls the client, one that only calls never builds the server.
    dead_code,
)]
";

/// Writes a Rust identifier, raw where it is a keyword.
fn escape(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern",
        "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "static", "struct", "trait", "true", "try", "type",
        "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
        "override", "priv", "typeof", "unsized", "virtual", "yield",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_owned()
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    // Leave an unchanged file alone so its timestamp does not trigger
    // rebuilds.
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    std::fs::write(path, contents).map_err(Error::generate)
}

#[allow(
    clippy::print_stdout,
    reason = "a build script talks to cargo on stdout"
)]
fn cargo_rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
