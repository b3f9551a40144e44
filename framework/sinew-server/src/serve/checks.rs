//! What the scaffold checks of a request as it comes in, before its
//! layers: the size of its header list, and whether its method takes one
//! request message.

use tonic::Status;

/// What HTTP/2 adds to each header's name and value when it counts a
/// header list (RFC 9113, section 6.5.2).
const HEADER_OVERHEAD: usize = 32;

/// How much larger than `max_header_list_size` a header list may be for
/// h2 to still take it (and the scaffold to answer it with a gRPC status):
/// past four times the setting, h2 refuses it with HTTP 431 before the
/// scaffold sees it, so a peer cannot make a stream hold more than that.
const H2_HEADER_LIST_FACTOR: u32 = 4;

/// The checks of every request, the same for all connections.
#[derive(Debug)]
pub(crate) struct RequestChecks {
    /// The `max_header_list_size` setting.
    max_header_list_size: usize,
    /// Paths of the hosted methods whose requests are one message (unary
    /// and server-streaming), sorted.
    single_message: Box<[&'static str]>,
}

// === impl RequestChecks ===

impl RequestChecks {
    /// Checks with this header list limit, and these paths taking one
    /// request message.
    pub(crate) fn new(
        max_header_list_size: u32,
        single_message: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let mut single_message: Vec<_> = single_message.into_iter().collect();
        single_message.sort_unstable();
        single_message.dedup();
        Self {
            max_header_list_size: usize::try_from(max_header_list_size).unwrap_or(usize::MAX),
            single_message: single_message.into(),
        }
    }

    /// The header list limit h2 enforces itself, with HTTP 431: larger than
    /// the setting, so that a list between the two is answered by the
    /// scaffold with `RESOURCE_EXHAUSTED`, which gRPC clients understand
    /// (they report a 431 as `UNKNOWN`), and still bounded.
    pub(crate) fn h2_header_list_limit(max_header_list_size: u32) -> u32 {
        max_header_list_size.saturating_mul(H2_HEADER_LIST_FACTOR)
    }

    /// The answer to `request` if its header list is over the limit:
    /// `RESOURCE_EXHAUSTED`, trailers-only.
    pub(crate) fn refuse<B, T: Default>(
        &self,
        request: &http::Request<B>,
    ) -> Option<http::Response<T>> {
        let size = header_list_size(request);
        if size <= self.max_header_list_size {
            return None;
        }
        tracing::debug!(
            size,
            limit = self.max_header_list_size,
            "request header list over the limit; answering RESOURCE_EXHAUSTED"
        );
        Some(
            Status::resource_exhausted(format!(
                "request header list of {size} bytes is over the limit of {} bytes",
                self.max_header_list_size
            ))
            .into_http(),
        )
    }

    /// Whether the method at `path` takes exactly one request message, so
    /// that a second one is refused with `INTERNAL`. A path the server does
    /// not host is not checked (it is answered `UNIMPLEMENTED`).
    pub(crate) fn takes_one_message(&self, path: &str) -> bool {
        self.single_message.binary_search(&path).is_ok()
    }
}

/// The size of `request`'s header list as HTTP/2 counts it: each field's
/// name and value and 32, pseudo-headers included.
fn header_list_size<B>(request: &http::Request<B>) -> usize {
    let uri = request.uri();
    // The pseudo-headers a request has (`:method`, `:path`, and for h2
    // `:scheme` and `:authority`), each name's length and 32 with its value.
    let mut size = ":method".len() + request.method().as_str().len() + HEADER_OVERHEAD;
    if let Some(scheme) = uri.scheme_str() {
        size += ":scheme".len() + scheme.len() + HEADER_OVERHEAD;
    }
    if let Some(authority) = uri.authority() {
        size += ":authority".len() + authority.as_str().len() + HEADER_OVERHEAD;
    }
    if let Some(path) = uri.path_and_query() {
        size += ":path".len() + path.as_str().len() + HEADER_OVERHEAD;
    }
    let headers = request.headers();
    // One pass, the overheads added at once.
    let mut fields = headers.len() * HEADER_OVERHEAD;
    for (name, value) in headers {
        fields += name.as_str().len() + value.len();
    }
    size + fields
}

#[cfg(test)]
mod tests {
    use tonic::body::Body;

    use super::*;

    #[test]
    fn a_header_list_is_counted_as_http2_counts_it() {
        let request = http::Request::builder()
            .method("POST")
            .uri("http://h:1/a.B/C")
            .header("te", "trailers")
            .body(())
            .unwrap();
        // :method POST, :scheme http, :authority h:1, :path /a.B/C, te
        let expected = (7 + 4 + 32) + (7 + 4 + 32) + (10 + 3 + 32) + (5 + 6 + 32) + (2 + 8 + 32);
        assert_eq!(header_list_size(&request), expected);
        let checks = RequestChecks::new(u32::try_from(expected).unwrap(), []);
        assert!(checks.refuse::<_, Body>(&request).is_none());
        let checks = RequestChecks::new(u32::try_from(expected - 1).unwrap(), []);
        let answer = checks.refuse::<_, Body>(&request).unwrap();
        assert_eq!(answer.headers()["grpc-status"], "8");
    }

    #[test]
    fn only_the_listed_paths_take_one_message() {
        let checks = RequestChecks::new(1024, ["/a.B/Get", "/a.B/Expand", "/a.B/Get"]);
        assert!(checks.takes_one_message("/a.B/Get"));
        assert!(checks.takes_one_message("/a.B/Expand"));
        assert!(!checks.takes_one_message("/a.B/Chat"));
        assert!(!checks.takes_one_message("/x.Y/Get"));
    }
}
