//! Finding a connection that went silent while calls wait on it.
//!
//! A peer that stops answering without closing the connection (a hung
//! process, a partition, a middlebox that dropped its state) leaves every
//! call on it waiting out its deadline, and hyper's keepalive pings notice
//! only after their interval (60s by default). So each connection has a
//! watchdog task, asleep while no call waits for its response headers.
//! While some do, it looks every [`TICK`]: when nothing at all has been
//! read on the connection for a third of the time from the last read to
//! the most urgent waiting call's deadline ([`MIN_SILENCE`] at least,
//! [`MAX_SILENCE`] at most), it makes a probe connect to the same
//! endpoint, bounded by that same third (and by the connect timeout), so
//! that the last third is left for the call to be retried elsewhere:
//!
//! - the probe fails (the endpoint accepts nothing, or accepts and never
//!   sends its SETTINGS): the endpoint is gone, so the silent connection
//!   is shut down at once (through a duplicate of its socket: its reads
//!   end, and hyper fails its calls). Its waiting calls fail with `UNAVAILABLE` rather
//!   than `DEADLINE_EXCEEDED`, which the retry layer can send elsewhere
//!   with the time they have left, and the next call dials again.
//! - the probe succeeds: the server is alive and only slow; the probe is
//!   closed, and the connection is not suspected again until it has been
//!   silent that long once more.
//!
//! Why a connect and not an HTTP/2 PING: hyper offers no PING but its
//! keepalive, whose interval is fixed per connection; and a ping sent
//! while a server is quietly busy is what grpc-go servers count as abuse
//! (`ENHANCE_YOUR_CALM`, "too many pings"). A connect costs the server
//! nothing it would count. What it cannot tell is a dead connection to a
//! live server (a middlebox that dropped it): that is left to the
//! keepalive.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// How often the watchdog looks while calls wait.
pub(super) const TICK: Duration = Duration::from_millis(25);

/// The least silence that makes a connection suspect.
pub(super) const MIN_SILENCE: Duration = Duration::from_millis(50);

/// The most: calls with no deadline, or a long one, wait this long in
/// silence before the endpoint is probed.
pub(super) const MAX_SILENCE: Duration = Duration::from_secs(10);

/// What a connection's calls and reads tell its watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// How many reads from the server brought bytes: the watchdog sees
    /// silence as a count that does not move (a clock read per read would
    /// cost every call).
    reads: AtomicU64,
    /// Calls waiting for their response headers.
    waiting: AtomicUsize,
    /// The earliest deadline of a call that waited (nanoseconds after
    /// `epoch`), since the watchdog last probed or no call waited.
    earliest_deadline: AtomicU64,
    /// Wakes the watchdog when the first call starts waiting.
    wake: Notify,
}

/// What the watchdog last saw of the reads, and when they last moved.
#[derive(Debug)]
pub(super) struct Seen {
    reads: u64,
    at: Instant,
}

