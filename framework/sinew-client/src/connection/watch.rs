//! Telling when the server's half of the HTTP/2 handshake has arrived.
//!
//! hyper's client handshake resolves once the client's preface is
//! written: it does not wait for the server's SETTINGS. A peer that
//! accepts the TCP connection and then says nothing (a hung process, a
//! black-holing middlebox, a server whose accept backlog the kernel filled
//! for it) would count as connected, and every call sent to it would wait
//! out its deadline. [`SettingsWatch`] reads the server's first frame as
//! it passes, so that the dialer can bound the whole handshake by the
//! connect timeout.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use super::watchdog::Activity;

use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
};

/// An HTTP/2 frame header is 9 bytes: length (3), type, flags, stream id (4).
const FRAME_HEADER: usize = 9;

pin_project! {
    /// A connection's I/O that reports, once, when the server's first
    /// frame (its SETTINGS, which every HTTP/2 server sends first) has been
    /// read whole. After that it only forwards: one branch per read.
    pub(super) struct SettingsWatch<T> {
        #[pin]
        inner: T,
        watch: Option<Watch>,
        // Told of every read that brings bytes, for the connection's
        // watchdog.
        activity: Arc<Activity>,
        reads: u64,
    }
}

/// The progress through the server's first frame.
struct Watch {
    header: [u8; FRAME_HEADER],
    read: usize,
    done: oneshot::Sender<()>,
}

// === impl SettingsWatch ===

impl<T> SettingsWatch<T> {
    /// Wraps `inner`; the receiver resolves when the server's first frame
    /// has been read (and errs if the I/O is dropped before).
    pub(super) fn new(inner: T, activity: Arc<Activity>) -> (Self, oneshot::Receiver<()>) {
        let (done, settled) = oneshot::channel();
        let watch = Watch {
            header: [0; FRAME_HEADER],
            read: 0,
            done,
        };
        (
            Self {
                inner,
                watch: Some(watch),
                activity,
                reads: 0,
            },
            settled,
        )
    }
}

impl Watch {
    /// Takes note of `bytes` read from the server; true once the first
    /// frame is whole.
    fn saw(&mut self, bytes: &[u8]) -> bool {
        let missing = FRAME_HEADER.saturating_sub(self.read).min(bytes.len());
        let at = self.read.min(FRAME_HEADER);
        self.header[at..at + missing].copy_from_slice(&bytes[..missing]);
        self.read = self.read.saturating_add(bytes.len());
        if self.read < FRAME_HEADER {
            return false;
        }
        let length = usize::from(self.header[0]) << 16
            | usize::from(self.header[1]) << 8
            | usize::from(self.header[2]);
        self.read >= FRAME_HEADER + length
    }
}

impl<T: AsyncRead> AsyncRead for SettingsWatch<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            *this.reads += 1;
            this.activity.read(*this.reads);
        }
        if let Some(watch) = this.watch
            && watch.saw(&buf.filled()[before..])
            && let Some(watch) = this.watch.take()
        {
            let _ = watch.done.send(());
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for SettingsWatch<T> {
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
    use super::*;

    fn fresh() -> (Watch, oneshot::Receiver<()>) {
        let (done, settled) = oneshot::channel();
        let watch = Watch {
            header: [0; FRAME_HEADER],
            read: 0,
            done,
        };
        (watch, settled)
    }

    /// A SETTINGS frame with one setting (6 bytes of payload).
    const SETTINGS: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];

    #[test]
    fn a_frame_is_whole_once_its_header_and_payload_are_read() {
        let (mut watch, _settled) = fresh();
        assert!(!watch.saw(&SETTINGS[..9]), "the header alone");
        assert!(!watch.saw(&SETTINGS[9..14]));
        assert!(watch.saw(&SETTINGS[14..]));
    }

    #[test]
    fn a_frame_read_a_byte_at_a_time_or_with_more_after_it() {
        let (mut watch, _settled) = fresh();
        let whole = SETTINGS
            .iter()
            .map(|b| watch.saw(&[*b]))
            .collect::<Vec<_>>();
        assert_eq!(whole.iter().filter(|w| **w).count(), 1);
        assert!(whole[14]);

        let (mut watch, _settled) = fresh();
        let mut more = SETTINGS.to_vec();
        more.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
        assert!(watch.saw(&more));
    }

    #[test]
    fn an_empty_settings_frame_is_whole_with_its_header() {
        let (mut watch, _settled) = fresh();
        assert!(!watch.saw(&[0, 0, 0, 4]));
        assert!(watch.saw(&[0, 0, 0, 0, 0]));
    }

    #[tokio::test]
    async fn the_receiver_resolves_when_the_frame_has_been_read() {
        let (client, mut server) = tokio::io::duplex(64);
        let (mut watched, settled) = SettingsWatch::new(client, Arc::new(Activity::new()));
        tokio::io::AsyncWriteExt::write_all(&mut server, &SETTINGS)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut watched, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, SETTINGS.len());
        settled.await.expect("reported once the frame is read");
    }
}
