//! Bodies of forwarded calls: gRPC frames counted against a message limit
//! as the bytes pass (never decoded), and, for a call being shadowed, a
//! bounded copy of the answer kept for the comparison.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tonic::{Code, Status};

use crate::compare::Outcome;

/// Reads the 5-byte prefixes of gRPC messages across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct FrameParser {
    header: [u8; 5],
    /// Bytes of the current prefix read so far.
    have: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl FrameParser {
    /// Feeds `chunk`; for a message longer than `max`, `Err` with its
    /// length and where its prefix began in `chunk` (0 when it began in an
    /// earlier chunk): what comes before it are whole messages.
    pub(crate) fn feed(&mut self, whole: &[u8], max: usize) -> Result<(), Exceeded> {
        let mut chunk = whole;
        let mut prefix_at = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(chunk.len());
                self.remaining -= take;
                chunk = &chunk[take..];
                continue;
            }
            if self.have == 0 {
                prefix_at = whole.len() - chunk.len();
            }
            let take = (5 - self.have).min(chunk.len());
            self.header[self.have..self.have + take].copy_from_slice(&chunk[..take]);
            self.have += take;
            chunk = &chunk[take..];
            if self.have == 5 {
                self.have = 0;
                let length = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if length > max {
                    return Err(Exceeded {
                        length,
                        at: prefix_at,
                    });
                }
                self.remaining = length;
            }
        }
        Ok(())
    }
}

/// A message over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    /// Its length.
    pub(crate) length: usize,
    /// Where its prefix began in the chunk fed.
    pub(crate) at: usize,
}

/// A bounded copy of an answer, sent for comparison when it ends.
pub(crate) struct Tee {
    kept: BytesMut,
    max: usize,
    overflowed: bool,
    /// The status of a trailers-only answer (from its headers).
    status: Option<(Code, String)>,
    done: Option<oneshot::Sender<Outcome>>,
}

impl Tee {
    pub(crate) fn new(max: usize, done: oneshot::Sender<Outcome>) -> Self {
        Self {
            kept: BytesMut::new(),
            max,
            overflowed: false,
            status: None,
            done: Some(done),
        }
    }

    /// The answer's headers: with a status (trailers-only), the answer is
    /// whole already, and its body may never be read.
    pub(crate) fn headers(&mut self, headers: &http::HeaderMap) {
        if let Some(status) = Status::from_header_map(headers) {
            self.status = Some((status.code(), status.message().to_owned()));
            self.finish();
        }
    }

    fn data(&mut self, data: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.kept.len() + data.len() > self.max {
            self.overflowed = true;
            self.kept = BytesMut::new();
            return;
        }
        self.kept.extend_from_slice(data);
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.status = Some(match Status::from_header_map(trailers) {
            Some(status) => (status.code(), status.message().to_owned()),
            None => (Code::Unknown, "no grpc-status".to_owned()),
        });
    }

    /// The answer is over: send it, unless it was too long to keep.
    fn finish(&mut self) {
        let Some(done) = self.done.take() else {
            return;
        };
        if self.overflowed {
            return;
        }
        let (code, message) = self.status.take().unwrap_or((
            Code::Unknown,
            "the answer ended without a status".to_owned(),
        ));
        let _ = done.send(Outcome {
            code,
            message,
            frames: std::mem::take(&mut self.kept).freeze(),
        });
    }

    /// The answer failed before it ended (a reset, a timeout).
    pub(crate) fn fail(&mut self, status: &Status) {
        self.status = Some((status.code(), status.message().to_owned()));
        self.kept.clear();
        self.finish();
    }
}

pin_project_lite::pin_project! {
    /// A forwarded body, watched: each message is held to `max` bytes. Past
    /// it, a response ends with `RESOURCE_EXHAUSTED` trailers, a request
    /// fails (and `exceeded` tells the forwarder why).
    pub(crate) struct Watched<B> {
        #[pin]
        inner: B,
        parser: FrameParser,
        max: usize,
        kind: Kind,
        tee: Option<Tee>,
        ended: bool,
        // Trailers to end with, after the whole messages of the chunk that
        // held the one over the limit.
        last: Option<http::HeaderMap>,
    }
}

