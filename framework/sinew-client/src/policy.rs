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

use std::time::Duration;

pub use sinew_core::contract::{CodeSet, HedgingPolicy, MAX_ATTEMPTS_CAP, RetryPolicy};
use sinew_core::contract::{Idempotency, Streaming};

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

    /// The hedging this call gets, if any: its hedging rules, when the
    /// method has no side effects (whatever a caller opted in to) and the
    /// request is one message, which every copy can be sent.
    ///
    /// The one place that chooses between hedging and retrying: gRFC A6
    /// gives a call one or the other. A call this hedges is the hedge
    /// layer's alone, and the retry layer passes it through, so that
    /// copies are never multiplied by retries; any other call is the retry
    /// layer's, and the hedge layer passes it through.
    pub fn hedged(&self) -> Option<HedgingPolicy> {
        self.hedging
            .filter(|_| self.idempotency == Idempotency::NoSideEffects && self.single_request())
    }
}

/// What the [`Client`](crate::Client) records of each call in the
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
