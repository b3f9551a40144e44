//! Keeping a request's body so that it can be sent more than once.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use tonic::body::Body;

/// The request body of a call, in the form that lets it be sent again.
pub(crate) enum Replay {
    /// A single message, buffered whole: every attempt gets its own copy.
    Buffered(Buffered),
    /// A body that could not be kept (over the buffer limit): it goes out
    /// once, and the call is never repeated.
    Once(Option<Body>),
    /// A request stream, recorded as the first attempt reads it.
    Stream(ReplaySource),
}

// === impl Replay ===

impl Replay {
    /// Reads a single-message body whole, up to `limit` bytes.
    ///
    /// Over the limit, the bytes read so far and the rest of the body are
    /// joined again into a [`Replay::Once`]: the call still goes out, just
    /// not more than once. A body that fails while being read fails the
    /// call: no attempt could send it either.
    pub(crate) async fn buffer(mut body: Body, limit: usize) -> Result<Self, crate::BoxError> {
        // The usual body is one encoded message in one chunk: it is kept
        // as it is, and a list of chunks is only started for a second one.
        let mut first: Option<Bytes> = None;
        let mut more: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(data) => {
                    len = len.saturating_add(data.len());
                    if first.is_none() {
                        first = Some(data);
                    } else {
                        more.push(data);
                    }
                    if len > limit {
                        let chunks = first.into_iter().chain(more).collect();
                        return Ok(Self::Once(Some(rejoin(chunks, body))));
                    }
                }
                Err(frame) => {
                    if let Ok(frame_trailers) = frame.into_trailers() {
                        trailers = Some(frame_trailers);
                    }
                }
            }
        }
        let data = match (first, more.is_empty()) {
            (None, _) => Bytes::new(),
            // One chunk: no copy.
            (Some(data), true) => data,
            (Some(first), false) => {
                let mut data = BytesMut::with_capacity(len);
                data.extend_from_slice(&first);
                for chunk in &more {
                    data.extend_from_slice(chunk);
                }
                data.freeze()
            }
        };
        Ok(Self::Buffered(Buffered { data, trailers }))
    }

    /// Records a request stream as it is read, up to `limit` bytes.
    pub(crate) fn stream(body: Body, limit: usize) -> Self {
        Self::Stream(ReplaySource::new(body, limit))
    }

    /// The body for the next attempt, or `None` if the call cannot be sent
    /// again.
    pub(crate) fn next_body(&mut self) -> Option<Body> {
        match self {
            Self::Buffered(buffered) => Some(buffered.body()),
            Self::Once(body) => body.take(),
            Self::Stream(source) => source.body(),
        }
    }

    /// Whether another attempt could be given the whole request.
    pub(crate) fn can_replay(&self) -> bool {
        match self {
            Self::Buffered(_) => true,
            Self::Once(body) => body.is_some(),
            Self::Stream(source) => source.can_replay(),
        }
    }

    /// The call is over: stop recording, and free what was recorded.
    pub(crate) fn commit(&mut self) {
        if let Self::Stream(source) = self {
            source.commit();
        }
    }
}

/// The bytes read so far, then the rest of `rest`.
fn rejoin(chunks: Vec<Bytes>, rest: Body) -> Body {
    let read = futures_util::stream::iter(chunks.into_iter().map(|chunk| Ok(Frame::data(chunk))));
    Body::new(StreamBody::new(read.chain(BodyStream::new(rest))))
}

/// A single request message, buffered whole.
#[derive(Debug, Clone)]
pub(crate) struct Buffered {
    data: Bytes,
    trailers: Option<http::HeaderMap>,
}

// === impl Buffered ===

impl Buffered {
    /// A fresh body with the same bytes (the `Bytes` is shared, not
    /// copied).
    pub(crate) fn body(&self) -> Body {
        let full = Full::new(self.data.clone());
        match &self.trailers {
            None => Body::new(full),
            Some(trailers) => {
                let trailers = trailers.clone();
                Body::new(
                    full.with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers)))),
                )
            }
        }
    }
}