/// Which way the body goes.
pub(crate) enum Kind {
    /// A request on its way upstream; the flag is raised past the limit.
    Request(Arc<AtomicBool>),
    /// A response on its way back; the flag, when given, is its
    /// request's (a request stream over its limit ends the answer with
    /// `RESOURCE_EXHAUSTED`).
    Response(Option<Arc<AtomicBool>>),
}

impl<B> Watched<B> {
    pub(crate) fn new(inner: B, max: usize, kind: Kind, tee: Option<Tee>) -> Self {
        Self {
            inner,
            parser: FrameParser::default(),
            max,
            kind,
            tee,
            ended: false,
            last: None,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<sinew_core::BoxError>,
{
    type Data = Bytes;
    type Error = sinew_core::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(trailers) = this.last.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(exceeded) = this.parser.feed(data.chunk(), *this.max) {
                        let status = Status::resource_exhausted(format!(
                            "message of {} bytes is over the limit of {} bytes",
                            exceeded.length, this.max
                        ));
                        *this.ended = true;
                        if let Some(tee) = this.tee {
                            tee.fail(&status);
                        }
                        return Poll::Ready(Some(match this.kind {
                            Kind::Request(flag) => {
                                flag.store(true, Ordering::Release);
                                Err(Box::new(status))
                            }
                            Kind::Response(_) => {
                                let trailers = status_trailers(&status);
                                if exceeded.at > 0 {
                                    // The whole messages before it go first.
                                    *this.last = Some(trailers);
                                    Ok(Frame::data(data.slice(..exceeded.at)))
                                } else {
                                    Ok(Frame::trailers(trailers))
                                }
                            }
                        }));
                    }
                    if let Some(tee) = this.tee {
                        tee.data(data.chunk());
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(tee) = this.tee
                {
                    tee.trailers(trailers);
                    tee.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                let error = error.into();
                let status = match this.kind {
                    Kind::Response(Some(flag)) if flag.load(Ordering::Acquire) => {
                        Status::resource_exhausted("a request message is over the limit")
                    }
                    _ => Status::from_error(error),
                };
                if let Some(tee) = this.tee {
                    tee.fail(&status);
                }
                match this.kind {
                    Kind::Request(_) => Poll::Ready(Some(Err(Box::new(status)))),
                    // An answer that breaks off ends with its status, not
                    // a reset the caller cannot read.
                    Kind::Response(_) => {
                        *this.ended = true;
                        Poll::Ready(Some(Ok(Frame::trailers(status_trailers(&status)))))
                    }
                }
            }
            None => {
                if let Some(tee) = this.tee {
                    tee.finish();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.last.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `status` as the trailers of a response.
pub(crate) fn status_trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", (status.code() as i32).into());
    if let Ok(message) = http::HeaderValue::from_str(&percent_encode(status.message())) {
        trailers.insert("grpc-message", message);
    }
    trailers
}

/// The percent-encoding of `grpc-message`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len));
        bytes
    }

    #[test]
    fn counts_messages_across_chunks() {
        let mut stream = frame(3);
        stream.extend(frame(10));
        stream.extend(frame(0));
        // Every split of the stream in two reads the same messages.
        for split in 0..stream.len() {
            let mut parser = FrameParser::default();
            parser.feed(&stream[..split], 10).unwrap();
            parser.feed(&stream[split..], 10).unwrap();
            let mut parser = FrameParser::default();
            parser
                .feed(&stream[..split], 9)
                .and_then(|()| parser.feed(&stream[split..], 9))
                .expect_err("the second message is over 9 bytes");
        }
    }

    #[test]
    fn messages_are_held_to_the_limit() {
        let mut parser = FrameParser::default();
        assert_eq!(
            parser.feed(&frame(11), 10),
            Err(Exceeded { length: 11, at: 0 })
        );
        // After two whole messages, the third's prefix begins at 13.
        let mut stream = frame(3);
        stream.extend(frame(0));
        stream.extend(frame(11));
        let mut parser = FrameParser::default();
        assert_eq!(
            parser.feed(&stream, 10),
            Err(Exceeded { length: 11, at: 13 })
        );
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("50% off é"), "50%25 off %C3%A9");
    }
}
