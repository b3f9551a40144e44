//! Message shapes: from the server's reflection (v1, else v1alpha), or
//! from `.proto` files compiled on the spot; and `list` and `describe`.

use std::{
    collections::BTreeSet, fmt::Write as _, path::PathBuf, process::ExitCode, time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

use crate::{
    CliError, DescribeArgs, ListArgs, SchemaArgs,
    connect::{self, Connection},
};

/// How long one reflection stream (its questions, one after the other)
/// may take.
const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many files are fetched through reflection: a bound against
/// a server that names dependencies without end.
const MAX_FILES: usize = 10_000;
/// At most this many bytes of descriptors are kept from reflection.
const MAX_DESCRIPTOR_BYTES: usize = 64 << 20;
/// When nothing named is found, the files of at most this many services
/// are fetched for the closest name.
const MAX_SUGGESTION_SERVICES: usize = 100;

/// The descriptors of a server's contracts, and the services it serves.
pub(crate) struct Schema {
    pub pool: DescriptorPool,
    /// The services, by full name.
    pub services: BTreeSet<String>,
}

impl Schema {
    /// Loads the schema: `--proto` files if given, else the server's
    /// reflection, which lists the services and gives the files that
    /// define `symbols` (and what they import).
    pub(crate) async fn load(
        connection: &Connection,
        args: &SchemaArgs,
        symbols: &[&str],
    ) -> Result<Self, CliError> {
        if !args.protos.is_empty() {
            return compile(&args.protos, &args.includes);
        }
        let (mut reflection, services) = Reflection::open(connection).await?;
        let mut files = Files::default();
        // Only the files of what the command names are fetched; when none
        // of it is found, every service's, for the closest name.
        let mut found = false;
        for symbol in symbols {
            match reflection.file_containing_symbol(symbol).await {
                Ok(got) => {
                    files.add(got);
                    found = true;
                }
                // Some servers end the stream on a symbol they do not
                // know: go on with a new one.
                Err(_) => reflection = Reflection::open(connection).await?.0,
            }
        }
        if !found && !symbols.is_empty() {
            for service in services.iter().take(MAX_SUGGESTION_SERVICES) {
                match reflection.file_containing_symbol(service).await {
                    Ok(got) => files.add(got),
                    Err(_) => reflection = Reflection::open(connection).await?.0,
                }
            }
        }
        while let Some(missing) = files.missing() {
            if files.names.len() >= MAX_FILES {
                return Err(CliError::Rpc(format!(
                    "the server's reflection named more than {MAX_FILES} files"
                )));
            }
            if files.bytes > MAX_DESCRIPTOR_BYTES {
                return Err(CliError::Rpc(format!(
                    "the server's reflection gave more than {} MiB of descriptors",
                    MAX_DESCRIPTOR_BYTES >> 20
                )));
            }
            let found = reflection.file_by_filename(&missing).await?;
            if !found.iter().any(|(name, _)| *name == missing) {
                return Err(CliError::Rpc(format!(
                    "the server's reflection does not give {missing}, which its contracts import"
                )));
            }
            files.add(found);
        }
        let pool = files.pool()?;
        Ok(Self { pool, services })
    }

    /// The service named `name`, or an error suggesting the closest one.
    pub(crate) fn service(&self, name: &str) -> Result<ServiceDescriptor, CliError> {
        self.pool.get_service_by_name(name).ok_or_else(|| {
            let known: Vec<&str> = self.services.iter().map(String::as_str).collect();
            CliError::Input(format!(
                "the server has no service {name}{}",
                suggest(name, known.iter().copied())
            ))
        })
    }

    /// The method `pkg.Service/Method` (or `pkg.Service.Method`).
    pub(crate) fn method(&self, path: &str) -> Result<MethodDescriptor, CliError> {
        let path = path.trim_start_matches('/');
        let (service, method) = path
            .split_once('/')
            .or_else(|| path.rsplit_once('.'))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "{path:?} is not a method: write package.Service/Method"
                ))
            })?;
        let service = self.service(service)?;
        service
            .methods()
            .find(|m| m.name() == method)
            .ok_or_else(|| {
                let names: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
                CliError::Input(format!(
                    "{} has no method {method}{}",
                    service.full_name(),
                    suggest(method, names.iter().map(String::as_str))
                ))
            })
    }
}

