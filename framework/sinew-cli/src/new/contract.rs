//! A contract given with `--proto`: compiled as the new crate's build will
//! compile it, and turned into a handler per service whose every method
//! answers `UNIMPLEMENTED`, and a test.

use std::{fmt::Write as _, fs, path::Path};

use prost_reflect::{MessageDescriptor, MethodDescriptor};
use protox::{Compiler, file::FileResolver};
use sinew_build::SinewFiles;

use super::{NewError, name};

/// A compiled contract.
#[derive(Debug)]
pub(super) struct Contract {
    /// The given file's name under `proto/` (its file name).
    pub(super) file_name: String,
    /// The files to copy under `proto/`: the given one and the files beside
    /// it that it imports, by the names imports know them by.
    pub(super) files: Vec<(String, String)>,
    /// The services the given file declares, in its order.
    pub(super) services: Vec<Service>,
}

/// A service of the contract, with the Rust names generated code gives it.
#[derive(Debug)]
pub(super) struct Service {
    /// `package.Service`.
    pub(super) full_name: String,
    /// The Rust path of its package's module from the crate's root
    /// (`proto::echo::v1`).
    pub(super) module: String,
    /// Its Rust name: the server trait's (`Echo`); `EchoServer` and the
    /// resilient `EchoClient` follow from it.
    pub(super) rust_name: String,
    /// Its methods, in the contract's order.
    pub(super) methods: Vec<Method>,
}

/// A method, with the Rust names generated code gives it.
#[derive(Debug)]
pub(super) struct Method {
    /// Its name in the contract (`GetItem`).
    pub(super) proto_name: String,
    /// The trait method's name (`get_item`).
    pub(super) fn_name: String,
    /// The Rust type of its request message.
    pub(super) input: String,
    /// The Rust type of its response message.
    pub(super) output: String,
    /// Whether the caller sends a stream.
    pub(super) client_streaming: bool,
    /// Whether the server answers a stream.
    pub(super) server_streaming: bool,
}

impl Contract {
    /// Compiles the contract at `path`, with sinew's files and the file's
    /// own folder to resolve imports, and reads its services.
    pub(super) fn compile(path: &Path) -> Result<Self, NewError> {
        let unreadable = |source| NewError::ReadContract {
            path: path.to_path_buf(),
            source,
        };
        let absolute = std::path::absolute(path).map_err(unreadable)?;
        if !absolute.is_file() {
            let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
            return Err(unreadable(missing));
        }
        let folder = absolute
            .parent()
            .ok_or_else(|| NewError::NotUtf8(absolute.clone()))?
            .to_path_buf();
        let file_name = absolute
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| NewError::NotUtf8(absolute.clone()))?
            .to_owned();

        // sinew-build's checks first: they say `file:line:column: reason`
        // for a syntax error as for an option that makes no sense, exactly
        // as the new crate's build would.
        let scratch = tempfile::tempdir().map_err(|source| NewError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        sinew_build::configure()
            .include(&folder)
            .out_dir(scratch.path())
            .compile(&[&file_name])
            .map_err(|e| NewError::Contract(e.to_string()))?;

        let resolver = sinew_build::file_resolver(&[folder]);
        let mut compiler = Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler
            .open_file(&file_name)
            .map_err(|e| NewError::Contract(e.to_string()))?;

        // The files found on disk are the contract's own (sinew's and the
        // well-known types come from the compiler's memory).
        let mut files = Vec::new();
        for file in compiler.files() {
            if let Some(on_disk) = file.path() {
                let text =
                    fs::read_to_string(on_disk).map_err(|source| NewError::ReadContract {
                        path: on_disk.to_path_buf(),
                        source,
                    })?;
                files.push((file.name().to_owned(), text));
            }
        }

        let pool = compiler.descriptor_pool();
        let Some(file) = pool.get_file_by_name(&file_name) else {
            return Err(NewError::Contract(format!(
                "{}: not found after compiling it",
                absolute.display()
            )));
        };
        let mut services = Vec::new();
        for service in file.services() {
            let module = std::iter::once("proto".to_owned())
                .chain(package_modules(service.package_name()))
                .collect::<Vec<_>>()
                .join("::");
            let methods = service
                .methods()
                .map(|method| Method::read(&method))
                .collect::<Result<Vec<_>, _>>()?;
            services.push(Service {
                full_name: service.full_name().to_owned(),
                module,
                rust_name: name::upper_camel(service.name()),
                methods,
            });
        }
        if services.is_empty() {
            return Err(NewError::NoService(absolute));
        }
        Ok(Self {
            file_name,
            files,
            services,
        })
    }

    /// The first unary method, with its service: the one the test calls.
    pub(super) fn first_unary(&self) -> Option<(&Service, &Method)> {
        self.services.iter().find_map(|service| {
            service
                .methods
                .iter()
                .find(|m| !m.client_streaming && !m.server_streaming)
                .map(|method| (service, method))
        })
    }

