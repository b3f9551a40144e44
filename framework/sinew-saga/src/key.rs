//! The idempotency key a saga step's call carries.

use std::fmt;

use tonic::metadata::{MetadataMap, MetadataValue};

/// The metadata header (HTTP/2 header) that carries the key.
pub const HEADER: &str = "sinew-idempotency-key";

/// The longest key accepted, in bytes.
pub const MAX_LEN: usize = 200;

/// Which call of a step a key is for: a step's action and its
/// compensation are different calls, with different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The step's action.
    Action,
    /// The call that undoes the step's action.
    Compensation,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensation => "compensation",
        }
    }
}

/// A key that makes a call apply at most once: the participant records
/// it with its response, in the transaction of the call's writes, and
/// answers a repeated call with the recorded response.
///
/// A key is 1 to [`MAX_LEN`] bytes of printable ASCII without spaces
/// (`!` to `~`). Keys for saga steps come from [`for_step`](Self::for_step);
/// any other valid key (a UUID a client chose) works the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("the idempotency key is empty")]
    Empty,
    /// The key is longer than [`MAX_LEN`] bytes.
    #[error("the idempotency key is {0} bytes, over the limit of {MAX_LEN}")]
    TooLong(usize),
    /// The key has a byte that is not printable ASCII, or a space.
    #[error("the idempotency key has a byte that is not printable ASCII (at {0})")]
    NotPrintable(usize),
    /// The call carries the header more than once.
    #[error("the call carries more than one idempotency key")]
    Repeated,
}

impl From<KeyError> for tonic::Status {
    /// `INVALID_ARGUMENT`, with the reason.
    fn from(error: KeyError) -> Self {
        Self::invalid_argument(error.to_string())
    }
}

impl IdempotencyKey {
    /// The key of a saga step's call: the saga's id, the step (its name or
    /// index), and whether the call is the action or the compensation.
    ///
    /// The same arguments always make the same key, in any process and
    /// any version of sinew-saga, so a saga resumed after a crash repeats
    /// its calls with the keys it used before. The key is
    /// `<saga id>/<step>/action` (or `/compensation`), with every byte of
    /// the id and step outside `A-Z a-z 0-9 - . _ ~` written as `%XX`, so
    /// that no two different triples make one key.
    ///
    /// Fails if the key would pass [`MAX_LEN`] bytes.
    ///
    /// ```
    /// use sinew_saga::{IdempotencyKey, Phase};
    /// let key = IdempotencyKey::for_step("order-17", "charge", Phase::Action).unwrap();
    /// assert_eq!(key.as_str(), "order-17/charge/action");
    /// let key = IdempotencyKey::for_step("a/b", 3, Phase::Compensation).unwrap();
    /// assert_eq!(key.as_str(), "a%2Fb/3/compensation");
    /// ```
    pub fn for_step(
        saga_id: &str,
        step: impl fmt::Display,
        phase: Phase,
    ) -> Result<Self, KeyError> {
        let mut key = String::with_capacity(saga_id.len() + 24);
        escape_into(&mut key, saga_id);
        key.push('/');
        escape_into(&mut key, &step.to_string());
        key.push('/');
        key.push_str(phase.as_str());
        Self::parse(&key)
    }

    /// A key as given, checked: 1 to [`MAX_LEN`] bytes of printable ASCII
    /// without spaces.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_LEN {
            return Err(KeyError::TooLong(key.len()));
        }
        if let Some(at) = key.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(KeyError::NotPrintable(at));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key a call's metadata carries, if any; an invalid key, or more
    /// than one, is an error (which converts to `INVALID_ARGUMENT`).
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, KeyError> {
        Self::from_headers(metadata.as_ref())
    }

    /// As [`from_metadata`](Self::from_metadata), from HTTP headers.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<Self>, KeyError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(KeyError::Repeated);
        }
        let bytes = value.as_bytes();
        if let Some(at) = bytes.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(KeyError::NotPrintable(at));
        }
        // Only graphic ASCII is left, which is UTF-8.
        let key = std::str::from_utf8(bytes).map_err(|_| KeyError::NotPrintable(0))?;
        Self::parse(key).map(Some)
    }

    /// Puts the key in a client request's metadata, replacing any there.
    ///
    /// ```
    /// use sinew_saga::{IdempotencyKey, Phase};
    /// let key = IdempotencyKey::for_step("order-17", "charge", Phase::Action).unwrap();
    /// let mut request = tonic::Request::new(());
    /// key.apply(&mut request);
    /// assert_eq!(IdempotencyKey::from_metadata(request.metadata()), Ok(Some(key)));
    /// ```
    pub fn apply<T>(&self, request: &mut tonic::Request<T>) {
        // Checked printable ASCII when made: always a valid header value.
        if let Ok(value) = MetadataValue::try_from(self.0.as_str()) {
            request.metadata_mut().insert(HEADER, value);
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn escape_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_keys_are_escaped_and_distinct() {
        let a = IdempotencyKey::for_step("x/y", "z", Phase::Action).unwrap();
        let b = IdempotencyKey::for_step("x", "y/z", Phase::Action).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "x%2Fy/z/action");
        let c = IdempotencyKey::for_step("x", "y/z", Phase::Compensation).unwrap();
        assert_ne!(b, c);
        let unicode = IdempotencyKey::for_step("é %", "1", Phase::Action).unwrap();
        assert_eq!(unicode.as_str(), "%C3%A9%20%25/1/action");
        assert_eq!(
            IdempotencyKey::for_step(&"s".repeat(192), 1, Phase::Action),
            Err(KeyError::TooLong(201))
        );
    }

    #[test]
    fn invalid_keys_are_refused() {
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse("a b"), Err(KeyError::NotPrintable(1)));
        assert_eq!(
            IdempotencyKey::parse("ab\u{e9}"),
            Err(KeyError::NotPrintable(2))
        );
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(MAX_LEN + 1)),
            Err(KeyError::TooLong(MAX_LEN + 1))
        );
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_LEN)).is_ok());
        let mut headers = http::HeaderMap::new();
        headers.append(HEADER, "one".parse().unwrap());
        headers.append(HEADER, "two".parse().unwrap());
        assert_eq!(
            IdempotencyKey::from_headers(&headers),
            Err(KeyError::Repeated)
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(HEADER, http::HeaderValue::from_static(""));
        assert_eq!(IdempotencyKey::from_headers(&headers), Err(KeyError::Empty));
        assert_eq!(
            IdempotencyKey::from_headers(&http::HeaderMap::new()),
            Ok(None)
        );
        let status = tonic::Status::from(KeyError::Empty);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
