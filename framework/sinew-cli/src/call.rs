//! `sinew call`: JSON in, a call of any streaming kind, JSON out.

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    time::Duration,
};

use bytes::Buf as _;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    sync::{mpsc, oneshot},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::{
    BenchArgs, CallArgs, CliError,
    connect::{self, Connection},
    error::code_name,
    schema::{Schema, field_type, suggest},
};

/// Streams of requests are read ahead at most this many messages.
const INPUT_QUEUE: usize = 16;
/// The most bytes of JSON a request may take (and a file or standard input
/// holding requests, read whole).
const MAX_INPUT_BYTES: u64 = 64 << 20;

// === the codec of messages known at run time ===

/// Encodes and decodes [`DynamicMessage`]s of the method's types.
#[derive(Clone)]
struct DynamicCodec {
    output: MessageDescriptor,
}

struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.output.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(format!("cannot encode the request: {e}")))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|e| {
                tonic::Status::internal(format!(
                    "the response does not decode as {}: {e}",
                    self.0.full_name()
                ))
            })
    }
}

// === JSON to messages ===

/// The message of type `descriptor` that `text` (proto3 JSON) describes;
/// an error names the field that does not fit and the type it wants.
pub(crate) fn message_from_json(
    descriptor: &MessageDescriptor,
    text: &str,
) -> Result<DynamicMessage, CliError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| CliError::Input(format!("the request is not JSON: {e}")))?;
    message_from_value(descriptor, &value)
}

fn message_from_value(
    descriptor: &MessageDescriptor,
    value: &Value,
) -> Result<DynamicMessage, CliError> {
    match DynamicMessage::deserialize(descriptor.clone(), value) {
        Ok(message) => Ok(message),
        Err(error) => Err(CliError::Input(
            explain(descriptor, value, "").unwrap_or_else(|| {
                format!(
                    "the request does not fit {}: {error}",
                    descriptor.full_name()
                )
            }),
        )),
    }
}

/// Finds the field of `value` that does not fit `descriptor`, and says why.
fn explain(descriptor: &MessageDescriptor, value: &Value, path: &str) -> Option<String> {
    let name = descriptor.full_name();
    if name.starts_with("google.protobuf.") {
        // The well-known types have JSON forms of their own; their
        // deserializer's message is the best there is.
        return None;
    }
    let Value::Object(object) = value else {
        let at = if path.is_empty() {
            "the request".to_owned()
        } else {
            format!("field `{path}`")
        };
        return Some(format!(
            "{at} must be a JSON object (message {name}), not {}",
            kind_of(value)
        ));
    };
    for (key, field_value) in object {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = descriptor
            .get_field_by_json_name(key)
            .or_else(|| descriptor.get_field_by_name(key))
        else {
            let names: Vec<String> = descriptor
                .fields()
                .map(|f| f.json_name().to_owned())
                .collect();
            return Some(format!(
                "{name} has no field `{key}`{}",
                suggest(key, names.iter().map(String::as_str))
            ));
        };
        let mut alone = serde_json::Map::new();
        alone.insert(key.clone(), field_value.clone());
        let Err(error) = DynamicMessage::deserialize(descriptor.clone(), Value::Object(alone))
        else {
            continue;
        };
        if let prost_reflect::Kind::Message(inner) = field.kind()
            && !field.is_map()
        {
            let found = match field_value {
                Value::Array(items) if field.is_list() => items
                    .iter()
                    .enumerate()
                    .find_map(|(i, item)| explain(&inner, item, &format!("{at}[{i}]"))),
                _ if field.is_list() => None,
                _ => explain(&inner, field_value, &at),
            };
            if found.is_some() {
                return found;
            }
        }
        let error = error.to_string();
        let error = error.split(" at line ").next().unwrap_or(&error).to_owned();
        return Some(format!(
            "field `{at}` is {} ({}), but the request has {}: {error}",
            field_type(&field),
            descriptor.full_name(),
            kind_of(field_value)
        ));
    }
    None
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Where the request's JSON comes from.
enum Input {
    Text(String),
    Stdin,
}

impl Input {
    fn of(data: Option<&str>) -> Result<Self, CliError> {
        match data {
            None => Ok(Self::Text("{}".to_owned())),
            Some("@-") => Ok(Self::Stdin),
            Some(file) if file.starts_with('@') => {
                let path = &file[1..];
                let size = std::fs::metadata(path)
                    .map_err(|e| CliError::Io(format!("cannot read {path}: {e}")))?
                    .len();
                if size > MAX_INPUT_BYTES {
                    return Err(too_large(path));
                }
                std::fs::read_to_string(path)
                    .map(Self::Text)
                    .map_err(|e| CliError::Io(format!("cannot read {path}: {e}")))
            }
            Some(text) => Ok(Self::Text(text.to_owned())),
        }
    }

    /// The whole input, for a single request.
    async fn read_all(self) -> Result<String, CliError> {
        match self {
            Self::Text(text) => Ok(text),
            Self::Stdin => {
                let mut text = String::new();
                let mut limited = tokio::io::stdin().take(MAX_INPUT_BYTES + 1);
                limited
                    .read_to_string(&mut text)
                    .await
                    .map_err(|e| CliError::Io(format!("cannot read standard input: {e}")))?;
                if text.len() as u64 > MAX_INPUT_BYTES {
                    return Err(too_large("standard input"));
                }
                Ok(text)
            }
        }
    }
}

fn too_large(what: &str) -> CliError {
    CliError::Input(format!(
        "{what} is larger than {} MiB",
        MAX_INPUT_BYTES >> 20
    ))
}

/// Parses the JSON values of `text`, one request each (newline-delimited,
/// or simply one after the other).
fn messages_of(
    descriptor: &MessageDescriptor,
    text: &str,
) -> Result<Vec<DynamicMessage>, CliError> {
    let mut messages = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let value =
            value.map_err(|e| CliError::Input(format!("request {} is not JSON: {e}", i + 1)))?;
        messages.push(message_from_value(descriptor, &value).map_err(|e| match e {
            CliError::Input(text) => CliError::Input(format!("request {}: {text}", i + 1)),
            other => other,
        })?);
    }
    Ok(messages)
}

