//! The policy of one call, resolved before it is sent.
//!
//! The client resolves a [`CallPolicy`] per call from, lowest precedence
//! first: the client's defaults, the contract's method table, a gRPC service
//! config, and the caller's [`CallOptions`]. It travels in the request's
//! extensions, where each layer reads the part it enforces. A request with
//! no `CallPolicy` (a layer used on its own) gets the layer's own default.
//!
//! Inside the client, the policy and the [`CallDeadline`] share one private
//! extension; a layer used on its own reads them from extensions of their
//! own, put there by hand or by the deadline layer.

use std::{cell::RefCell, time::Duration};

use http::HeaderValue;
use tonic::Code;

use crate::contract::{self, Idempotency, Streaming};

/// A set of gRPC status codes, as a bit set: `Copy`, and `const`-buildable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CodeSet(u32);

impl CodeSet {
    /// No codes.
    pub const EMPTY: Self = Self(0);

    /// The set of these codes.
    pub const fn of(codes: &[Code]) -> Self {
        let mut bits = 0u32;
        let mut i = 0;
        while i < codes.len() {
            bits |= 1 << (codes[i] as u32);
            i += 1;
        }
        Self(bits)
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & (1 << (code as u32)) != 0
    }

    /// The set with `code` added.
    pub const fn with(self, code: Code) -> Self {
        Self(self.0 | (1 << (code as u32)))
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes = (0..=16)
            .map(Code::from_i32)
            .filter(|code| self.contains(*code));
        f.debug_set().entries(codes).finish()
    }
}

/// gRFC A6 retry rules for one method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Capped at
    /// [`MAX_ATTEMPTS_CAP`] unless the client raises the cap.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry.
    pub initial_backoff: Duration,
    /// Ceiling of any backoff.
    pub max_backoff: Duration,
    /// Growth of the backoff ceiling per attempt.
    pub backoff_multiplier: f64,
    /// Codes that may be retried.
    pub retryable_codes: CodeSet,
}

/// gRFC A6: `maxAttempts` above this is treated as this.
pub const MAX_ATTEMPTS_CAP: u32 = 5;

impl RetryPolicy {
    /// sinew's default for methods that are safe to retry: 3 attempts, 50ms
    /// first backoff up to 1s, doubling, on `UNAVAILABLE` (and
    /// `RESOURCE_EXHAUSTED` when the server sends pushback).
    pub const DEFAULT: Self = Self {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        backoff_multiplier: 2.0,
        retryable_codes: CodeSet::of(&[Code::Unavailable]),
    };
}

impl From<contract::RetryPolicy> for RetryPolicy {
    fn from(p: contract::RetryPolicy) -> Self {
        Self {
            max_attempts: p.max_attempts,
            initial_backoff: p.initial_backoff,
            max_backoff: p.max_backoff,
            backoff_multiplier: p.backoff_multiplier,
            retryable_codes: CodeSet::of(p.retryable_codes),
        }
    }
}

/// Hedging rules for one method (only ever for `NO_SIDE_EFFECTS` methods).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgingPolicy {
    /// Copies in all, the first included; capped like retries.
    pub max_attempts: u32,
    /// Wait before each further copy.
    pub hedging_delay: Duration,
    /// Codes that do not end the hedged call: another copy may still win.
    pub non_fatal_codes: CodeSet,
}

impl From<contract::HedgingPolicy> for HedgingPolicy {
    fn from(p: contract::HedgingPolicy) -> Self {
        Self {
            max_attempts: p.max_attempts,
            hedging_delay: p.hedging_delay,
            non_fatal_codes: CodeSet::of(p.non_fatal_codes),
        }
    }
}

/// Everything the layers need to know about one call. `Copy`; carried in
/// the request's extensions (by the client, in its own record of the call;
/// by hand, as a `CallPolicy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPolicy {
    /// The method's path, `/pkg.Service/Method`.
    pub path: &'static str,
    /// What the contract says about repeating the call.
    pub idempotency: Idempotency,
    /// Which sides of the call are streams. A request that is one message
    /// (unary and server-streaming calls) can be buffered whole and sent
    /// again; a request stream only while it fits the replay buffer.
    pub streaming: Streaming,
    /// The call's own timeout, before propagation shortens it.
    pub timeout: Option<Duration>,
    /// Retry rules, if the call may be retried on a status.
    pub retry: Option<RetryPolicy>,
    /// Hedging rules, if the call is hedged.
    pub hedging: Option<HedgingPolicy>,
    /// The caller opted in to retrying a method with side effects.
    pub retry_side_effects: bool,
}

impl CallPolicy {
    /// A policy that sets nothing: no timeout, no retries, no hedging, for
    /// a unary method of unknown idempotency.
    pub fn unknown(path: &'static str) -> Self {
        Self {
            path,
            idempotency: Idempotency::Unknown,
            streaming: Streaming::Unary,
            timeout: None,
            retry: None,
            hedging: None,
            retry_side_effects: false,
        }
    }

