//! Custom trailing metadata on any response: see [`TrailingMetadata`].

use http::{HeaderMap, HeaderName, header};
use tonic::metadata::MetadataMap;

/// Custom metadata to send in a response's trailers, next to its
/// `grpc-status`.
///
/// A handler that fails can carry metadata in its [`Status`](tonic::Status)
/// (`Status::with_metadata`), but tonic gives a successful response no way
/// to add to the trailers that end it: its metadata goes into the
/// response's headers, and the trailers hold `grpc-status: 0` alone.
/// This type fills that gap. A handler puts it into the
/// response's extensions, tonic carries them into the HTTP response, and
/// the scaffold moves its entries into the trailers, after the messages and
/// next to `grpc-status`:
///
/// ```
/// use sinew_server::TrailingMetadata;
/// use tonic::{Response, metadata::MetadataValue};
///
/// let mut response = Response::new(());
/// TrailingMetadata::of(&mut response).insert("x-cost", MetadataValue::from_static("17"));
/// TrailingMetadata::of(&mut response)
///     .insert_bin("x-digest-bin", MetadataValue::from_bytes(&[0xab, 0xcd]));
/// ```
///
/// It works on any response: unary, client streaming, and a streaming
/// response's trailers at the end of its stream, whether the stream ends
/// with OK or with a status.
///
/// # What is not sent
///
/// The trailers are the protocol's before they are the handler's:
///
/// - `grpc-status`, `grpc-message` and `grpc-status-details-bin` (and
///   tonic's other reserved names, `grpc-message-type` and
///   `content-type`) are never taken from it: the call's status is the
///   status;
/// - nor are the HTTP/2 connection-specific names (`connection`, `te`,
///   `transfer-encoding`, `upgrade`, `keep-alive`, `proxy-connection`),
///   which would make the trailers malformed and reset the stream;
/// - a name the trailers already carry (a failing stream's
///   `Status` metadata) keeps the status's values.
///
/// What is dropped is logged at debug level.
///
/// # Cost
///
/// None when unused: the scaffold's message limit layer, which wraps every
/// response body anyway, looks for it once per call in the response's
/// extensions (empty, unless something put an extension there) and carries
/// it in that body when present.
///
/// On a response served by something other than the scaffold, it is an
/// inert extension.
#[derive(Debug, Clone, Default)]
pub struct TrailingMetadata(MetadataMap);

// === impl TrailingMetadata ===

impl TrailingMetadata {
    /// No metadata yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trailing metadata of `response`, to add to: the one its
    /// extensions hold, or a new, empty one put there.
    pub fn of<T>(response: &mut tonic::Response<T>) -> &mut MetadataMap {
        &mut response.extensions_mut().get_or_insert_default::<Self>().0
    }

    /// The metadata.
    pub fn get_ref(&self) -> &MetadataMap {
        &self.0
    }

    /// The metadata, mutably.
    pub fn get_mut(&mut self) -> &mut MetadataMap {
        &mut self.0
    }

    /// Unwraps the metadata.
    pub fn into_inner(self) -> MetadataMap {
        self.0
    }
}

impl From<MetadataMap> for TrailingMetadata {
    fn from(metadata: MetadataMap) -> Self {
        Self(metadata)
    }
}

/// Takes a response's trailing metadata out of its extensions, as the
/// headers to add to its trailers; `None` (after one check of the
/// extensions) when it has none.
pub(crate) fn take<B>(response: &mut http::Response<B>) -> Option<Box<HeaderMap>> {
    let metadata = response.extensions_mut().remove::<TrailingMetadata>()?;
    let headers = metadata.0.into_headers();
    (!headers.is_empty()).then(|| Box::new(headers))
}

/// Names the handler's metadata may not set in trailers.
fn reserved(name: &HeaderName) -> bool {
    const GRPC: [&str; 4] = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "grpc-message-type",
    ];
    const CONNECTION: [&str; 2] = ["keep-alive", "proxy-connection"];
    GRPC.contains(&name.as_str())
        || CONNECTION.contains(&name.as_str())
        || [
            header::CONTENT_TYPE,
            header::CONNECTION,
            header::TE,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ]
        .contains(name)
}

/// Adds `extra` to `trailers`, but for reserved names and names the
/// trailers already carry.
pub(crate) fn merge(trailers: &mut HeaderMap, extra: HeaderMap) {
    // A map's iterator gives each name once, then `None` for its further
    // values; whether a name may go in is decided at its first value,
    // before any of them is added.
    let mut current: Option<(HeaderName, bool)> = None;
    for (name, value) in extra {
        if let Some(name) = name {
            let allowed = !reserved(&name) && !trailers.contains_key(&name);
            if !allowed {
                tracing::debug!(
                    name = name.as_str(),
                    "trailing metadata not sent: the name is reserved or already in the trailers"
                );
            }
            current = Some((name, allowed));
        }
        if let Some((name, true)) = &current {
            trailers.append(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn ok_trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers
    }

    #[test]
    fn custom_entries_join_the_status_with_every_value() {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-cost", MetadataValue::from_static("17"));
        metadata.append("x-tag", MetadataValue::from_static("a"));
        metadata.append("x-tag", MetadataValue::from_static("b"));
        metadata.insert_bin("x-digest-bin", MetadataValue::from_bytes(&[0xab, 0xab]));
        let mut trailers = ok_trailers();
        merge(&mut trailers, metadata.into_headers());
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-cost"], "17");
        let tags: Vec<_> = trailers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
        // Binary values travel base64-encoded, as tonic encodes them.
        assert_eq!(trailers["x-digest-bin"], "q6s");
    }

    #[test]
    fn reserved_names_cannot_override_the_status() {
        let mut extra = HeaderMap::new();
        for name in [
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
            "grpc-message-type",
            "content-type",
            "connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            extra.insert(HeaderName::from_static(name), "x".parse().unwrap());
        }
        extra.insert("x-kept", "yes".parse().unwrap());
        let mut trailers = ok_trailers();
        merge(&mut trailers, extra);
        let names: Vec<_> = trailers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["grpc-status", "x-kept"]);
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[test]
    fn a_name_the_status_carries_keeps_the_status_values() {
        let mut trailers = ok_trailers();
        trailers.insert("x-reason", "from the status".parse().unwrap());
        let mut extra = HeaderMap::new();
        extra.append("x-reason", "from the handler".parse().unwrap());
        extra.append("x-reason", "again".parse().unwrap());
        merge(&mut trailers, extra);
        let reasons: Vec<_> = trailers.get_all("x-reason").iter().collect();
        assert_eq!(reasons, ["from the status"]);
    }

    #[test]
    fn of_adds_to_one_extension() {
        let mut response = tonic::Response::new(());
        TrailingMetadata::of(&mut response).insert("x-a", MetadataValue::from_static("1"));
        TrailingMetadata::of(&mut response).insert("x-b", MetadataValue::from_static("2"));
        let (_, (), extensions) = response.into_parts();
        let mut response = http::Response::new(());
        *response.extensions_mut() = extensions;
        let taken = take(&mut response).expect("trailing metadata");
        assert_eq!(taken.len(), 2);
        assert!(response.extensions().get::<TrailingMetadata>().is_none());
        assert!(take(&mut response).is_none());
    }
}