/// A request stream that can be read again from the start while what was
/// read of it fits the replay limit.
///
/// Each [`body`](Self::body) is a reader: it replays the frames recorded so
/// far, then goes on reading the source, recording what it reads. Handing
/// out a reader retires the previous one (it fails if polled again), so the
/// source is only ever read by the newest attempt; the previous attempt's
/// body may still be held by the transport after its response came back.
/// Once more than `limit` bytes have been read the recording is dropped and
/// no further reader is handed out: the call is committed to the attempt
/// that read them.
#[derive(Clone)]
pub(crate) struct ReplaySource {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    /// The original body; `None` once it ended.
    source: Option<Body>,
    recorded: Vec<Recorded>,
    recorded_len: usize,
    limit: usize,
    /// More than `limit` bytes were read, the source failed, or the call
    /// was committed: nothing can be replayed.
    spent: bool,
    /// The generation of the one reader that may poll.
    generation: u64,
}

enum Recorded {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

// === impl ReplaySource ===

impl ReplaySource {
    pub(crate) fn new(body: Body, limit: usize) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(body),
                recorded: Vec::new(),
                recorded_len: 0,
                limit,
                spent: false,
                generation: 0,
            })),
        }
    }

    /// A new reader, retiring the previous one; `None` once the stream
    /// cannot be replayed.
    pub(crate) fn body(&self) -> Option<Body> {
        let mut shared = lock(&self.shared);
        if shared.spent {
            return None;
        }
        shared.generation += 1;
        Some(Body::new(ReplayBody {
            shared: self.shared.clone(),
            generation: shared.generation,
            position: 0,
            done: false,
        }))
    }

    pub(crate) fn can_replay(&self) -> bool {
        !lock(&self.shared).spent
    }

    fn commit(&self) {
        let mut shared = lock(&self.shared);
        shared.spent = true;
        shared.recorded = Vec::new();
    }
}

/// The lock is only ever held inside a synchronous `poll_frame` or
/// bookkeeping call, never across an `.await`. A panic while holding it
/// leaves the recording consistent enough to go on (each update is a
/// single push or flag), so poisoning is ignored.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One attempt's view of a [`ReplaySource`].
struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    /// The next recorded frame to replay.
    position: usize,
    done: bool,
}

/// A retired reader was polled: a newer attempt owns the stream.
#[derive(Debug)]
struct Superseded;

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request stream was handed to a newer attempt")
    }
}

