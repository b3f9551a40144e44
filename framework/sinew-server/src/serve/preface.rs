//! Whether a new connection has started to speak HTTP/2.

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

/// Turns true once a connection has sent as many bytes as the HTTP/2
/// preface has. Read by the connection's task, set by its stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spoken(Arc<AtomicBool>);

pin_project! {
    /// A connection's byte stream that counts what the peer sends until
    /// the preface's length has arrived, then only passes bytes through.
    ///
    /// hyper does not say when a connection's handshake is done; the
    /// scaffold closes a connection whose peer has not sent a preface's
    /// worth of bytes within the handshake timeout (hyper itself rejects
    /// one whose bytes are not a preface).
    #[derive(Debug)]
    pub(crate) struct Watched<T> {
        #[pin]
        inner: T,
        read: usize,
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
        if *this.read < PREFACE_LEN && matches!(polled, Poll::Ready(Ok(()))) {
            *this.read += buf.filled().len() - before;
            if *this.read >= PREFACE_LEN {
                this.spoken.0.store(true, Ordering::Release);
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

    #[tokio::test]
    async fn the_flag_turns_with_the_prefaces_length_in_bytes() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let (mut watched, spoken) = Watched::new(ours);
        let mut buf = [0; 64];

        peer.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, 16);
        assert!(!spoken.get(), "16 of 24 bytes");

        peer.write_all(b"\r\nSM\r\n\r\nmore").await.unwrap();
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, 12);
        assert!(spoken.get());

        // Writes pass through.
        watched.write_all(b"settings").await.unwrap();
        let n = peer.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"settings");
    }
}
