//! Message compression: which encodings sinew accepts, and a list of
//! encodings as a setting.
//!
//! Servers built with sinew accept requests compressed with gzip or zstd
//! on every call, by default, so that clients configured to compress
//! (grpcio's `compression=grpc.Compression.Gzip`, grpc-js, grpc-go's
//! `UseCompressor`) are understood. sinew's clients accept compressed
//! responses when they compress their requests, or when told to
//! (advertising it costs every call a header). Whether to *send*
//! compressed is a choice, off by default: compression spends CPU on
//! every message to save bandwidth, which pays for large, repetitive
//! messages over slow links, and not for small ones in a data centre.
//!
//! Size limits count decompressed bytes: a receiver decompresses a
//! message into a buffer no larger than its receive limit, and a message
//! that would pass it fails the call with `RESOURCE_EXHAUSTED`, however
//! small it was on the wire (no "zip bomb" can make it allocate more).

use std::fmt;

pub use tonic::codec::CompressionEncoding;

/// The encodings sinew accepts, on clients and servers alike, in this
/// order of preference.
pub const ACCEPTED: &[CompressionEncoding] =
    &[CompressionEncoding::Gzip, CompressionEncoding::Zstd];

/// A set of compression encodings, written `"gzip"`, `"zstd"`,
/// `"gzip,zstd"`, or `""` (also `"none"`) for none.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Encodings {
    gzip: bool,
    zstd: bool,
}

/// An encoding name that is not `gzip`, `zstd` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}; expected gzip, zstd, both separated by a comma, or none")]
pub struct UnknownEncoding(String);

// === impl Encodings ===

impl Encodings {
    /// No encoding.
    pub const NONE: Self = Self {
        gzip: false,
        zstd: false,
    };

    /// gzip and zstd.
    pub const ALL: Self = Self {
        gzip: true,
        zstd: true,
    };

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self == Self::NONE
    }

    /// The set with `encoding` added. (Deflate, which sinew does not
    /// build, is ignored.)
    #[must_use]
    pub fn with(mut self, encoding: CompressionEncoding) -> Self {
        match encoding {
            CompressionEncoding::Gzip => self.gzip = true,
            CompressionEncoding::Zstd => self.zstd = true,
            #[allow(unreachable_patterns, reason = "deflate exists only with its feature")]
            _ => {}
        }
        self
    }

    /// The encodings in the set, gzip first.
    pub fn iter(self) -> impl Iterator<Item = CompressionEncoding> {
        [
            self.gzip.then_some(CompressionEncoding::Gzip),
            self.zstd.then_some(CompressionEncoding::Zstd),
        ]
        .into_iter()
        .flatten()
    }

    /// Parses a comma-separated list of names.
    pub fn parse(text: &str) -> Result<Self, UnknownEncoding> {
        let mut set = Self::NONE;
        for name in text.split(',').map(str::trim) {
            match name {
                "" | "none" | "identity" => {}
                "gzip" => set.gzip = true,
                "zstd" => set.zstd = true,
                other => return Err(UnknownEncoding(other.to_owned())),
            }
        }
        Ok(set)
    }
}

impl From<CompressionEncoding> for Encodings {
    fn from(encoding: CompressionEncoding) -> Self {
        Self::NONE.with(encoding)
    }
}

impl fmt::Display for Encodings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.gzip, self.zstd) {
            (false, false) => f.write_str("none"),
            (true, false) => f.write_str("gzip"),
            (false, true) => f.write_str("zstd"),
            (true, true) => f.write_str("gzip,zstd"),
        }
    }
}

impl fmt::Debug for Encodings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encodings({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print() {
        assert_eq!(Encodings::parse("").unwrap(), Encodings::NONE);
        assert_eq!(Encodings::parse("none").unwrap(), Encodings::NONE);
        assert_eq!(
            Encodings::parse("gzip").unwrap(),
            Encodings::from(CompressionEncoding::Gzip)
        );
        assert_eq!(Encodings::parse(" zstd , gzip ").unwrap(), Encodings::ALL);
        assert_eq!(Encodings::ALL.to_string(), "gzip,zstd");
        assert_eq!(
            Encodings::ALL.iter().collect::<Vec<_>>(),
            [CompressionEncoding::Gzip, CompressionEncoding::Zstd]
        );
        let error = Encodings::parse("gzip,brotli").unwrap_err();
        assert!(error.to_string().contains("brotli"), "{error}");
    }
}
