use std::time::Duration;

/// When a [`Breaker`](super::Breaker) trips and how it recovers.
///
/// Build one from the defaults and change what you need:
/// `BreakerConfig { consecutive_failures: 3, ..BreakerConfig::default() }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that trip the breaker. Default 5; 0 turns this
    /// trigger off.
    pub consecutive_failures: u32,
    /// Share of failures in the window, from 0.0 to 1.0, that trips the
    /// breaker once the window holds at least `min_requests` calls. The
    /// breaker trips when the share reaches it (`>=`), and never on a
    /// window without failures. Default 0.5; above 1.0 turns this trigger
    /// off.
    pub failure_rate: f64,
    /// The rolling window the failure rate is measured over. Default 10s.
    /// It is kept as ten buckets of a tenth of the window each, so an
    /// outcome leaves the window between nine and ten tenths of it after it
    /// was recorded.
    pub window: Duration,
    /// Calls the window must hold before the failure rate may trip the
    /// breaker, so that two failures out of three calls at a quiet hour do
    /// not. Default 20.
    pub min_requests: u32,
    /// How long the breaker stays open before it lets probes through.
    /// Default 5s.
    pub recovery_timeout: Duration,
    /// Calls a half-open breaker lets through at once. Default 1; 0 is
    /// treated as 1, as a breaker that never probes would never close.
    pub half_open_probes: u32,
    /// Probe successes in a row that close a half-open breaker. Default 2;
    /// 0 is treated as 1.
    pub close_after: u32,
}

// === impl BreakerConfig ===

impl BreakerConfig {
    /// A breaker that never trips: both triggers off. Calls pass through
    /// at the cost of counting their outcomes.
    pub fn disabled() -> Self {
        Self {
            consecutive_failures: 0,
            failure_rate: f64::INFINITY,
            ..Self::default()
        }
    }

    /// Whether a breaker with this configuration can ever trip.
    pub(crate) fn trips(&self) -> bool {
        self.consecutive_failures > 0 || self.failure_rate <= 1.0
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_requests: 20,
            recovery_timeout: Duration::from_secs(5),
            half_open_probes: 1,
            close_after: 2,
        }
    }
}