    /// `src/lib.rs`: a handler per service, every method answering
    /// `UNIMPLEMENTED`, and the scaffold hosting them.
    pub(super) fn render_lib(&self, crate_name: &str) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "//! {crate_name}: the services of `proto/{file}`, hosted on sinew's scaffold\n\
             //! ([`server`]). Every method answers `UNIMPLEMENTED` until you write it\n\
             //! here. `src/main.rs` runs the server; `tests/` calls it.\n\n\
             use sinew::{{Server, health::Probe, tonic}};\n\n\
             /// The code sinew-build generates from the contracts under `proto/`:\n\
             /// messages, a trait per service to implement, the servers that host\n\
             /// them, resilient clients and method tables.\n\
             pub mod proto {{\n    sinew::include_contracts!();\n}}\n\n\
             /// The service's name, in telemetry and in the scaffold's logs.\n\
             pub const NAME: &str = {crate_name:?};\n",
            file = self.file_name,
        );
        let streams = self
            .services
            .iter()
            .flat_map(|s| &s.methods)
            .any(|m| m.server_streaming);
        if streams {
            out.push_str(
                "\n/// The responses of a server-streaming method: any stream of them,\n\
                 /// boxed (`Box::pin(stream)`).\n\
                 pub type ResponseStream<T> = std::pin::Pin<\n    \
                 Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>,\n\
                 >;\n",
            );
        }
        for service in &self.services {
            out.push('\n');
            out.push_str(&service.render_handler());
        }
        out.push_str(
            "\n/// The scaffold hosting the services: health checking (`grpc.health.v1`,\n\
             /// with every service registered), reflection, safe limits and a graceful\n\
             /// drain come with it. Settings come from the environment (`SINEW_ADDR`,\n\
             /// ...), or from code with `.config(...)`.\n\
             pub fn server() -> Server {\n    \
             Server::new(NAME)\n        \
             // Health answers SERVING once every probe passes, and NOT_SERVING\n        \
             // while one fails: check each dependency (a database, a service\n        \
             // called) in a probe of its own.\n        \
             .readiness(Probe::new(\"ready\", || async {\n            \
             Ok::<(), std::convert::Infallible>(())\n        \
             }))\n",
        );
        for service in &self.services {
            let _ = writeln!(
                out,
                "        .add_service({}::{}::{}Server::new({}Service))",
                service.module,
                name::server_module(&service.rust_name),
                service.rust_name,
                service.rust_name,
            );
        }
        out.push_str("}\n");
        out
    }

    /// `tests/<name>.rs`: the server reports `SERVING`, and the first unary
    /// method answers `UNIMPLEMENTED` through the generated client.
    pub(super) fn render_test(&self, crate_name: &str, running: &str) -> String {
        let ident = name::crate_ident(crate_name);
        let unary = self.first_unary();
        let mut out = format!(
            "//! Starts {crate_name} on a free port: health says it is serving, and its\n\
             //! methods answer `UNIMPLEMENTED` until written.\n\n\
             use sinew::{{\n    \
             health::{{\n        \
             ServingStatus,\n        \
             proto::{{HealthCheckRequest, HealthClient}},\n    \
             }},\n{code}}};\n\n{running}\n",
            code = if unary.is_some() {
                "    tonic::Code,\n"
            } else {
                ""
            },
        );
        let names = self
            .services
            .iter()
            .map(|s| format!("{:?}", s.full_name))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "/// The services the contract declares, by their full names.\n\
             const SERVICES: &[&str] = &[{names}];\n"
        );
        out.push_str(
            "#[tokio::test]\n\
             async fn every_service_is_serving() {\n    \
             let server = Running::start().await;\n    \
             server.wait_until_serving().await;\n    \
             let mut health = HealthClient::connect(server.config()).await.unwrap();\n    \
             for service in SERVICES {\n        \
             let status = health\n            \
             .check(HealthCheckRequest {\n                \
             service: (*service).to_owned(),\n            \
             })\n            \
             .await\n            \
             .unwrap()\n            \
             .into_inner()\n            \
             .status();\n        \
             assert_eq!(status, ServingStatus::Serving, \"{service}\");\n    \
             }\n    \
             server.stop().await;\n\
             }\n",
        );
        if let Some((service, method)) = unary {
            let _ = write!(
                out,
                "\n#[tokio::test]\n\
                 async fn an_unwritten_method_answers_unimplemented() {{\n    \
                 let server = Running::start().await;\n    \
                 let mut client = {ident}::{module}::{client}Client::connect(server.config())\n        \
                 .await\n        \
                 .unwrap();\n    \
                 let refused = client\n        \
                 .{call}({request})\n        \
                 .await\n        \
                 .unwrap_err();\n    \
                 assert_eq!(refused.code(), Code::Unimplemented);\n    \
                 server.stop().await;\n\
                 }}\n",
                module = service.module,
                client = service.rust_name,
                call = method.fn_name,
                request = default_value(&method.input, &ident),
            );
        }
        out
    }
}

