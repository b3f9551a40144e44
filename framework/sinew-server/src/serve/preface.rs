//! Whether a new connection has finished its side of the HTTP/2
//! handshake: the preface, then its first frame, which must be SETTINGS.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The length of the preface every HTTP/2 client sends first
/// (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_LEN: usize = 24;

/// The length of an HTTP/2 frame header: a 24-bit payload length, a type,
/// flags and a stream id.
const FRAME_HEADER_LEN: usize = 9;

/// Turns true once a connection has sent the HTTP/2 preface and the whole
/// frame that follows it (the client's SETTINGS, which the protocol
/// requires next). Read by the connection's task, set by its stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spoken(Arc<AtomicBool>);

pin_project! {
    /// A connection's byte stream that counts what the peer sends until its
    /// side of the handshake has arrived (the preface and the whole first
    /// frame), then only passes bytes through.
    ///
    /// hyper does not say when a connection's handshake is done; the
    /// scaffold closes a connection whose peer has not sent all of it
    /// within the handshake timeout, so that a peer that sends the preface
    /// and stops (or trickles a long SETTINGS frame) cannot hold a slot.
    /// hyper itself rejects bytes that are not a preface, and a first frame
    /// that is not SETTINGS.
    #[derive(Debug)]
    pub(crate) struct Watched<T> {
        #[pin]
        inner: T,
        // Bytes read so far, while the handshake lasts.
        read: usize,
        // The first frame's header, as it arrives.
        header: [u8; FRAME_HEADER_LEN],
        spoken: Spoken,
    }
}

// === impl Spoken ===

impl Spoken {
    /// Whether the preface's length has arrived.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

// === impl Watched ===

impl<T> Watched<T> {
    /// Watches `inner`; the returned flag turns true with the preface.
    pub(crate) fn new(inner: T) -> (Self, Spoken) {
        let spoken = Spoken::default();
        let watched = Self {
            inner,
            read: 0,
            header: [0; FRAME_HEADER_LEN],
            spoken: spoken.clone(),
        };
        (watched, spoken)
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && !this.spoken.get() {
            let new = &buf.filled()[before..];
            // The bytes of the first frame's header among them.
            let header = PREFACE_LEN..PREFACE_LEN + FRAME_HEADER_LEN;
            for (at, byte) in (*this.read..).zip(new) {
                if header.contains(&at) {
                    this.header[at - PREFACE_LEN] = *byte;
                }
            }
            *this.read += new.len();
            if *this.read >= header.end {
                let [a, b, c, ..] = *this.header;
                let payload = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                if *this.read >= header.end + payload {
                    this.spoken.0.store(true, Ordering::Release);
                }
            }
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// The preface, then a SETTINGS frame with `settings` bytes of
    /// payload.
    fn handshake(settings: usize) -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let len = u32::try_from(settings).unwrap().to_be_bytes();
        bytes.extend_from_slice(&[len[1], len[2], len[3], 0x4, 0, 0, 0, 0, 0]);
        bytes.extend(std::iter::repeat_n(0, settings));
        bytes
    }

    #[tokio::test]
    async fn the_flag_turns_with_the_whole_first_frame_not_the_preface() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let (mut watched, spoken) = Watched::new(ours);
        let mut buf = [0; 1024];
        let sent = handshake(12);

        // The preface, then the frame's header and part of its payload,
        // one piece at a time, split inside the header too.
        for piece in [&sent[..16], &sent[16..24], &sent[24..29], &sent[29..40]] {
            peer.write_all(piece).await.unwrap();
            let n = watched.read(&mut buf).await.unwrap();
            assert_eq!(n, piece.len());
            assert!(!spoken.get(), "after {} of {} bytes", n, sent.len());
        }
        peer.write_all(&sent[40..]).await.unwrap();
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, sent.len() - 40);
        assert!(spoken.get());

        // Writes pass through.
        watched.write_all(b"settings").await.unwrap();
        let n = peer.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"settings");
    }

    #[tokio::test]
    async fn an_empty_settings_frame_completes_it_at_once() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let (mut watched, spoken) = Watched::new(ours);
        let mut buf = [0; 1024];
        peer.write_all(&handshake(0)).await.unwrap();
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, 33);
        assert!(spoken.get());
    }
}
