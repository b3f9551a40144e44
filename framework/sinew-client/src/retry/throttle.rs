use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// Fixed-point scale of the token count: thousandths, the precision gRFC A6
/// gives `tokenRatio`.
const SCALE: u64 = 1000;

/// gRFC A6 retry throttling: a token bucket per target that turns retries
/// and hedges off while the target keeps failing.
///
/// The bucket starts full, with `max_tokens`. Every failed attempt whose
/// status is retryable (for hedging: non-fatal), and every transport
/// failure, takes one token; every successful call gives back
/// `token_ratio` tokens, up to `max_tokens`. A retry or a further hedged
/// copy is sent only while the count is above `max_tokens / 2`: during an
/// outage calls fall back to a single attempt each, so retries do not
/// multiply the load on a target that is already failing.
///
/// A clone shares the bucket: give every layer (retry and hedge) and every
/// clone of one client the same `RetryThrottle`, and keep one per target.
/// The count is an atomic fixed-point number (thousandths), so updates are
/// lock-free.
#[derive(Debug, Clone)]
pub struct RetryThrottle {
    bucket: Arc<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens, in thousandths.
    tokens: AtomicU64,
    /// `max_tokens`, in thousandths.
    max: u64,
    /// `token_ratio`, in thousandths.
    ratio: u64,
}

// === impl RetryThrottle ===

impl RetryThrottle {
    /// gRFC A6's usual `maxTokens`.
    pub const DEFAULT_MAX_TOKENS: u32 = 10;
    /// gRFC A6's usual `tokenRatio`.
    pub const DEFAULT_TOKEN_RATIO: f64 = 0.1;

    /// A full bucket of `max_tokens` (at least 1) that refills by
    /// `token_ratio` per success. `token_ratio` is kept to three decimals,
    /// as in gRFC A6; a negative or NaN ratio never refills, and one above
    /// `max_tokens` refills at once.
    pub fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = u64::from(max_tokens.max(1)) * SCALE;
        // `as` saturates, and turns NaN into 0.
        let ratio = ((token_ratio * SCALE as f64).round() as u64).min(max);
        Self {
            bucket: Arc::new(Bucket {
                tokens: AtomicU64::new(max),
                max,
                ratio,
            }),
        }
    }

    /// The tokens left, to three decimals.
    pub fn tokens(&self) -> f64 {
        self.bucket.tokens.load(Ordering::Relaxed) as f64 / SCALE as f64
    }

    /// Whether a retry or a hedged copy may be sent now: the count is
    /// above half of `max_tokens`.
    pub fn allows_retry(&self) -> bool {
        self.bucket.tokens.load(Ordering::Relaxed) * 2 > self.bucket.max
    }

    /// A failed attempt: takes one token, down to zero.
    pub(crate) fn on_failure(&self) {
        // Only the counter itself is shared, so relaxed ordering is enough;
        // `fetch_update` retries on a race, so no update is lost.
        let _ = self
            .bucket
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some(tokens.saturating_sub(SCALE))
            });
    }

    /// A successful call: gives back `token_ratio` tokens, up to the max.
    pub(crate) fn on_success(&self) {
        let (ratio, max) = (self.bucket.ratio, self.bucket.max);
        // The common case, a full bucket, only reads: every call of every
        // task succeeds here, and a write would bounce the counter's cache
        // line between cores on each of them.
        if self.bucket.tokens.load(Ordering::Relaxed) >= max {
            return;
        }
        let _ = self
            .bucket
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some((tokens + ratio).min(max))
            });
    }
}

impl Default for RetryThrottle {
    /// `max_tokens` 10, `token_ratio` 0.1.
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_TOKENS, Self::DEFAULT_TOKEN_RATIO)
    }
}

#[cfg(test)]
mod tests {
    use super::RetryThrottle;

    #[test]
    fn starts_full_and_throttles_at_half() {
        let throttle = RetryThrottle::new(10, 0.1);
        assert_eq!(throttle.tokens(), 10.0);
        for _ in 0..4 {
            throttle.on_failure();
        }
        // 6 > 5
        assert!(throttle.allows_retry());
        throttle.on_failure();
        // 5 is not above 5
        assert_eq!(throttle.tokens(), 5.0);
        assert!(!throttle.allows_retry());
    }

    #[test]
    fn floors_at_zero_and_refills_by_the_ratio_up_to_the_max() {
        let throttle = RetryThrottle::new(4, 0.25);
        for _ in 0..10 {
            throttle.on_failure();
        }
        assert_eq!(throttle.tokens(), 0.0);
        for _ in 0..9 {
            throttle.on_success();
        }
        // 2.25 > 2
        assert_eq!(throttle.tokens(), 2.25);
        assert!(throttle.allows_retry());
        for _ in 0..100 {
            throttle.on_success();
        }
        assert_eq!(throttle.tokens(), 4.0);
    }

    #[test]
    fn clones_share_the_bucket() {
        let a = RetryThrottle::default();
        let b = a.clone();
        b.on_failure();
        assert_eq!(a.tokens(), 9.0);
    }

    #[test]
    fn odd_ratios_are_tamed() {
        let never = RetryThrottle::new(2, f64::NAN);
        never.on_failure();
        never.on_success();
        assert_eq!(never.tokens(), 1.0);
        let at_once = RetryThrottle::new(2, 1e9);
        at_once.on_failure();
        at_once.on_success();
        assert_eq!(at_once.tokens(), 2.0);
        assert_eq!(RetryThrottle::new(0, 0.1).tokens(), 1.0);
    }
}
