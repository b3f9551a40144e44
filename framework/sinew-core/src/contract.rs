//! The method table: what a contract says about each of its RPCs.
//!
//! `sinew-build` generates, for every service in a contract, a type that
//! implements [`Contract`]. Its [`MethodInfo`] entries are exact copies of
//! what the `.proto` declares: the full path, the streaming kind, the
//! standard `idempotency_level` option, and sinew's own `(sinew.method)`
//! option. The resilient client reads its retry and deadline rules from
//! here, so nothing in this table is guessed.
//!
//! Everything is `const`, so a table costs nothing at run time.

use std::time::Duration;

use tonic::Code;

/// A service described by a contract. Implemented by generated code.
pub trait Contract {
    /// Fully qualified service name, such as `greeter.v1.Greeter`.
    const SERVICE: &'static str;
    /// Every RPC of the service, in declaration order.
    const METHODS: &'static [MethodInfo];

    /// The method whose full path (`/pkg.Service/Method`) is `path`.
    fn method(path: &str) -> Option<&'static MethodInfo> {
        Self::METHODS.iter().find(|m| m.path == path)
    }

    /// The method that undoes the one at `path`, as its
    /// `(sinew.method).compensated_by` declares: `None` when `path` is not
    /// a method of this service or declares no compensation.
    ///
    /// sinew-build has checked the pair: the compensation is in this
    /// service, unary, `IDEMPOTENT`, and takes the action's request or
    /// response type as its request.
    fn compensation_of(path: &str) -> Option<&'static MethodInfo> {
        Self::method(path)?
            .policy
            .compensated_by
            .and_then(|compensation| Self::method(compensation.path))
    }
}

/// One RPC of a contract.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodInfo {
    /// The method name as written in the contract, such as `SayHello`.
    pub name: &'static str,
    /// The HTTP/2 path, such as `/greeter.v1.Greeter/SayHello`.
    pub path: &'static str,
    /// Whether requests, responses or both are streams.
    pub streaming: Streaming,
    /// The `idempotency_level` the contract declares.
    pub idempotency: Idempotency,
    /// sinew's per-method defaults from `(sinew.method)`.
    pub policy: MethodPolicy,
}

/// Which sides of an RPC are streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Streaming {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    Bidirectional,
}

impl Streaming {
    /// The kind for the given request and response streaming flags.
    pub const fn from_flags(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidirectional,
        }
    }
}

/// The standard `google.protobuf.MethodOptions.idempotency_level`.
///
/// This decides what a client may retry: a method that declares no level is
/// retried only when the request provably never reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// `IDEMPOTENCY_UNKNOWN`, or no option at all.
    Unknown,
    /// `NO_SIDE_EFFECTS`: a read. Safe to retry and to hedge.
    NoSideEffects,
    /// `IDEMPOTENT`: repeating it has the effect of doing it once. Safe to
    /// retry, not to hedge.
    Idempotent,
}

impl Idempotency {
    /// Whether a call that may have reached the server can be sent again.
    #[inline]
    pub const fn is_retry_safe(self) -> bool {
        matches!(self, Self::NoSideEffects | Self::Idempotent)
    }
}

/// sinew's per-method defaults, from the contract's `(sinew.method)` option.
///
/// A `None` means the contract says nothing and the client's own default
/// applies.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MethodPolicy {
    /// Default deadline of a call.
    pub timeout: Option<Duration>,
    /// Retry rules.
    pub retry: Option<RetryPolicy>,
    /// Hedging rules; only ever set on `NO_SIDE_EFFECTS` methods.
    pub hedging: Option<HedgingPolicy>,
    /// The method that undoes this one, from `compensated_by`: a saga step
    /// built from this method compensates with it. Always a unary,
    /// `IDEMPOTENT` method of the same service whose request type is this
    /// method's request or response type; see [`Contract::compensation_of`].
    pub compensated_by: Option<Compensation>,
    /// Who may call the method: its `auth`, or its service's default.
    pub auth: Access,
}

