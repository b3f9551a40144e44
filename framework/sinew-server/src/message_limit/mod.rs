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
//!   there, with `RESOURCE_EXHAUSTED` in its trailers.
//! - A request whose partial message would take the server's or its
//!   connection's [`RequestBudget`] past its limit fails with
//!   `RESOURCE_EXHAUSTED`: the bytes waiting to form whole messages are
//!   bounded in total, whatever the peers send.

mod body;
mod budget;
mod future;
mod layer;
mod service;

pub use body::{Direction, LimitedBody};
pub use budget::RequestBudget;
pub(crate) use budget::{ConnectionBudget, Held};
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
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt as _, StreamBody};

    use super::{Direction, FrameWalker, Held, LimitedBody, RequestBudget};

    /// A request body of these chunks.
    fn body(
        chunks: Vec<Vec<u8>>,
    ) -> LimitedBody<impl http_body::Body<Data = Bytes, Error = std::convert::Infallible>> {
        body_held(chunks, Held::default())
    }

    fn body_held(
        chunks: Vec<Vec<u8>>,
        held: Held,
    ) -> LimitedBody<impl http_body::Body<Data = Bytes, Error = std::convert::Infallible>> {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok(Frame::data(Bytes::from(chunk))));
        LimitedBody::with_budget(
            StreamBody::new(tokio_stream::iter(frames)),
            1000,
            Direction::Receive,
            held,
        )
    }

    #[tokio::test]
    async fn partial_messages_hold_the_budget_until_they_complete() {
        let server = RequestBudget::new(100);
        let connection = RequestBudget::new(1000);
        let held = || Held::new(Some(server.clone()), Some(connection.clone()));
        let whole = frame(80);

        // A: its header and 60 of 80 bytes: 65 held.
        let mut a = Box::pin(body_held(
            vec![whole[..65].to_vec(), whole[65..].to_vec()],
            held(),
        ));
        a.frame().await.unwrap().unwrap();
        assert_eq!(server.in_use(), 65);

        // B: 45 more would pass the limit: B fails, holding nothing.
        let mut b = Box::pin(body_held(vec![frame(50)[..45].to_vec()], held()));
        let error = b.frame().await.unwrap().unwrap_err();
        let status = error.downcast::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(server.in_use(), 65);

        // A's message completes: the budget is free again.
        a.frame().await.unwrap().unwrap();
        assert_eq!(server.in_use(), 0);
        assert_eq!(connection.in_use(), 0);

        // A body dropped mid-message gives back what it held.
        let mut c = Box::pin(body_held(vec![whole[..30].to_vec()], held()));
        c.frame().await.unwrap().unwrap();
        assert_eq!(server.in_use(), 30);
        drop(c);
        assert_eq!(server.in_use(), 0);

        // Without budgets, nothing is held or refused.
        let mut d = Box::pin(body(vec![whole[..65].to_vec()]));
        d.frame().await.unwrap().unwrap();
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
