//! The deadline of a call, and its `grpc-timeout` header.
//!
//! A server records each incoming call's deadline (the caller's
//! `grpc-timeout`, capped by the server's own limit) as a [`Deadline`],
//! and makes it the task's [`Deadline::current`] while the handler runs,
//! so that the calls the handler makes with sinew's client inherit what is
//! left of the caller's budget with no code from the user. (A task the
//! handler spawns does not inherit it; pass the deadline along with
//! [`Deadline::scope`].) The client reads it; the server writes it: both
//! meet here, below either.
//!
//! [`parse_grpc_timeout`] and [`set_grpc_timeout`] are the header's codec;
//! [`DeadlineBody`] ends a response that is still streaming at its
//! deadline, for the client and the server alike.

mod body;

pub use body::DeadlineBody;

use std::cell::RefCell;
use std::time::Duration;

use http::HeaderValue;

use tokio::time::Instant;

/// When an incoming call must be answered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

tokio::task_local! {
    static CURRENT: Deadline;
}

impl Deadline {
    /// The deadline of the incoming call whose handler is running on this
    /// task, if any.
    #[inline]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|deadline| *deadline).ok()
    }

    /// Runs `future` with `self` as its [`current`](Self::current)
    /// deadline.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Runs `f` with `self` as the current deadline (for one poll).
    #[inline]
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }

    /// A deadline at `instant`.
    #[inline]
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant.
    #[inline]
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left, zero once passed.
    #[inline]
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The deadline of `request`, if the server's deadline layer recorded
    /// one.
    #[inline]
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }
}

/// Parses a `grpc-timeout` header value: up to eight digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`). `None` if malformed, which the gRPC
/// spec says to treat as no timeout.
#[inline]
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Sets the `grpc-timeout` header to `timeout`, rounded up (a deadline is
/// never reported shorter than it is): in milliseconds from a millisecond
/// up, else in the finest unit that fits, and always in the largest unit
/// that keeps it within the header's eight digits.
///
/// Why milliseconds rather than the finest unit: calls in flight together
/// then send the same few values, which HPACK sends as a one-byte index;
/// microsecond values are new on every call, so each one was added to
/// both peers' header tables and compared against the previous ones,
/// which cost about 2% of a call. The server learns of the deadline at
/// most a millisecond late; the client enforces it exactly.
#[inline]
pub fn set_grpc_timeout(headers: &mut http::HeaderMap, timeout: Duration) {
    const MAX: u64 = 99_999_999;
    const UNITS: [(u64, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    // In 64 bits, whose division is far cheaper than 128-bit division: up
    // to 584 years of nanoseconds; a longer timeout is sent as 584 years,
    // which is forever just the same.
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let finest = if nanos >= 1_000_000 { 2 } else { 0 };
    let (value, unit) = UNITS[finest..]
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|(value, _)| *value <= MAX)
        .unwrap_or((MAX, 'H'));
    // The same value comes back call after call (the deadline layer and
    // each attempt write it; calls with one timeout all send it): the last
    // one made on this thread is kept, and a hit costs a reference count
    // instead of an allocation.
    thread_local! {
        static LAST: RefCell<Option<(u64, char, HeaderValue)>> = const { RefCell::new(None) };
    }
    let header = LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((last_value, last_unit, header)) = &*last
            && *last_value == value
            && *last_unit == unit
        {
            return Some(header.clone());
        }
        let header = grpc_timeout_value(value, unit)?;
        *last = Some((value, unit, header.clone()));
        Some(header)
    });
    if let Some(header) = header {
        headers.insert(crate::headers::GRPC_TIMEOUT, header);
    }
}

/// `value` and `unit` as a `grpc-timeout` header value.
fn grpc_timeout_value(value: u64, unit: char) -> Option<HeaderValue> {
    // At most eight digits and a unit: format on the stack, right to left.
    let mut text = [0u8; 9];
    let mut start = 8;
    text[8] = unit as u8;
    let mut rest = value;
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Backed by a shared buffer from the start: the retry layer copies the
    // headers into every attempt, and a value copied from a plain vector
    // costs a second allocation the first time it is cloned.
    let text = bytes::Bytes::from_owner(text).slice(start..);
    HeaderValue::from_maybe_shared(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in [&b""[..], b"S", b"123456789S", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    /// The `grpc-timeout` that `set_grpc_timeout` writes for `timeout`.
    fn encode(timeout: Duration) -> HeaderValue {
        let mut headers = http::HeaderMap::new();
        set_grpc_timeout(&mut headers, timeout);
        headers["grpc-timeout"].clone()
    }

    #[test]
    fn grpc_timeout_encoding_rounds_up_into_eight_digits() {
        assert_eq!(encode(Duration::from_nanos(5)), "5n");
        assert_eq!(encode(Duration::from_micros(999)), "999000n");
        // From a millisecond up, whole milliseconds, rounded up.
        assert_eq!(encode(Duration::from_millis(1)), "1m");
        assert_eq!(encode(Duration::from_micros(1_001)), "2m");
        assert_eq!(encode(Duration::from_millis(250)), "250m");
        assert_eq!(encode(Duration::from_secs(2)), "2000m");
        assert_eq!(encode(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode(Duration::from_secs(200_000)), "200000S");
        assert_eq!(encode(Duration::MAX), "5124096H");
    }

    #[test]
    fn a_repeated_grpc_timeout_is_the_same_and_a_new_one_is_new() {
        // The last value is kept per thread: the same number in another
        // unit, or another number, is not mistaken for it.
        assert_eq!(encode(Duration::from_nanos(5)), "5n");
        assert_eq!(encode(Duration::from_millis(5)), "5m");
        assert_eq!(encode(Duration::from_millis(5)), "5m");
        assert_eq!(encode(Duration::from_micros(4_001)), "5m");
        assert_eq!(encode(Duration::from_millis(6)), "6m");
        assert_eq!(encode(Duration::from_nanos(5)), "5n");
    }
}