impl Service {
    /// The handler: a unit struct implementing the service's trait.
    fn render_handler(&self) -> String {
        let mut out = format!(
            "/// `{full}`: every method answers `UNIMPLEMENTED` until written.\n\
             #[derive(Debug, Clone, Copy, Default)]\n\
             pub struct {name}Service;\n\n\
             #[tonic::async_trait]\n\
             impl {module}::{server}::{name} for {name}Service {{\n",
            full = self.full_name,
            name = self.rust_name,
            module = self.module,
            server = name::server_module(&self.rust_name),
        );
        for (i, method) in self.methods.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let request = if method.client_streaming {
                format!("tonic::Streaming<{}>", method.input)
            } else {
                method.input.clone()
            };
            let response = if method.server_streaming {
                let stream = format!("{}Stream", method.proto_name);
                let _ = writeln!(
                    out,
                    "    type {stream} = ResponseStream<{}>;\n",
                    method.output
                );
                format!("Self::{stream}")
            } else {
                method.output.clone()
            };
            let _ = write!(
                out,
                "    async fn {fn_name}(\n        \
                 &self,\n        \
                 _request: tonic::Request<{request}>,\n    \
                 ) -> Result<tonic::Response<{response}>, tonic::Status> {{\n        \
                 Err(tonic::Status::unimplemented(\n            \
                 \"{full}/{proto} is not written yet\",\n        \
                 ))\n    \
                 }}\n",
                fn_name = method.fn_name,
                full = self.full_name,
                proto = method.proto_name,
            );
        }
        out.push_str("}\n");
        out
    }
}

impl Method {
    fn read(method: &MethodDescriptor) -> Result<Self, NewError> {
        let path = format!("{}/{}", method.parent_service().full_name(), method.name());
        Ok(Self {
            proto_name: method.name().to_owned(),
            fn_name: name::snake(method.name()),
            input: rust_type(&method.input(), &path)?,
            output: rust_type(&method.output(), &path)?,
            client_streaming: method.is_client_streaming(),
            server_streaming: method.is_server_streaming(),
        })
    }
}

/// The modules of a package, as sinew-build nests them.
fn package_modules(package: &str) -> impl Iterator<Item = String> + '_ {
    package
        .split('.')
        .filter(|s| !s.is_empty())
        .map(name::package_module)
}

/// The Rust type generated code uses for `message`, from the crate's
/// root: the well-known types are prost-types' (and `Empty` is `()`),
/// every other message is sinew-build's, under `proto::`.
fn rust_type(message: &MessageDescriptor, method: &str) -> Result<String, NewError> {
    let file = message.parent_file();
    if SinewFiles.open_file(file.name()).is_ok() {
        return Err(NewError::UnsupportedMessage {
            method: method.to_owned(),
            message: message.full_name().to_owned(),
            file: file.name().to_owned(),
        });
    }
    let mut parents = Vec::new();
    let mut parent = message.parent_message();
    while let Some(outer) = parent {
        parents.push(name::snake(outer.name()));
        parent = outer.parent_message();
    }
    parents.reverse();
    let package = message.package_name();
    if package == "google.protobuf" {
        if parents.is_empty()
            && let Some(primitive) = wrapper(message.name())
        {
            return Ok(primitive.to_owned());
        }
        let path = std::iter::once("sinew::prost_types".to_owned())
            .chain(parents)
            .chain(std::iter::once(name::upper_camel(message.name())))
            .collect::<Vec<_>>();
        return Ok(path.join("::"));
    }
    let path = std::iter::once("proto".to_owned())
        .chain(package_modules(package))
        .chain(parents)
        .chain(std::iter::once(name::upper_camel(message.name())))
        .collect::<Vec<_>>();
    Ok(path.join("::"))
}

/// The Rust type prost maps a well-known wrapper (and `Empty`) to.
fn wrapper(name: &str) -> Option<&'static str> {
    Some(match name {
        "Empty" => "()",
        "BoolValue" => "bool",
        "BytesValue" => "Vec<u8>",
        "DoubleValue" => "f64",
        "FloatValue" => "f32",
        "Int32Value" => "i32",
        "Int64Value" => "i64",
        "StringValue" => "String",
        "UInt32Value" => "u32",
        "UInt64Value" => "u64",
        _ => return None,
    })
}

/// An expression for the default value of `ty`, in a test of the crate
/// `ident`.
fn default_value(ty: &str, ident: &str) -> String {
    if ty == "()" {
        "()".to_owned()
    } else if let Some(rest) = ty.strip_prefix("proto::") {
        format!("{ident}::proto::{rest}::default()")
    } else if ty.starts_with("sinew::") {
        format!("{ty}::default()")
    } else {
        format!("<{ty}>::default()")
    }
}
