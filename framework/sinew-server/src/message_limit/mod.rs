//! Bounds the size of each gRPC message, in both directions, and answers
//! `RESOURCE_EXHAUSTED` as the gRPC status code table says.
//!
//! The layer reads the five-byte header in front of every message as the
//! bytes stream past, so an oversized request is refused from its header,
//! before its body is buffered. tonic's own codec limit would answer
//! `OUT_OF_RANGE`, and only after reading the whole message.
//!
//! - A request message over the receive limit fails the call with
//!   `RESOURCE_EXHAUSTED`; the handler sees the failure as its request
//!   stream's error, or is never called for a unary method.
//! - A response message over the send limit is not sent: the response ends
//!   there, with `RESOURCE_EXHAUSTED` in its trailers. A compressed one
//!   counts by what it decompresses to, when the layer is told to
//!   ([`MessageLimit::decompressed`]; the scaffold does when it compresses
//!   responses). A message split over several chunks may have had its
//!   first chunks sent by the time it is found too large; it still ends
//!   the response with `RESOURCE_EXHAUSTED`.
//!
//! The scaffold checks requests where their bodies come in, before this
//! layer, as the connection hands each request on: in one walk of their
//! framing, each message against the receive limit and each partial
//! message against the server's and the connection's request budgets (a
//! request that would take either past its limit fails with
//! `RESOURCE_EXHAUSTED`, so the bytes waiting to form whole messages are
//! bounded in total, whatever the peers send). Its message limit layer
//! then limits responses only (a receive limit of `usize::MAX` walks
//! nothing).

mod body;
mod budget;
mod future;
mod inflate;
mod layer;
mod service;

use body::too_large;
pub use body::{Direction, LimitedBody};
pub(crate) use budget::{BudgetedBody, Budgets, OneMessage, RequestBudget};
pub use future::ResponseFuture;
pub use layer::MessageLimitLayer;
pub use service::MessageLimit;

/// Walks the gRPC length-prefixed message framing of a byte stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct FrameWalker {
    header: [u8; 5],
    header_len: usize,
    /// The current message's declared length.
    length: u64,
    remaining: u64,
    /// Messages whose header has arrived (saturating).
    messages: u32,
}

impl FrameWalker {
    /// Bytes of the current message that have arrived (its header
    /// included): zero between messages.
    pub(crate) fn partial(&self) -> usize {
        let bytes = if self.remaining > 0 {
            5 + (self.length - self.remaining)
        } else {
            self.header_len as u64
        };
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// Messages whose header has arrived so far (saturating).
    pub(crate) fn messages(&self) -> u32 {
        self.messages
    }

    /// Consumes a chunk; returns the length of the first message in it
    /// whose header declares more than `limit` bytes.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], limit: usize) -> Option<u64> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk = &chunk[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk = &chunk[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                self.messages = self.messages.saturating_add(1);
                let length = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                if length > limit as u64 {
                    return Some(length);
                }
                self.length = length;
                self.remaining = length;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::FrameWalker;

    mod trailing {
        use std::convert::Infallible;

        use bytes::Bytes;
        use http_body::Frame;
        use http_body_util::{BodyExt as _, StreamBody};
        use tonic::metadata::MetadataValue;
        use tower::{ServiceExt as _, service_fn};

        use crate::{MessageLimit, TrailingMetadata};

        type Frames = StreamBody<
            futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
        >;

        /// A response as tonic's server makes it: a message, then
        /// `grpc-status: 0` in the trailers; with `metadata` in its
        /// extensions when given.
        fn respond(metadata: Option<TrailingMetadata>) -> http::Response<Frames> {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 1, 7]))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut response =
                http::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
            if let Some(metadata) = metadata {
                response.extensions_mut().insert(metadata);
            }
            response
        }

        async fn trailers_of(metadata: Option<TrailingMetadata>) -> http::HeaderMap {
            let service = MessageLimit::new(
                service_fn(move |_: http::Request<tonic::body::Body>| {
                    let response = respond(metadata.clone());
                    async move { Ok::<_, Infallible>(response) }
                }),
                usize::MAX,
                1024,
            );
            let request = http::Request::new(tonic::body::Body::empty());
            let response = service.oneshot(request).await.unwrap();
            assert!(response.extensions().get::<TrailingMetadata>().is_none());
            let collected = response.into_body().collect().await.unwrap();
            collected.trailers().cloned().expect("trailers")
        }

        #[tokio::test]
        async fn the_handler_trailing_metadata_joins_the_status() {
            let mut metadata = TrailingMetadata::new();
            metadata
                .get_mut()
                .insert("x-cost", MetadataValue::from_static("17"));
            metadata
                .get_mut()
                .insert("grpc-status", MetadataValue::from_static("13"));
            let trailers = trailers_of(Some(metadata)).await;
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-cost"], "17");
            assert_eq!(trailers.len(), 2);
        }

        #[tokio::test]
        async fn without_it_the_trailers_are_the_status_alone() {
            let trailers = trailers_of(None).await;
            assert_eq!(trailers.len(), 1);
            assert_eq!(trailers["grpc-status"], "0");
        }
    }

    fn frame(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend(std::iter::repeat_n(0xAB, len as usize));
        out
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_chunking() {
        let stream: Vec<u8> = [frame(10), frame(0), frame(100)].concat();
        for chunk_size in [1, 2, 3, 5, 7, 64, 1000] {
            let mut walker = FrameWalker::default();
            for chunk in stream.chunks(chunk_size) {
                assert_eq!(walker.feed(chunk, 100), None, "chunk size {chunk_size}");
            }
        }
    }

    #[test]
    fn an_oversized_header_is_caught_even_split_across_chunks() {
        let stream: Vec<u8> = [frame(10), frame(101)].concat();
        for chunk_size in [1, 2, 3, 6, 16] {
            let mut walker = FrameWalker::default();
            let found = stream
                .chunks(chunk_size)
                .find_map(|chunk| walker.feed(chunk, 100));
            assert_eq!(found, Some(101), "chunk size {chunk_size}");
        }
    }
}