    /// Whether the request is a single message, which can be buffered
    /// whole.
    pub fn single_request(&self) -> bool {
        matches!(
            self.streaming,
            Streaming::Unary | Streaming::ServerStreaming
        )
    }

    /// Whether a failed attempt that may have reached the server can be
    /// sent again: the method is idempotent, or the caller opted in.
    pub fn may_repeat(&self) -> bool {
        self.idempotency.is_retry_safe() || self.retry_side_effects
    }
}

/// What the [`Client`](crate::client::Client) records of each call in the
/// request's extensions: its policy, and its deadline once the deadline
/// layer sets one.
///
/// One extension stands in for a [`CallPolicy`] and a [`CallDeadline`]:
/// each extension costs an allocation when it is inserted and another for
/// every attempt the retry layer copies it into. Layers read it through
/// [`CallPolicy::of`] and [`CallDeadline::of`], which fall back on the
/// public extensions, so that each layer used on its own still takes them
/// from a request built by hand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallState {
    pub(crate) policy: CallPolicy,
    pub(crate) deadline: Option<CallDeadline>,
}

impl CallState {
    /// The record of a call with `policy`, no deadline yet.
    pub(crate) fn new(policy: CallPolicy) -> Self {
        Self {
            policy,
            deadline: None,
        }
    }
}

impl CallPolicy {
    /// The policy of a request: the client's record, else a `CallPolicy`
    /// put in its extensions by hand.
    pub(crate) fn of(extensions: &http::Extensions) -> Option<Self> {
        match extensions.get::<CallState>() {
            Some(state) => Some(state.policy),
            None => extensions.get::<Self>().copied(),
        }
    }
}

/// When the whole call (every attempt, every backoff) must be over by.
/// Set in the request's extensions by the deadline layer (inside the
/// client, in its record of the call rather than as an extension of its
/// own); the retry and hedging layers never start an attempt or a backoff
/// past it, and send each attempt with a `grpc-timeout` of what is left.
///
/// One extension says both when and whether the deadline layer enforces
/// it (a deadline set by hand is only respected, not enforced, so the
/// retry layer bounds each attempt itself): each extension costs an
/// allocation per call, and another per attempt it is copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallDeadline {
    at: tokio::time::Instant,
    enforced: bool,
}

impl CallDeadline {
    /// A deadline at `at`, for layers below to respect.
    pub fn new(at: tokio::time::Instant) -> Self {
        Self {
            at,
            enforced: false,
        }
    }

    /// A deadline that the deadline layer enforces on the whole call, so
    /// the layers below need no timer of their own for it.
    pub(crate) fn enforced(at: tokio::time::Instant) -> Self {
        Self { at, enforced: true }
    }

    /// When the call must be over by.
    pub fn at(self) -> tokio::time::Instant {
        self.at
    }

    /// Whether the deadline layer enforces it.
    pub(crate) fn is_enforced(self) -> bool {
        self.enforced
    }

    /// The deadline of a request: in the client's record if it has one,
    /// else a `CallDeadline` of its own.
    pub(crate) fn of(extensions: &http::Extensions) -> Option<Self> {
        extensions
            .get::<CallState>()
            .and_then(|state| state.deadline)
            .or_else(|| extensions.get::<Self>().copied())
    }

    /// Records this deadline on a request: in the client's record if it
    /// has one (no allocation), else as an extension of its own.
    pub(crate) fn set(self, extensions: &mut http::Extensions) {
        match extensions.get_mut::<CallState>() {
            Some(state) => state.deadline = Some(self),
            None => {
                extensions.insert(self);
            }
        }
    }

    /// The time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.at
            .saturating_duration_since(tokio::time::Instant::now())
    }
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

/// Per-call choices of the caller, set on a `tonic::Request`'s extensions
/// (see [`CallOptions::apply`]); they win over every other source.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallOptions {
    /// This call's timeout.
    pub timeout: Option<Duration>,
    /// Retry a method whose contract declares no idempotency, on the
    /// retry policy's codes. Only for callers who know better than the
    /// contract (a request with its own idempotency key, say).
    pub retry_side_effects: bool,
    /// Turn retries and hedging off for this call.
    pub no_retry: bool,
}

impl CallOptions {
    /// Options that only set a timeout.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Self::default()
        }
    }

    /// Puts these options on `request`.
    pub fn apply<T>(self, request: &mut tonic::Request<T>) {
        request.extensions_mut().insert(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn code_sets() {
        const SET: CodeSet = CodeSet::of(&[Code::Unavailable, Code::Ok, Code::Unauthenticated]);
        assert!(SET.contains(Code::Unavailable));
        assert!(SET.contains(Code::Ok));
        assert!(SET.contains(Code::Unauthenticated));
        assert!(!SET.contains(Code::Internal));
        assert!(CodeSet::EMPTY.is_empty());
        assert_eq!(format!("{:?}", CodeSet::of(&[Code::Aborted])), "{Aborted}");
    }
}
