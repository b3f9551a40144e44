//! When a failed export is tried again, and after how long.
//!
//! The OTLP specification asks exporters to retry transient failures with
//! exponential backoff and jitter, and names the transient gRPC codes.
//! Retries never outlast the export timeout: the caller stops when the
//! next delay would take it past its deadline.

use std::{collections::hash_map::RandomState, hash::BuildHasher as _, time::Duration};

use tonic::Code;

/// Retries after the first attempt, as `opentelemetry-otlp` does by
/// default.
const MAX_RETRIES: u32 = 3;
/// The delay before the first retry.
const INITIAL_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two attempts, before jitter.
const MAX_DELAY: Duration = Duration::from_millis(1600);

/// Whether an export that failed with `code` may succeed if sent again:
/// the codes the OTLP specification lists as retryable.
///
/// `RESOURCE_EXHAUSTED` is retryable there only with a `RetryInfo` detail
/// from the server, which this exporter does not read; so it is not.
pub(crate) fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The delays between the attempts of one export: 100ms, doubling up to
/// 1.6s, each plus up to half of itself at random so that exporters that
/// failed together do not retry together; three in all.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    retries: u32,
}

/// The rule of those delays, sinew-core's one backoff.
const RULE: sinew_core::backoff::Backoff =
    sinew_core::backoff::Backoff::new(INITIAL_DELAY, MAX_DELAY, 2.0).jitter(1.0, 1.5);

// === impl Backoff ===

impl Backoff {
    /// The delays of a new export.
    pub(crate) fn new() -> Self {
        Self { retries: 0 }
    }

    /// The delay before the next retry, or `None` when none is left.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.retries == MAX_RETRIES {
            return None;
        }
        let delay = RULE.wait(self.retries, draw());
        self.retries += 1;
        Some(delay)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A random number in `[0, 1)`. The standard library's hasher keys are
/// random per `RandomState`, which is all the randomness this needs.
fn draw() -> f64 {
    let random = RandomState::new().hash_one(0u8);
    // The top 53 bits, as the fraction of a double.
    (random >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_retries_doubling_with_bounded_jitter() {
        let mut backoff = Backoff::new();
        for base in [100, 200, 400] {
            let base = Duration::from_millis(base);
            let delay = backoff.next_delay().expect("a retry is left");
            assert!(
                delay >= base && delay <= base + base / 2,
                "{delay:?} for {base:?}"
            );
        }
        assert_eq!(backoff.next_delay(), None);
        assert_eq!(backoff.next_delay(), None);
    }

    #[test]
    fn delays_stop_growing_at_the_cap() {
        // 100ms doubling reaches the cap at the fifth delay: past three
        // retries, as a longer export timeout would allow.
        for n in [4, 5, 10] {
            for draw in [0.0, 0.5, 0.999] {
                let delay = RULE.wait(n, draw);
                assert!(
                    delay >= MAX_DELAY && delay <= MAX_DELAY + MAX_DELAY / 2,
                    "{delay:?}"
                );
            }
        }
    }

    #[test]
    fn only_transient_codes_are_retried() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Aborted] {
            assert!(is_retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }
}