impl std::error::Error for Superseded {}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut shared = lock(&this.shared);
        if shared.generation != this.generation {
            this.done = true;
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(recorded) = shared.recorded.get(this.position) {
            this.position += 1;
            let frame = match recorded {
                Recorded::Data(data) => Frame::data(data.clone()),
                Recorded::Trailers(trailers) => Frame::trailers(trailers.clone()),
            };
            return Poll::Ready(Some(Ok(frame)));
        }
        let shared = &mut *shared;
        let Some(source) = shared.source.as_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.source = None;
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                // A replay could only send a truncated stream.
                shared.source = None;
                shared.spent = true;
                shared.recorded = Vec::new();
                this.done = true;
                Poll::Ready(Some(Err(status.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if !shared.spent {
                    let recorded = match frame.data_ref() {
                        Some(data) => {
                            shared.recorded_len = shared.recorded_len.saturating_add(data.len());
                            Some(Recorded::Data(data.clone()))
                        }
                        None => frame.trailers_ref().cloned().map(Recorded::Trailers),
                    };
                    match recorded {
                        Some(recorded) if shared.recorded_len <= shared.limit => {
                            shared.recorded.push(recorded);
                            this.position += 1;
                        }
                        // Over the limit, or a kind of frame that cannot be
                        // copied: from here on only this attempt can send
                        // the stream.
                        _ => {
                            shared.spent = true;
                            shared.recorded = Vec::new();
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // `true` would let the transport skip polling; only say so once
        // this reader has seen the end.
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(chunks: &[&'static [u8]]) -> Body {
        let frames = chunks
            .iter()
            .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from_static(chunk))))
            .collect::<Vec<_>>();
        Body::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn read_all(body: Body) -> Result<Vec<u8>, tonic::Status> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    async fn read_n(body: &mut Body, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            let frame = body.frame().await.unwrap().unwrap();
            out.extend_from_slice(frame.data_ref().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_single_message_is_buffered_whole() {
        let mut replay = Replay::buffer(stream_of(&[b"ab", b"cd"]), 4).await.unwrap();
        assert!(matches!(replay, Replay::Buffered(_)));
        for _ in 0..3 {
            assert_eq!(
                read_all(replay.next_body().unwrap()).await.unwrap(),
                b"abcd"
            );
        }
    }

    #[tokio::test]
    async fn one_chunk_or_none_is_kept_as_it_is() {
        for (chunks, expected) in [(&[&b"whole"[..]][..], &b"whole"[..]), (&[][..], &b""[..])] {
            let mut replay = Replay::buffer(stream_of(chunks), 8).await.unwrap();
            assert!(matches!(replay, Replay::Buffered(_)));
            for _ in 0..2 {
                assert_eq!(
                    read_all(replay.next_body().unwrap()).await.unwrap(),
                    expected
                );
            }
        }
        // A single chunk over the limit still goes out, once.
        let mut replay = Replay::buffer(stream_of(&[b"too long"]), 4).await.unwrap();
        assert!(!matches!(replay, Replay::Buffered(_)));
        assert_eq!(
            read_all(replay.next_body().unwrap()).await.unwrap(),
            b"too long"
        );
        assert!(replay.next_body().is_none());
    }

    #[tokio::test]
    async fn over_the_buffer_limit_the_body_goes_out_once_intact() {
        let mut replay = Replay::buffer(stream_of(&[b"ab", b"cd", b"ef"]), 3)
            .await
            .unwrap();
        assert!(!matches!(replay, Replay::Buffered(_)));
        assert_eq!(
            read_all(replay.next_body().unwrap()).await.unwrap(),
            b"abcdef"
        );
        assert!(!replay.can_replay());
        assert!(replay.next_body().is_none());
    }

    #[tokio::test]
    async fn a_stream_replays_its_recording_then_continues_from_the_source() {
        let source = ReplaySource::new(stream_of(&[b"one", b"two", b"three"]), 64);
        let mut first = source.body().unwrap();
        assert_eq!(read_n(&mut first, 1).await, b"one");
        let second = source.body().unwrap();
        assert_eq!(read_all(second).await.unwrap(), b"onetwothree");
        // The first reader was retired when the second was handed out.
        assert!(first.frame().await.unwrap().is_err());
        // And a third replays everything, the source being done.
        assert_eq!(
            read_all(source.body().unwrap()).await.unwrap(),
            b"onetwothree"
        );
    }

    #[tokio::test]
    async fn a_stream_past_the_replay_limit_is_spent_but_still_delivered() {
        let source = ReplaySource::new(stream_of(&[b"0123", b"4567", b"89"]), 6);
        let first = source.body().unwrap();
        assert!(source.can_replay());
        assert_eq!(read_all(first).await.unwrap(), b"0123456789");
        assert!(!source.can_replay());
        assert!(source.body().is_none());
    }

    #[tokio::test]
    async fn a_committed_stream_stops_recording() {
        let source = ReplaySource::new(stream_of(&[b"ab"]), 64);
        let mut replay = Replay::Stream(source);
        let body = replay.next_body().unwrap();
        replay.commit();
        assert_eq!(read_all(body).await.unwrap(), b"ab");
        assert!(!replay.can_replay());
    }
}