/// Sends the requests of `input` as they come; a request that does not
/// parse ends the call (through `failed`).
fn stream_input(
    descriptor: MessageDescriptor,
    input: Input,
) -> (ReceiverStream<DynamicMessage>, oneshot::Receiver<CliError>) {
    let (sender, receiver) = mpsc::channel(INPUT_QUEUE);
    let (failed, failure) = oneshot::channel();
    tokio::spawn(async move {
        let result = async {
            match input {
                Input::Text(text) => {
                    for message in messages_of(&descriptor, &text)? {
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                }
                Input::Stdin => {
                    let mut reader = BufReader::new(tokio::io::stdin());
                    let mut bytes = Vec::new();
                    let mut n = 0;
                    loop {
                        bytes.clear();
                        let read = (&mut reader)
                            .take(MAX_INPUT_BYTES + 1)
                            .read_until(b'\n', &mut bytes)
                            .await
                            .map_err(|e| {
                                CliError::Io(format!("cannot read standard input: {e}"))
                            })?;
                        if read == 0 {
                            break;
                        }
                        if bytes.len() as u64 > MAX_INPUT_BYTES {
                            return Err(too_large(&format!("request {}", n + 1)));
                        }
                        let line = String::from_utf8_lossy(&bytes);
                        if line.trim().is_empty() {
                            continue;
                        }
                        n += 1;
                        let message =
                            message_from_json(&descriptor, &line).map_err(|e| match e {
                                CliError::Input(text) => {
                                    CliError::Input(format!("request {n}: {text}"))
                                }
                                other => other,
                            })?;
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Ok::<(), CliError>(())
        }
        .await;
        if let Err(error) = result {
            let _ = failed.send(error);
        }
    });
    (ReceiverStream::new(receiver), failure)
}

// === the call ===

/// `sinew call`.
pub(crate) async fn call(args: CallArgs) -> Result<ExitCode, CliError> {
    let input = Input::of(args.data.as_deref())?;
    let connection = connect::connect(&args.connect).await?;
    let (schema, method) = find_method(&connection, &args.schema, &args.method).await?;
    let printer = Printer {
        options: SerializeOptions::new().skip_default_fields(!args.emit_defaults),
        pretty: !method.is_server_streaming(),
    };
    let result = run_call(&connection, &method, input, args.timeout, &printer).await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(Failure::Cli(error)) => Err(error),
        Err(Failure::Status(status)) => Err(connect::connect_error(&status, &connection.addr)
            .unwrap_or_else(|| status_error(&status, &schema))),
    }
}

/// The schema, through reflection or `--proto`, and the method named
/// `name` (`package.Service/Method`) in it.
async fn find_method(
    connection: &Connection,
    args: &crate::SchemaArgs,
    name: &str,
) -> Result<(Schema, MethodDescriptor), CliError> {
    let path = name.trim_start_matches('/');
    let service = path.split_once('/').map_or(path, |(service, _)| service);
    let schema = Schema::load(connection, args, &[service]).await?;
    let method = schema.method(name)?;
    Ok((schema, method))
}

/// The HTTP/2 path of `method`: `/package.Service/Method`.
fn method_path(method: &MethodDescriptor) -> Result<http::uri::PathAndQuery, CliError> {
    http::uri::PathAndQuery::try_from(format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .map_err(|_| {
        CliError::Input(format!(
            "{} is not a usable method name",
            method.full_name()
        ))
    })
}

/// Why a call did not end well.
enum Failure {
    Cli(CliError),
    Status(tonic::Status),
}

impl From<CliError> for Failure {
    fn from(error: CliError) -> Self {
        Self::Cli(error)
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// Prints responses as JSON.
struct Printer {
    options: SerializeOptions,
    /// One indented document (a single response), or one line each.
    pretty: bool,
}

impl Printer {
    fn print(&self, message: &DynamicMessage) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        let written = if self.pretty {
            let mut serializer = serde_json::Serializer::pretty(&mut out);
            message.serialize_with_options(&mut serializer, &self.options)
        } else {
            let mut serializer = serde_json::Serializer::new(&mut out);
            message.serialize_with_options(&mut serializer, &self.options)
        };
        written.map_err(|e| CliError::Io(format!("cannot write the response: {e}")))?;
        writeln!(out)
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Io(format!("cannot write the response: {e}")))
    }
}

async fn run_call(
    connection: &Connection,
    method: &MethodDescriptor,
    input: Input,
    timeout: Option<Duration>,
    printer: &Printer,
) -> Result<(), Failure> {
    let path = method_path(method)?;
    let codec = DynamicCodec {
        output: method.output(),
    };
    let mut grpc = tonic::client::Grpc::new(connection.client.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    fn prepare<T>(
        request: &mut tonic::Request<T>,
        connection: &Connection,
        timeout: Option<Duration>,
    ) {
        *request.metadata_mut() = connection.metadata.clone();
        if let Some(timeout) = timeout {
            sinew_client::CallOptions::timeout(timeout).apply(request);
        }
    }
    if !method.is_client_streaming() {
        let text = input.read_all().await?;
        let message = message_from_json(&method.input(), &text)?;
        let mut request = tonic::Request::new(message);
        prepare(&mut request, connection, timeout);
        if method.is_server_streaming() {
            let mut stream = grpc
                .server_streaming(request, path, codec)
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                printer.print(&message)?;
            }
        } else {
            let response = grpc.unary(request, path, codec).await?;
            printer.print(response.get_ref())?;
        }
        return Ok(());
    }
    let (requests, failure) = stream_input(method.input(), input);
    let mut failure = std::pin::pin!(async move {
        match failure.await {
            Ok(error) => error,
            // The input ended well: nothing to wait for.
            Err(_) => std::future::pending().await,
        }
    });
    let mut request = tonic::Request::new(requests);
    prepare(&mut request, connection, timeout);
    if method.is_server_streaming() {
        let mut stream = tokio::select! {
            response = grpc.streaming(request, path, codec) => response?.into_inner(),
            error = &mut failure => return Err(error.into()),
        };
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    Some(message) => printer.print(&message)?,
                    None => break,
                },
                error = &mut failure => return Err(error.into()),
            }
        }
    } else {
        let response = tokio::select! {
            response = grpc.client_streaming(request, path, codec) => response?,
            error = &mut failure => return Err(error.into()),
        };
        printer.print(response.get_ref())?;
    }
    Ok(())
}

/// A `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The standard error details of `google/rpc/error_details.proto`, written
/// out here with their field numbers, so that a status carrying them is
/// decoded whatever the server's contracts import.
const STANDARD_DETAILS: &str = r#"
syntax = "proto3";
package google.rpc;
import "google/protobuf/duration.proto";
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message RetryInfo { google.protobuf.Duration retry_delay = 1; }
message DebugInfo { repeated string stack_entries = 1; string detail = 2; }
message QuotaFailure {
  message Violation { string subject = 1; string description = 2; }
  repeated Violation violations = 1;
}
message PreconditionFailure {
  message Violation { string type = 1; string subject = 2; string description = 3; }
  repeated Violation violations = 1;
}
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; }
  repeated FieldViolation field_violations = 1;
}
message RequestInfo { string request_id = 1; string serving_data = 2; }
message ResourceInfo { string resource_type = 1; string resource_name = 2; string owner = 3; string description = 4; }
message Help {
  message Link { string description = 1; string url = 2; }
  repeated Link links = 1;
}
message LocalizedMessage { string locale = 1; string message = 2; }
"#;

