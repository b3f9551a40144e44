//! Reaching a server: the address, TLS, the token and metadata, and what a
//! failed connect is told as.

use std::time::Duration;

use base64::Engine as _;
use sinew_client::{Client, ClientConfig, ConnectFailed, credentials::StaticToken};
use sinew_core::tls::{ClientTlsConfig, HandshakeFailure};
use tonic::metadata::{AsciiMetadataKey, BinaryMetadataKey, MetadataMap, MetadataValue};

use crate::{CliError, ConnectArgs};

/// A client of one server, with the metadata every call carries.
pub(crate) struct Connection {
    /// Calls to the server: no retries beyond those of requests that never
    /// left, no hedging, no breaker.
    pub client: Client,
    /// The `-H` metadata.
    pub metadata: MetadataMap,
    /// The address as given, for messages.
    pub addr: String,
}

/// The endpoint URI of `args`, and whether it uses TLS.
pub(crate) fn endpoint(args: &ConnectArgs) -> Result<(http::Uri, bool), CliError> {
    let wants_tls = args.tls
        || args.cacert.is_some()
        || args.cert.is_some()
        || args.insecure
        || args.server_name.is_some();
    let (text, tls) = if let Some(rest) = args.addr.strip_prefix("https://") {
        (format!("https://{rest}"), true)
    } else if let Some(rest) = args.addr.strip_prefix("http://") {
        if wants_tls {
            return Err(CliError::Usage(format!(
                "{} says http:// but TLS options were given; use https:// or drop them",
                args.addr
            )));
        }
        (format!("http://{rest}"), false)
    } else if wants_tls {
        (format!("https://{}", args.addr), true)
    } else {
        (format!("http://{}", args.addr), false)
    };
    let uri: http::Uri = text.parse().map_err(|_| {
        CliError::Usage(format!(
            "{:?} is not an address: give host:port, http://host:port or https://host:port",
            args.addr
        ))
    })?;
    if uri.port_u16().is_none() {
        return Err(CliError::Usage(format!(
            "{:?} has no port: give host:port",
            args.addr
        )));
    }
    Ok((uri, tls))
}

/// The TLS of `args`.
pub(crate) fn tls_config(args: &ConnectArgs) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &args.cacert {
        tls = tls.ca(ca);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(cert, key);
    }
    if let Some(name) = &args.server_name {
        tls = tls.server_name(name);
    }
    if args.insecure {
        tls = tls.dangerous_accept_any_certificate();
    }
    tls
}

/// The error of TLS files that cannot be used: one that cannot be read is
/// an I/O error, one that holds no usable certificate or key bad input.
pub(crate) fn tls_error(error: &sinew_core::tls::TlsError) -> CliError {
    match error {
        sinew_core::tls::TlsError::Read { .. } => CliError::Io(error.to_string()),
        _ => CliError::Input(error.to_string()),
    }
}