// === impl Activity ===

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            reads: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            earliest_deadline: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        }
    }

    /// The reader's count of reads that brought bytes, now `count`.
    #[inline]
    pub(super) fn read(&self, count: u64) {
        self.reads.store(count, Ordering::Relaxed);
    }

    /// What the watchdog starts from: no read seen yet, as of now.
    pub(super) fn seen(&self) -> Seen {
        Seen {
            reads: self.reads.load(Ordering::Relaxed),
            at: Instant::now(),
        }
    }

    /// A call starts waiting for its response headers, due by `deadline`
    /// (`None`: it has none). It stops waiting when the guard drops.
    pub(super) fn waiting(self: &Arc<Self>, deadline: Option<Instant>) -> Waiting {
        if let Some(deadline) = deadline {
            self.earliest_deadline
                .fetch_min(self.nanos(deadline), Ordering::Relaxed);
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            self.wake.notify_one();
        }
        Waiting(self.clone())
    }

    /// How long the connection may be silent, with calls waiting, before
    /// the endpoint is probed: a third of the time from the last read to
    /// the earliest deadline, within bounds.
    fn patience(&self, last_read: Instant) -> Duration {
        let deadline = self.earliest_deadline.load(Ordering::Relaxed);
        if deadline == u64::MAX {
            return MAX_SILENCE;
        }
        let last = self.nanos(last_read);
        (Duration::from_nanos(deadline.saturating_sub(last)) / 3).clamp(MIN_SILENCE, MAX_SILENCE)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Waits until calls wait and the connection has been silent past
    /// its patience; the patience then. Silence is counted from the last
    /// read the watchdog saw (to within a [`TICK`]), or from when a call
    /// started waiting on an idle connection.
    pub(super) async fn suspect(&self, seen: &mut Seen) -> Duration {
        loop {
            // Asleep while no call waits (a permit stored by `waiting`
            // is not lost between the check and the wait).
            let mut idle = false;
            while self.waiting.load(Ordering::Relaxed) == 0 {
                self.wake.notified().await;
                idle = true;
            }
            if idle {
                *seen = self.seen();
            }
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            let reads = self.reads.load(Ordering::Relaxed);
            if reads != seen.reads {
                *seen = Seen { reads, at: now };
            }
            let patience = self.patience(seen.at);
            if self.waiting.load(Ordering::Relaxed) > 0
                && now.saturating_duration_since(seen.at) >= patience
            {
                return patience;
            }
        }
    }

    /// The probe found the server alive at `now`: the connection is not
    /// suspect again until it has been silent its whole patience once
    /// more.
    pub(super) fn cleared(&self, seen: &mut Seen, now: Instant) {
        seen.at = now;
        self.earliest_deadline.store(u64::MAX, Ordering::Relaxed);
    }
}

/// A call waiting for its response headers; see [`Activity::waiting`].
#[derive(Debug)]
pub(super) struct Waiting(Arc<Activity>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            // No call waits: the next one sets the pace afresh.
            self.0.earliest_deadline.store(u64::MAX, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_with_a_waiting_call_is_suspected_a_third_of_the_way_to_its_deadline()
     {
        let activity = Arc::new(Activity::new());
        let mut seen = activity.seen();
        let started = Instant::now();
        let call = activity.waiting(Some(started + Duration::from_millis(600)));
        let patience = activity.suspect(&mut seen).await;
        assert_eq!(patience, Duration::from_millis(200));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited <= Duration::from_millis(200) + TICK,
            "{waited:?}"
        );
        drop(call);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_keep_it_from_suspicion_and_no_waiting_call_means_none() {
        let activity = Arc::new(Activity::new());
        let mut seen = activity.seen();
        // No call waits: a long silence is no reason.
        let idle = tokio::time::timeout(Duration::from_secs(60), activity.suspect(&mut seen)).await;
        assert!(idle.is_err());

        let call = activity.waiting(Some(Instant::now() + Duration::from_millis(400)));
        let reader = {
            let activity = activity.clone();
            tokio::spawn(async move {
                for count in 1.. {
                    activity.read(count);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let busy = tokio::time::timeout(Duration::from_secs(5), activity.suspect(&mut seen)).await;
        assert!(busy.is_err(), "bytes keep coming: not silent");
        reader.abort();
        drop(call);
    }

    #[tokio::test(start_paused = true)]
    async fn patience_is_bounded_and_resets_once_no_call_waits() {
        let activity = Arc::new(Activity::new());
        let now = Instant::now();
        let long = activity.waiting(None);
        assert_eq!(activity.patience(now), MAX_SILENCE);
        let short = activity.waiting(Some(now + Duration::from_millis(10)));
        assert_eq!(activity.patience(now), MIN_SILENCE);
        drop(short);
        assert_eq!(activity.patience(now), MIN_SILENCE, "the shortest since");
        drop(long);
        assert_eq!(activity.patience(now), MAX_SILENCE, "reset: no call waits");
    }
}