/// The pool of [`STANDARD_DETAILS`], compiled once.
fn standard_details() -> Option<&'static prost_reflect::DescriptorPool> {
    static POOL: std::sync::OnceLock<Option<prost_reflect::DescriptorPool>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        struct Details;
        impl protox::file::FileResolver for Details {
            fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
                if name == "sinew_cli/error_details.proto" {
                    protox::file::File::from_source(name, STANDARD_DETAILS)
                } else {
                    Err(protox::Error::file_not_found(name))
                }
            }
        }
        let mut resolver = protox::file::ChainFileResolver::new();
        resolver.add(Details);
        resolver.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file("sinew_cli/error_details.proto").ok()?;
        Some(compiler.descriptor_pool())
    })
    .as_ref()
}

/// The error of a call the server answered with `status`: its code and
/// message, and its details decoded where the schema, or the standard
/// `google.rpc` details, know their types.
fn status_error(status: &tonic::Status, schema: &Schema) -> CliError {
    let mut text = format!(
        "{} ({}): {}",
        code_name(status.code()),
        status.code() as i32,
        status.message()
    );
    if !status.details().is_empty() {
        match RpcStatus::decode(status.details()) {
            Ok(details) => {
                for any in details.details {
                    let name = any.type_url.rsplit('/').next().unwrap_or_default();
                    let decoded = schema
                        .pool
                        .get_message_by_name(name)
                        .or_else(|| standard_details()?.get_message_by_name(name))
                        .and_then(|descriptor| {
                            DynamicMessage::decode(descriptor, any.value.as_slice()).ok()
                        })
                        .and_then(|message| serde_json::to_string(&message).ok());
                    match decoded {
                        Some(json) => text.push_str(&format!("\n  {name}: {json}")),
                        None => text.push_str(&format!(
                            "\n  {} ({} bytes)",
                            any.type_url,
                            any.value.len()
                        )),
                    }
                }
            }
            Err(_) => text.push_str(&format!(
                "\n  details: {} bytes that are not a google.rpc.Status",
                status.details().len()
            )),
        }
    }
    CliError::Status {
        code: status.code(),
        text,
    }
}