/// The `-H key:value` metadata of `args`; a `-bin` key's value is base64,
/// as grpcurl takes it.
pub(crate) fn metadata(args: &ConnectArgs) -> Result<MetadataMap, CliError> {
    let mut map = MetadataMap::new();
    for header in &args.headers {
        let Some((key, value)) = header.split_once(':') else {
            return Err(CliError::Usage(format!(
                "-H {header:?}: write metadata as key:value"
            )));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let bad = |what: &str| CliError::Usage(format!("-H {header:?}: {what}"));
        if key.ends_with("-bin") {
            let key = BinaryMetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| bad("the key is not a valid metadata key"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
                .map_err(|_| bad("a key ending in -bin takes its bytes in base64"))?;
            map.append_bin(key, MetadataValue::from_bytes(&bytes));
        } else {
            let key: AsciiMetadataKey = key
                .parse()
                .map_err(|_| bad("the key is not a valid metadata key"))?;
            let value = value.parse().map_err(|_| {
                bad("the value must be printable ASCII (use a key ending in -bin for bytes)")
            })?;
            map.append(key, value);
        }
    }
    Ok(map)
}

/// Connects to the server of `args` (lazily: the first call dials).
pub(crate) async fn connect(args: &ConnectArgs) -> Result<Connection, CliError> {
    let (uri, tls) = endpoint(args)?;
    let mut config = ClientConfig::endpoint(uri.to_string())
        .connect_timeout(args.connect_timeout)
        // One attempt per call, no deadline but the one asked for, and
        // nothing that refuses a call on the client's side: a command
        // line tells what the server did.
        .retry(None)
        .timeout(None)
        .breaker(None)
        .bulkhead(None)
        .keepalive(Duration::from_secs(30));
    if tls {
        config = config.tls(tls_config(args));
    }
    if let Some(token) = &args.token {
        let token =
            StaticToken::bearer(token).map_err(|e| CliError::Usage(format!("--token: {e}")))?;
        config = config.credentials(token);
    }
    let client = Client::connect_methods(&[], config)
        .await
        .map_err(|e| match e {
            sinew_client::ClientError::Tls(tls) => tls_error(&tls),
            other => CliError::Usage(other.to_string()),
        })?;
    Ok(Connection {
        client,
        metadata: metadata(args)?,
        addr: args.addr.clone(),
    })
}

/// The error of a call that failed with `status`: a connect failure is
/// told as such (which TLS check failed, a refusal, a timeout); any other
/// status is the server's answer.
pub(crate) fn connect_error(status: &tonic::Status, addr: &str) -> Option<CliError> {
    let failed = sinew_client::cause::<ConnectFailed>(status)?;
    let why = match failed.handshake() {
        Some(handshake) => {
            let hint = match handshake.failure() {
                HandshakeFailure::UnknownIssuer => {
                    " (pass the authority with --cacert, or --insecure for a test server)"
                }
                HandshakeFailure::NameMismatch => {
                    " (pass the name the certificate is for with --server-name)"
                }
                HandshakeFailure::NotTls => "; drop --tls",
                HandshakeFailure::CertificateRefused => {
                    " (the server wants a client certificate: --cert and --key)"
                }
                _ => "",
            };
            format!("the TLS handshake failed: {}{hint}", handshake.failure())
        }
        None => match failed.kind() {
            std::io::ErrorKind::ConnectionRefused => "the connection was refused".to_owned(),
            std::io::ErrorKind::TimedOut => "connecting timed out".to_owned(),
            _ => {
                let source = std::error::Error::source(failed)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                if source.contains("HTTP/2") || source.contains("http2") || source.contains("frame")
                {
                    format!("it does not speak gRPC over HTTP/2 without TLS ({source}); try --tls")
                } else {
                    source
                }
            }
        },
    };
    Some(CliError::Connect(format!("cannot reach {addr}: {why}")))
}

/// The error of a call the command needed (reflection, health) that
/// failed with `status`.
pub(crate) fn rpc_error(status: &tonic::Status, addr: &str, what: &str) -> CliError {
    connect_error(status, addr).unwrap_or_else(|| {
        CliError::Rpc(format!(
            "{what} failed: {} ({}): {}",
            crate::error::code_name(status.code()),
            status.code() as i32,
            status.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> ConnectArgs {
        let mut full = vec!["sinew", "list"];
        full.extend_from_slice(line);
        match crate::Cli::try_parse_from(full).unwrap().command {
            crate::Command::List(list) => list.connect,
            _ => unreachable!(),
        }
    }

    #[test]
    fn addresses_take_their_scheme_from_the_tls_options() {
        let (uri, tls) = endpoint(&args(&["127.0.0.1:50051"])).unwrap();
        assert_eq!(
            (uri.to_string().as_str(), tls),
            ("http://127.0.0.1:50051/", false)
        );
        let (uri, tls) = endpoint(&args(&["localhost:443", "--tls"])).unwrap();
        assert_eq!(
            (uri.to_string().as_str(), tls),
            ("https://localhost:443/", true)
        );
        let (_, tls) = endpoint(&args(&["https://h:1"])).unwrap();
        assert!(tls);
        let (_, tls) = endpoint(&args(&["h:1", "--insecure"])).unwrap();
        assert!(tls);
    }

    #[test]
    fn contradictions_and_missing_ports_are_usage_errors() {
        let error = endpoint(&args(&["http://h:1", "--tls"])).unwrap_err();
        assert_eq!(error.exit_code(), CliError::USAGE);
        let error = endpoint(&args(&["localhost"])).unwrap_err();
        assert!(error.to_string().contains("no port"), "{error}");
    }

    #[test]
    fn metadata_is_parsed_from_key_value_pairs() {
        let map = metadata(&args(&[
            "h:1",
            "-H",
            "X-Tenant: acme",
            "-H",
            "trace-bin:AQI=",
        ]))
        .unwrap();
        assert_eq!(map.get("x-tenant").unwrap(), "acme");
        assert_eq!(
            map.get_bin("trace-bin")
                .unwrap()
                .to_bytes()
                .unwrap()
                .as_ref(),
            [1, 2]
        );
        let error = metadata(&args(&["h:1", "-H", "trace-bin:not base64!"])).unwrap_err();
        assert!(error.to_string().contains("base64"), "{error}");
        let error = metadata(&args(&["h:1", "-H", "novalue"])).unwrap_err();
        assert!(error.to_string().contains("key:value"), "{error}");
    }
}