/// `; did you mean X?` for the candidate closest to `name`, if any is close.
pub(crate) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|candidate| {
            let (a, b) = (name.to_lowercase(), candidate.to_lowercase());
            // Jaro-Winkler favours shared prefixes; Damerau-Levenshtein
            // forgives a swapped pair in a short name.
            let score =
                strsim::jaro_winkler(&a, &b).max(strsim::normalized_damerau_levenshtein(&a, &b));
            (score, candidate)
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, candidate)) => format!("; did you mean {candidate}?"),
        None => String::new(),
    }
}

/// Compiles `.proto` files with protox, resolving sinew's own imports as
/// sinew-build does.
pub(crate) fn compile(protos: &[PathBuf], includes: &[PathBuf]) -> Result<Schema, CliError> {
    let includes: Vec<PathBuf> = if includes.is_empty() {
        protos
            .iter()
            .map(|p| p.parent().map(PathBuf::from).unwrap_or_default())
            .collect()
    } else {
        includes.to_vec()
    };
    let mut compiler = protox::Compiler::with_file_resolver(sinew_build::file_resolver(&includes));
    compiler.include_imports(true).include_source_info(false);
    let mut opened = Vec::new();
    for proto in protos {
        if !proto.is_file() {
            return Err(CliError::Io(format!(
                "--proto {}: no such file",
                proto.display()
            )));
        }
        let name = includes
            .iter()
            .find_map(|dir| proto.strip_prefix(dir).ok())
            .unwrap_or(proto);
        compiler
            .open_file(name)
            .map_err(|error| CliError::Input(format!("{error:?}")))?;
        opened.push(name.to_string_lossy().replace('\\', "/"));
    }
    let pool = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
        .map_err(|e| CliError::Input(format!("the contracts do not hold together: {e}")))?;
    let services = pool
        .services()
        .filter(|s| opened.iter().any(|name| name == s.parent_file().name()))
        .map(|s| s.full_name().to_owned())
        .collect();
    Ok(Schema { pool, services })
}

/// The files reflection gave, encoded as they came (so that options'
/// extensions survive), by name.
#[derive(Default)]
struct Files {
    names: BTreeSet<String>,
    encoded: Vec<Bytes>,
    imports: BTreeSet<String>,
    /// The bytes of `encoded`.
    bytes: usize,
}

impl Files {
    fn add(&mut self, found: Vec<(String, Bytes)>) {
        for (name, bytes) in found {
            if !self.names.insert(name) {
                continue;
            }
            if let Ok(file) =
                <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.clone())
            {
                self.imports.extend(file.dependency);
            }
            self.bytes += bytes.len();
            self.encoded.push(bytes);
        }
    }

    /// A file some file imports that has not come yet.
    fn missing(&self) -> Option<String> {
        self.imports
            .iter()
            .find(|name| !self.names.contains(*name))
            .cloned()
    }

    fn pool(&self) -> Result<DescriptorPool, CliError> {
        // A FileDescriptorSet is its files as field 1.
        let mut set = BytesMut::new();
        for file in &self.encoded {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut set);
            prost::encoding::encode_varint(file.len() as u64, &mut set);
            set.put_slice(file);
        }
        DescriptorPool::decode(set.freeze()).map_err(|e| {
            CliError::Rpc(format!(
                "the server's reflection gave descriptors that do not hold together: {e}"
            ))
        })
    }
}

/// A reflection stream: one request, one answer, in turn.
struct Reflection<'a> {
    connection: &'a Connection,
    path: &'static str,
    requests: mpsc::Sender<ServerReflectionRequest>,
    /// The request stream, until the call starts.
    pending: Option<mpsc::Receiver<ServerReflectionRequest>>,
    /// The answers, once the call has started.
    responses: Option<tonic::Streaming<ServerReflectionResponse>>,
}