// === the load test's request ===

/// What `sinew bench` runs: found and encoded before the clock starts.
pub(crate) struct PreparedBench {
    pub target: crate::bench::Target,
    pub call: crate::bench::Call,
    pub plan: crate::bench::Plan,
}

/// Resolves the method and encodes the request of `sinew bench`.
pub(crate) async fn prepare_bench(args: &BenchArgs) -> Result<PreparedBench, CliError> {
    let connection = connect::connect(&args.connect).await?;
    let (_, method) = find_method(&connection, &args.schema, &args.method).await?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(CliError::Usage(format!(
            "{} streams; sinew bench load-tests unary methods",
            method.full_name()
        )));
    }
    let text = Input::of(args.data.as_deref())?.read_all().await?;
    let message = message_from_json(&method.input(), &text)?;
    let mut encoded = bytes::BytesMut::with_capacity(message.encoded_len());
    message
        .encode(&mut encoded)
        .map_err(|e| CliError::Input(format!("cannot encode the request: {e}")))?;
    let (uri, tls) = connect::endpoint(&args.connect)?;
    let tls = if tls {
        let loaded = sinew_core::tls::ClientTls::load(connect::tls_config(&args.connect))
            .map_err(|e| connect::tls_error(&e))?;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = loaded
            .server_name(host)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Some((loaded.current(), name))
    } else {
        None
    };
    let mut metadata = connection.metadata.clone().into_headers();
    if let Some(token) = &args.connect.token {
        let value = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| CliError::Usage("--token: not a valid header value".to_owned()))?;
        metadata.insert(http::header::AUTHORIZATION, value);
    }
    let path = method_path(&method)?;
    Ok(PreparedBench {
        target: crate::bench::Target {
            uri,
            tls,
            connect_timeout: args.connect.connect_timeout,
        },
        call: crate::bench::Call {
            path,
            metadata,
            message: encoded.freeze(),
            timeout: Some(args.timeout),
        },
        plan: crate::bench::Plan {
            concurrency: args.concurrency,
            connections: args.connections,
            stop: match (args.total, args.duration) {
                (Some(total), _) => crate::bench::Stop::Total(total),
                (None, Some(duration)) => crate::bench::Stop::Duration(duration),
                (None, None) => {
                    return Err(CliError::Usage(
                        "give -n <total> or -z <duration>".to_owned(),
                    ));
                }
            },
            rps: args.rps,
            progress: !args.json && std::io::stderr().is_terminal(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.proto");
        std::fs::write(
            &path,
            "syntax = \"proto3\";\npackage shop;\nmessage Line { string sku = 1; uint32 quantity = 2; }\n\
             message Order { string id = 1; repeated Line lines = 2; Line gift = 3; }\n\
             service Shop { rpc Place(Order) returns (Order); }\n",
        )
        .unwrap();
        crate::schema::compile(&[path], &[]).unwrap()
    }

    #[test]
    fn json_that_fits_becomes_the_message() {
        let schema = schema();
        let order = schema.pool.get_message_by_name("shop.Order").unwrap();
        let message = message_from_json(
            &order,
            r#"{"id": "o-1", "lines": [{"sku": "a", "quantity": 2}]}"#,
        )
        .unwrap();
        assert_eq!(
            message.get_field_by_name("id").unwrap().as_str(),
            Some("o-1")
        );
    }

    #[test]
    fn a_misfit_names_the_field_and_the_type_it_wants() {
        let schema = schema();
        let order = schema.pool.get_message_by_name("shop.Order").unwrap();
        let error = message_from_json(
            &order,
            r#"{"id": "o-1", "lines": [{"sku": "a"}, {"quantity": "many"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("`lines[1].quantity` is uint32"), "{error}");
        assert!(error.contains("the string \"many\""), "{error}");
        let error = message_from_json(&order, r#"{"gift": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`gift` must be a JSON object (message shop.Line)"),
            "{error}"
        );
        let error = message_from_json(&order, r#"{"idd": "x"}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no field `idd`; did you mean id?"),
            "{error}"
        );
        assert_eq!(error.exit_code(), 65);
        let error = message_from_json(&order, "{").unwrap_err().to_string();
        assert!(error.contains("not JSON"), "{error}");
    }

    #[test]
    fn a_stream_of_requests_is_one_json_value_after_another() {
        let schema = schema();
        let line = schema.pool.get_message_by_name("shop.Line").unwrap();
        let messages =
            messages_of(&line, "{\"sku\":\"a\"}\n{\"sku\":\"b\"}\n\n{\"sku\":\"c\"}").unwrap();
        assert_eq!(messages.len(), 3);
        let error = messages_of(&line, "{\"sku\":\"a\"}\n{\"qty\":1}")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("request 2:"), "{error}");
    }

    #[test]
    fn status_details_are_decoded_where_the_schema_knows_their_type() {
        let schema = schema();
        let line = schema.pool.get_message_by_name("shop.Line").unwrap();
        let detail = message_from_json(&line, r#"{"sku": "a"}"#).unwrap();
        let details = RpcStatus {
            code: 5,
            message: "gone".into(),
            details: vec![
                prost_types::Any {
                    type_url: "type.googleapis.com/shop.Line".into(),
                    value: detail.encode_to_vec(),
                },
                prost_types::Any {
                    type_url: "type.googleapis.com/other.Thing".into(),
                    value: vec![1, 2],
                },
            ],
        };
        let status = tonic::Status::with_details(
            tonic::Code::NotFound,
            "gone",
            details.encode_to_vec().into(),
        );
        let error = status_error(&status, &schema);
        assert_eq!(error.exit_code(), 105);
        let text = error.to_string();
        assert!(text.contains("other.Thing (2 bytes)"), "{text}");

        // The standard details are known without the server's contracts.
        let bad_request = standard_details()
            .unwrap()
            .get_message_by_name("google.rpc.BadRequest")
            .unwrap();
        let detail = message_from_json(
            &bad_request,
            r#"{"fieldViolations": [{"field": "sku", "description": "empty"}]}"#,
        )
        .unwrap();
        let details = RpcStatus {
            code: 3,
            message: "bad".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: detail.encode_to_vec(),
            }],
        };
        let status = tonic::Status::with_details(
            tonic::Code::InvalidArgument,
            "bad",
            details.encode_to_vec().into(),
        );
        let text = status_error(&status, &schema).to_string();
        assert!(
            text.contains(r#"google.rpc.BadRequest: {"fieldViolations":[{"field":"sku","description":"empty"}]}"#),
            "{text}"
        );
        let text = error.to_string();
        assert!(text.starts_with("NOT_FOUND (5): gone"), "{text}");
        assert!(text.contains("shop.Line: {\"sku\":\"a\"}"), "{text}");
        assert!(text.contains("other.Thing (2 bytes)"), "{text}");
    }
}
