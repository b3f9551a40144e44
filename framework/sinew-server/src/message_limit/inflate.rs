//! The send limit in decompressed bytes: what each compressed response
//! message decompresses to, counted as its bytes go out.

use std::io::{self, Write};

use flate2::write::GzDecoder;
use sinew_core::compression::CompressionEncoding;

/// Counts what the compressed messages of a response body decompress to,
/// fed the body's bytes as they pass, in any chunking. Nothing
/// decompressed is kept: the output is counted, then dropped, and a
/// message is decompressed no further than one byte past the limit.
///
/// Only responses compressed by the server itself (its `send_compressed`
/// setting) get one, so a server that does not compress pays nothing.
pub(crate) struct Inflation {
    encoding: CompressionEncoding,
    limit: usize,
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    /// The current message's decoder, if it is compressed.
    decoder: Option<Decoder>,
}

enum Decoder {
    Gzip(GzDecoder<Counter>),
    Zstd(zstd::stream::write::Decoder<'static, Counter>),
}

/// Counts bytes written to it; fails the write that takes it past `limit`.
struct Counter {
    written: usize,
    limit: usize,
}

/// A message decompressed to more than the limit: at least this many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Over(pub(crate) usize);

// === impl Inflation ===

impl Inflation {
    /// Counts messages compressed with `encoding` against `limit` bytes.
    pub(crate) fn new(encoding: CompressionEncoding, limit: usize) -> Self {
        Self {
            encoding,
            limit,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            decoder: None,
        }
    }

    /// Consumes a chunk of the body; `Err` once a message decompresses
    /// past the limit.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Over> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                self.decompress(&chunk[..take])?;
                chunk = &chunk[take..];
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.finish()?;
                }
                continue;
            }
            let take = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk = &chunk[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                let [flag, length @ ..] = self.header;
                self.remaining = u64::from(u32::from_be_bytes(length));
                if flag == 1 && self.remaining > 0 {
                    self.decoder = self.decoder_for(self.limit);
                }
            }
        }
        Ok(())
    }

    fn decoder_for(&self, limit: usize) -> Option<Decoder> {
        let counter = Counter { written: 0, limit };
        match self.encoding {
            CompressionEncoding::Gzip => Some(Decoder::Gzip(GzDecoder::new(counter))),
            CompressionEncoding::Zstd => zstd::stream::write::Decoder::new(counter)
                .ok()
                .map(Decoder::Zstd),
            #[allow(unreachable_patterns, reason = "deflate exists only with its feature")]
            _ => None,
        }
    }

    fn decompress(&mut self, bytes: &[u8]) -> Result<(), Over> {
        let Some(decoder) = &mut self.decoder else {
            return Ok(());
        };
        let written = match decoder {
            Decoder::Gzip(gzip) => gzip.write_all(bytes),
            Decoder::Zstd(zstd) => zstd.write_all(bytes),
        };
        self.check(written.is_err())
    }

    fn finish(&mut self) -> Result<(), Over> {
        let Some(decoder) = &mut self.decoder else {
            return Ok(());
        };
        let finished = match decoder {
            Decoder::Gzip(gzip) => gzip.try_finish(),
            Decoder::Zstd(zstd) => zstd.flush(),
        };
        let checked = self.check(finished.is_err());
        self.decoder = None;
        checked
    }

    /// Past the limit, `Err`; any other decoder error (a message this
    /// server compressed does not decompress) stops the count for that
    /// message: the peer's decoder will report it.
    fn check(&mut self, failed: bool) -> Result<(), Over> {
        let Some(decoder) = &self.decoder else {
            return Ok(());
        };
        let counter = match decoder {
            Decoder::Gzip(gzip) => gzip.get_ref(),
            Decoder::Zstd(zstd) => zstd.get_ref(),
        };
        if counter.written > counter.limit {
            return Err(Over(counter.written));
        }
        if failed {
            self.decoder = None;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Inflation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflation")
            .field("encoding", &self.encoding)
            .field("limit", &self.limit)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

// === impl Counter ===

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("over the send limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn compressed(encoding: CompressionEncoding, plain: &[u8]) -> Vec<u8> {
        match encoding {
            CompressionEncoding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(plain).unwrap();
                encoder.finish().unwrap()
            }
            _ => zstd::encode_all(plain, 0).unwrap(),
        }
    }

    fn frame(flag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_small_message_that_decompresses_past_the_limit_is_over_in_any_chunking() {
        for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
            let under = frame(1, &compressed(encoding, &[7; 900]));
            let over = frame(1, &compressed(encoding, &[0; 10_000]));
            assert!(over.len() < 1000, "{} bytes on the wire", over.len());
            let plain = frame(0, &[1; 600]);
            let stream = [under, plain, over].concat();
            for chunk_size in [1, 3, 7, 64, 100_000] {
                let mut inflation = Inflation::new(encoding, 1000);
                let found = stream
                    .chunks(chunk_size)
                    .find_map(|chunk| inflation.feed(chunk).err());
                let Some(Over(bytes)) = found else {
                    panic!("{encoding:?}, chunks of {chunk_size}: not caught");
                };
                assert!(bytes > 1000, "{bytes}");
            }
        }
    }

    #[test]
    fn messages_within_the_limit_pass() {
        for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
            let stream = [
                frame(1, &compressed(encoding, &[7; 1000])),
                frame(1, &compressed(encoding, b"")),
                frame(0, &[]),
                frame(1, &compressed(encoding, &[8; 999])),
            ]
            .concat();
            for chunk_size in [1, 5, 1000] {
                let mut inflation = Inflation::new(encoding, 1000);
                for chunk in stream.chunks(chunk_size) {
                    assert_eq!(inflation.feed(chunk), Ok(()), "{encoding:?}");
                }
            }
        }
    }
}