/// The reflection services, newest first; their messages are the same on
/// the wire.
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

impl<'a> Reflection<'a> {
    fn new(connection: &'a Connection, path: &'static str) -> Self {
        let (requests, pending) = mpsc::channel(1);
        Self {
            connection,
            path,
            requests,
            pending: Some(pending),
            responses: None,
        }
    }

    /// Opens a stream to v1, else v1alpha, and lists the services.
    async fn open(connection: &'a Connection) -> Result<(Self, BTreeSet<String>), CliError> {
        for path in REFLECTION_PATHS {
            let mut reflection = Self::new(connection, path);
            match reflection
                .exchange(MessageRequest::ListServices(String::new()))
                .await
            {
                Ok(MessageResponse::ListServicesResponse(list)) => {
                    let services = list.service.into_iter().map(|s| s.name).collect();
                    return Ok((reflection, services));
                }
                Ok(other) => return Err(unexpected(other)),
                Err(status) if status.code() == tonic::Code::Unimplemented => continue,
                Err(status) => {
                    return Err(connect::rpc_error(&status, &connection.addr, "reflection"));
                }
            }
        }
        Err(CliError::Input(format!(
            "the server at {} does not serve reflection (neither grpc.reflection.v1 nor v1alpha); \
             pass its contracts with --proto <file> [-I <dir>]",
            connection.addr
        )))
    }

    /// Sends `request` and waits for its answer. The request goes first:
    /// some servers answer the call's headers only once a message came.
    async fn exchange(
        &mut self,
        request: MessageRequest,
    ) -> Result<MessageResponse, tonic::Status> {
        let closed = || tonic::Status::unavailable("the reflection stream closed");
        self.requests
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .await
            .map_err(|_| closed())?;
        if self.responses.is_none() {
            let pending = self.pending.take().ok_or_else(closed)?;
            self.responses = Some(Self::start(self.connection, self.path, pending).await?);
        }
        let responses = self.responses.as_mut().ok_or_else(closed)?;
        match responses.message().await? {
            Some(response) => response
                .message_response
                .ok_or_else(|| tonic::Status::internal("an empty reflection answer")),
            None => Err(closed()),
        }
    }