/// Who may call a method, as the contract declares it: the method's
/// `(sinew.method).auth`, or else its service's `(sinew.service).auth`.
/// sinew-build checked it (a method is public or scoped, not both; scopes
/// are well-formed and listed once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// The contract says nothing: the server's setting decides.
    #[default]
    Undeclared,
    /// Anyone may call it, without credentials.
    Public,
    /// An authenticated caller holding every one of these scopes; with no
    /// scope listed, any authenticated caller.
    Scopes(&'static [&'static str]),
}

/// The method that undoes another, as `(sinew.method).compensated_by`
/// names it, and what its request is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compensation {
    /// The compensating method's full path, such as
    /// `/shop.payments.v1.Payments/Refund`.
    pub path: &'static str,
    /// Whether its request is the action's request or the action's
    /// response (the contract declares the type; sinew-build checked it is
    /// one of the two).
    pub input: CompensationInput,
}

/// What a compensation takes as its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompensationInput {
    /// The action's request, sent again to the compensation (when the
    /// action's request and response are of one type, this one).
    Request,
    /// The action's response: what the action made (a charge, a
    /// reservation) is what the compensation undoes.
    Response,
}

impl MethodPolicy {
    /// A policy that sets nothing.
    pub const NONE: Self = Self {
        timeout: None,
        retry: None,
        hedging: None,
        compensated_by: None,
        auth: Access::Undeclared,
    };
}

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
    #[inline]
    pub const fn contains(self, code: Code) -> bool {
        self.0 & (1 << (code as u32)) != 0
    }

    /// The set with `code` added.
    #[inline]
    pub const fn with(self, code: Code) -> Self {
        Self(self.0 | (1 << (code as u32)))
    }

    /// Whether the set is empty.
    #[inline]
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

/// Retry rules for one method, as in a gRPC service config `retryPolicy`
/// (gRFC A6). The contract's `(sinew.method)` option, a service config and
/// the client's defaults all give one of these; the retry layer enforces it.
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

/// Hedging rules for one method, as in a gRPC service config
/// `hedgingPolicy` (only ever for `NO_SIDE_EFFECTS` methods).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgingPolicy {
    /// Copies in all, the first included; capped like retries.
    pub max_attempts: u32,
    /// Wait before each further copy.
    pub hedging_delay: Duration,
    /// Codes that do not end the hedged call: another copy may still win.
    pub non_fatal_codes: CodeSet,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A table as sinew-build writes it: `Charge` is undone by `Refund`.
    struct Payments;

    impl Contract for Payments {
        const SERVICE: &'static str = "t.v1.Payments";
        const METHODS: &'static [MethodInfo] = &[
            MethodInfo {
                name: "Charge",
                path: "/t.v1.Payments/Charge",
                streaming: Streaming::Unary,
                idempotency: Idempotency::Unknown,
                policy: MethodPolicy {
                    compensated_by: Some(Compensation {
                        path: "/t.v1.Payments/Refund",
                        input: CompensationInput::Response,
                    }),
                    ..MethodPolicy::NONE
                },
            },
            MethodInfo {
                name: "Refund",
                path: "/t.v1.Payments/Refund",
                streaming: Streaming::Unary,
                idempotency: Idempotency::Idempotent,
                policy: MethodPolicy::NONE,
            },
        ];
    }

    #[test]
    fn a_compensation_is_found_by_the_actions_path() {
        let refund = Payments::compensation_of("/t.v1.Payments/Charge").expect("Charge is undone");
        assert_eq!(refund.name, "Refund");
        assert_eq!(refund.idempotency, Idempotency::Idempotent);
        assert!(
            Payments::compensation_of("/t.v1.Payments/Refund").is_none(),
            "Refund declares no compensation"
        );
        assert!(
            Payments::compensation_of("/t.v1.Payments/Nope").is_none(),
            "not a method"
        );
        assert_eq!(MethodPolicy::default(), MethodPolicy::NONE);
    }
}