    async fn start(
        connection: &Connection,
        path: &'static str,
        receiver: mpsc::Receiver<ServerReflectionRequest>,
    ) -> Result<tonic::Streaming<ServerReflectionResponse>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(connection.client.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        *request.metadata_mut() = connection.metadata.clone();
        sinew_client::CallOptions::timeout(REFLECTION_TIMEOUT).apply(&mut request);
        let codec =
            tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
        grpc.streaming(request, http::uri::PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, CliError> {
        self.exchange(request)
            .await
            .map_err(|status| connect::rpc_error(&status, &self.connection.addr, "reflection"))
    }

    async fn file_containing_symbol(
        &mut self,
        symbol: &str,
    ) -> Result<Vec<(String, Bytes)>, CliError> {
        let answer = self
            .ask(MessageRequest::FileContainingSymbol(symbol.to_owned()))
            .await?;
        files_of(answer)
    }

    async fn file_by_filename(&mut self, name: &str) -> Result<Vec<(String, Bytes)>, CliError> {
        let answer = self
            .ask(MessageRequest::FileByFilename(name.to_owned()))
            .await?;
        files_of(answer)
    }
}

fn files_of(answer: MessageResponse) -> Result<Vec<(String, Bytes)>, CliError> {
    match answer {
        MessageResponse::FileDescriptorResponse(files) => files
            .file_descriptor_proto
            .into_iter()
            .map(|bytes| {
                let bytes = Bytes::from(bytes);
                let file =
                    <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.clone())
                        .map_err(|e| {
                            CliError::Rpc(format!(
                                "the server's reflection gave a file that does not decode: {e}"
                            ))
                        })?;
                Ok((file.name.unwrap_or_default(), bytes))
            })
            .collect(),
        other => Err(unexpected(other)),
    }
}

fn unexpected(answer: MessageResponse) -> CliError {
    match answer {
        MessageResponse::ErrorResponse(error) => CliError::Input(format!(
            "reflection: {} ({})",
            error.error_message, error.error_code
        )),
        _ => CliError::Rpc("reflection answered another question than the one asked".to_owned()),
    }
}

// === list and describe ===

/// `sinew list`.
pub(crate) async fn list(args: ListArgs) -> Result<ExitCode, CliError> {
    let connection = connect::connect(&args.connect).await?;
    let symbols: Vec<&str> = args.service.as_deref().into_iter().collect();
    let schema = Schema::load(&connection, &args.schema, &symbols).await?;
    match &args.service {
        None => {
            for service in &schema.services {
                println!("{service}");
            }
        }
        Some(name) => {
            let service = schema.service(name)?;
            for method in service.methods() {
                println!("{}/{}", service.full_name(), method.name());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sinew describe`.
pub(crate) async fn describe(args: DescribeArgs) -> Result<ExitCode, CliError> {
    let connection = connect::connect(&args.connect).await?;
    let symbol = args.symbol.trim_start_matches('.');
    let service_part = symbol.split('/').next().unwrap_or(symbol);
    let parent = symbol.rsplit_once('.').map_or(symbol, |(parent, _)| parent);
    let schema = Schema::load(&connection, &args.schema, &[symbol, service_part, parent]).await?;
    let pool = &schema.pool;
    let text = if let Some(service) = pool.get_service_by_name(symbol) {
        describe_service(&service)
    } else if let Some(message) = pool.get_message_by_name(symbol) {
        describe_message(&message, "")
    } else if let Some(enumeration) = pool.get_enum_by_name(symbol) {
        describe_enum(&enumeration, "")
    } else if symbol.contains('/') || pool.get_service_by_name(parent).is_some() {
        let method = schema.method(symbol)?;
        let mut text = method_line(&method);
        text.push('\n');
        text.push_str(&describe_message(&method.input(), ""));
        text.push_str(&describe_message(&method.output(), ""));
        text
    } else {
        let mut names: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        names.extend(pool.all_messages().map(|m| m.full_name().to_owned()));
        names.extend(pool.all_enums().map(|e| e.full_name().to_owned()));
        return Err(CliError::Input(format!(
            "no service, method, message or enum is named {symbol}{}",
            suggest(symbol, names.iter().map(String::as_str))
        )));
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn method_line(method: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    let mut line = format!(
        "rpc {}({}{}) returns ({}{});",
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    );
    let level = method
        .method_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.idempotency_level);
    match level {
        Some(1) => line.push_str("  // NO_SIDE_EFFECTS"),
        Some(2) => line.push_str("  // IDEMPOTENT"),
        _ => {}
    }
    line
}

fn describe_service(service: &ServiceDescriptor) -> String {
    let mut text = format!(
        "// {}\nservice {} {{\n",
        service.parent_file().name(),
        service.full_name()
    );
    for method in service.methods() {
        let _ = writeln!(text, "  {}", method_line(&method));
    }
    text.push_str("}\n");
    text
}

fn type_name(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(message) if field.is_map() => {
            let key = message.map_entry_key_field();
            let value = message.map_entry_value_field();
            format!("map<{}, {}>", type_name(&key), type_name(&value))
        }
        Kind::Message(message) => message.full_name().to_owned(),
        Kind::Enum(enumeration) => enumeration.full_name().to_owned(),
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
    }
}

/// The type of a field as a user reads it in an error: `repeated string`.
pub(crate) fn field_type(field: &FieldDescriptor) -> String {
    if field.is_list() {
        format!("repeated {}", type_name(field))
    } else {
        type_name(field)
    }
}

fn describe_message(message: &MessageDescriptor, indent: &str) -> String {
    let mut text = format!(
        "{indent}message {} {{\n",
        if indent.is_empty() {
            message.full_name()
        } else {
            message.name()
        }
    );
    let mut oneof_done = BTreeSet::new();
    for field in message.fields() {
        if let Some(oneof) = field.containing_oneof() {
            if oneof.is_synthetic() {
                let _ = writeln!(
                    text,
                    "{indent}  optional {} {} = {};",
                    type_name(&field),
                    field.name(),
                    field.number()
                );
                continue;
            }
            if !oneof_done.insert(oneof.name().to_owned()) {
                continue;
            }
            let _ = writeln!(text, "{indent}  oneof {} {{", oneof.name());
            for member in oneof.fields() {
                let _ = writeln!(
                    text,
                    "{indent}    {} {} = {};",
                    type_name(&member),
                    member.name(),
                    member.number()
                );
            }
            let _ = writeln!(text, "{indent}  }}");
            continue;
        }
        let _ = writeln!(
            text,
            "{indent}  {} {} = {};",
            field_type(&field),
            field.name(),
            field.number()
        );
    }
    let inner = format!("{indent}  ");
    for nested in message.child_messages().filter(|m| !m.is_map_entry()) {
        text.push_str(&describe_message(&nested, &inner));
    }
    for nested in message.child_enums() {
        text.push_str(&describe_enum(&nested, &inner));
    }
    let _ = writeln!(text, "{indent}}}");
    text
}

fn describe_enum(enumeration: &EnumDescriptor, indent: &str) -> String {
    let mut text = format!(
        "{indent}enum {} {{\n",
        if indent.is_empty() {
            enumeration.full_name()
        } else {
            enumeration.name()
        }
    );
    for value in enumeration.values() {
        let _ = writeln!(text, "{indent}  {} = {};", value.name(), value.number());
    }
    let _ = writeln!(text, "{indent}}}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_name_is_suggested_and_a_far_one_is_not() {
        let names = ["greeter.v1.Greeter", "echo.v1.Echo"];
        assert_eq!(
            suggest("greeter.v1.Greter", names.into_iter()),
            "; did you mean greeter.v1.Greeter?"
        );
        assert_eq!(suggest("zzzzzzzz", names.into_iter()), "");
    }

    #[test]
    fn a_contract_that_does_not_compile_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.proto");
        std::fs::write(
            &path,
            "syntax = \"proto3\";\nmessage A {\n  strin x = 1;\n}\n",
        )
        .unwrap();
        let Err(error) = compile(&[path], &[]) else {
            panic!("compiled")
        };
        let text = error.to_string();
        assert!(text.contains("bad.proto") && text.contains(":3:"), "{text}");
        assert_eq!(error.exit_code(), 65);
    }

    #[test]
    fn described_messages_read_as_proto() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.proto");
        std::fs::write(
            &path,
            "syntax = \"proto3\";\npackage p;\nmessage A {\n  repeated string tags = 1;\n  map<string, int64> counts = 2;\n  oneof pick { int32 n = 3; string s = 4; }\n  enum E { E_UNSPECIFIED = 0; }\n}\nservice S { rpc Get(A) returns (stream A) { option idempotency_level = NO_SIDE_EFFECTS; } }\n",
        )
        .unwrap();
        let schema = compile(&[path], &[]).unwrap();
        let text = describe_message(&schema.pool.get_message_by_name("p.A").unwrap(), "");
        assert!(text.contains("repeated string tags = 1;"), "{text}");
        assert!(text.contains("map<string, int64> counts = 2;"), "{text}");
        assert!(text.contains("oneof pick {"), "{text}");
        assert!(text.contains("enum E {"), "{text}");
        let method = schema.method("p.S/Get").unwrap();
        assert_eq!(
            method_line(&method),
            "rpc Get(p.A) returns (stream p.A);  // NO_SIDE_EFFECTS"
        );
        let error = schema.method("p.S/Gte").unwrap_err().to_string();
        assert!(error.contains("did you mean Get?"), "{error}");
        assert!(schema.services.contains("p.S"));
    }
}
