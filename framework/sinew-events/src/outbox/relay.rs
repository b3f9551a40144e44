//! The relay: the task that publishes the outbox's pending rows.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::join_all;
use opentelemetry::KeyValue;
use sinew_core::{Rng, backoff::Backoff};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Outbox, OutboxDatabase, backend::PendingRow};
use crate::metrics::metrics;
use crate::{Broker, Envelope, Error};

/// The settings of a [`Relay`]. Every wait and batch is bounded; the
/// defaults suit a service publishing up to some thousands of events a
/// second.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows read and published per batch, which is also the bound on
    /// publishes in flight. Default 256.
    pub batch_size: u32,
    /// How long the relay waits, when idle, before looking for rows that no
    /// wake-up announced. Default 1s.
    pub poll_interval: Duration,
    /// How long one publish may wait for the broker's acknowledgement
    /// before it counts as failed. Default 10s.
    pub publish_timeout: Duration,
    /// How long a lease lasts without renewal; the holder renews it every
    /// third of it, and a standby takes over at most about `lease_ttl * 4/3`
    /// after the holder died. Default 10s.
    pub lease_ttl: Duration,
    /// The first wait after a failure (of the broker or the database); the
    /// wait doubles with each failure in a row, with jitter. Default 100ms.
    pub backoff_initial: Duration,
    /// The longest wait after failures. Default 10s.
    pub backoff_max: Duration,
    /// How long published rows are kept before they are deleted: counted
    /// from when they were published on SQLite, from when they were written
    /// on PostgreSQL (which keeps no publication time). Default 7 days.
    pub retention: Duration,
    /// How often the relay deletes published rows older than `retention`.
    /// Default 1 minute.
    pub purge_interval: Duration,
    /// Rows deleted per statement when purging; a purge runs statements
    /// until one deletes fewer. Default 1000.
    pub purge_chunk: u32,
    /// How often the relay records the `sinew.events.outbox.pending` and
    /// `sinew.events.outbox.lag` gauges (each time a count of pending rows).
    /// Default 5s.
    pub stats_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            publish_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            purge_interval: Duration::from_secs(60),
            purge_chunk: 1000,
            stats_interval: Duration::from_secs(5),
        }
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("relay.poll_interval", self.poll_interval),
            ("relay.publish_timeout", self.publish_timeout),
            ("relay.lease_ttl", self.lease_ttl),
            ("relay.backoff_max", self.backoff_max),
            ("relay.purge_interval", self.purge_interval),
            ("relay.stats_interval", self.stats_interval),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(Error::config(key, "must be more than zero"));
            }
        }
        if self.batch_size == 0 {
            return Err(Error::config("relay.batch_size", "must be more than zero"));
        }
        if self.purge_chunk == 0 {
            return Err(Error::config("relay.purge_chunk", "must be more than zero"));
        }
        if self.lease_ttl < Duration::from_millis(30) {
            return Err(Error::config("relay.lease_ttl", "must be at least 30ms"));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(Error::config(
                "relay.backoff_initial",
                "must not be more than relay.backoff_max",
            ));
        }
        Ok(())
    }
}

/// Publishes an [`Outbox`]'s pending rows to a [`Broker`]; see the
/// [module docs](super) for what it guarantees.
///
/// Start it with [`spawn`](Self::spawn); run one per process, as many
/// processes as you like: they elect one publisher through a lease.
pub struct Relay<DB: OutboxDatabase, B> {
    outbox: Outbox<DB>,
    broker: B,
    config: RelayConfig,
}

impl<DB: OutboxDatabase, B> std::fmt::Debug for Relay<DB, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The running relay. Dropping it stops the relay as
/// [`shutdown`](Self::shutdown) does, without waiting.
#[derive(Debug)]
pub struct RelayHandle {
    holder: String,
    leader: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

// === impl Relay ===

impl<DB: OutboxDatabase, B: Broker> Relay<DB, B> {
    /// A relay from `outbox` to `broker`; fails if a setting is invalid.
    pub fn new(outbox: Outbox<DB>, broker: B, config: RelayConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            outbox,
            broker,
            config,
        })
    }

    /// Starts the relay on the current tokio runtime.
    pub fn spawn(self) -> RelayHandle {
        let holder = uuid::Uuid::now_v7().simple().to_string();
        let leader = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max, 2.0)
            .jitter(0.5, 1.0);
        let lease = Lease {
            ttl: self.config.lease_ttl,
            valid_until: None,
            next_attempt: Instant::now(),
            leader: leader.clone(),
        };
        let task = Task {
            wake: self.outbox.subscribe(),
            outbox: self.outbox,
            broker: self.broker,
            config: self.config,
            holder: holder.clone(),
            lease,
            cancel: cancel.clone(),
            backoff,
            rng: Rng::from_entropy(),
            failing: false,
            backoffs: 0,
        };
        RelayHandle {
            holder,
            leader,
            cancel,
            task: Some(tokio::spawn(task.run())),
        }
    }
}

// === impl RelayHandle ===

impl RelayHandle {
    /// The relay's id in the lease table, random per relay.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the relay holds the lease (and so publishes) now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Stops the relay: it finishes the wave of publishes in flight (each
    /// bounded by [`RelayConfig::publish_timeout`]), marks what was
    /// acknowledged, gives the lease up so that a standby takes over at
    /// once, and returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the relay at once, as a crash would: nothing is marked and the
    /// lease is kept until it expires. Rows it published but did not mark
    /// are published again by the next holder (and deduplicated by the
    /// broker).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// === impl Lease ===

/// The relay's view of the lease.
struct Lease {
    ttl: Duration,
    /// Until when this relay surely holds the lease: the time it asked,
    /// plus the time to live.
    valid_until: Option<Instant>,
    /// When to take or renew it next.
    next_attempt: Instant,
    leader: Arc<AtomicBool>,
}

impl Lease {
    /// Whether the relay holds the lease, with a margin of a tenth of its
    /// time to live for the work about to be done.
    fn held(&self) -> bool {
        let held = self
            .valid_until
            .is_some_and(|until| Instant::now() + self.ttl / 10 < until);
        self.leader.store(held, Ordering::Relaxed);
        held
    }

    fn due(&self) -> bool {
        Instant::now() >= self.next_attempt
    }

    fn taken(&mut self, asked_at: Instant) {
        self.valid_until = Some(asked_at + self.ttl);
        self.next_attempt = asked_at + self.ttl / 3;
    }

    fn refused(&mut self) {
        self.lost();
        self.next_attempt = Instant::now() + self.ttl / 3;
    }

    fn failed(&mut self) {
        // Keep what is still surely held; try again soon.
        self.next_attempt = Instant::now() + self.ttl / 10;
    }

    fn lost(&mut self) {
        self.valid_until = None;
        self.leader.store(false, Ordering::Relaxed);
    }
}

// === impl Task ===

struct Task<DB: OutboxDatabase, B> {
    outbox: Outbox<DB>,
    broker: B,
    config: RelayConfig,
    holder: String,
    lease: Lease,
    wake: tokio::sync::watch::Receiver<u64>,
    cancel: CancellationToken,
    backoff: Backoff,
    rng: Rng,
    /// Whether the last round failed (the outage was logged).
    failing: bool,
    /// Backoffs in a row, without progress between them.
    backoffs: u32,
}

/// What one batch did.
struct Round {
    fetched: usize,
    acked: usize,
    failure: Option<Error>,
}

impl<DB: OutboxDatabase, B: Broker> Task<DB, B> {
    async fn run(mut self) {
        // Aborted when this task ends, or is dropped (aborted) itself.
        let _listener = DB::listener(&self.outbox.pool, self.outbox.wake.clone())
            .map(|listen| AbortOnDrop(tokio::spawn(listen)));
        let mut next_purge = Instant::now();
        let mut next_stats = Instant::now();
        while !self.cancel.is_cancelled() {
            if !self.lease().await {
                // A standby: try again when the lease may have expired.
                self.sleep_until(self.lease.next_attempt).await;
                continue;
            }
            if Instant::now() >= next_purge {
                self.purge().await;
                next_purge = Instant::now() + self.config.purge_interval;
            }
            if Instant::now() >= next_stats {
                self.record_stats().await;
                next_stats = Instant::now() + self.config.stats_interval;
            }
            // Seen before reading: a commit after this wakes the next wait.
            self.wake.borrow_and_update();
            match self.round().await {
                Ok(round) => {
                    if round.acked > 0 {
                        self.backoffs = 0;
                    }
                    // A full batch with progress: more rows wait, go on.
                    let more = round.acked > 0 && round.fetched >= self.config.batch_size as usize;
                    match round.failure {
                        None => {
                            self.recovered();
                            if !more {
                                self.idle().await;
                            }
                        }
                        // Other aggregates progress: no wait for them; the
                        // failed one is tried again with the next batch.
                        Some(error) if more => self.note_failure(&error),
                        Some(error) => self.failed(&error).await,
                    }
                }
                Err(error) => self.failed(&error).await,
            }
        }
        if self.lease.valid_until.is_some() {
            if let Err(error) = DB::release_lease(&self.outbox.pool, &self.holder).await {
                debug!(%error, "outbox relay could not give its lease up");
            }
            self.lease.lost();
        }
        debug!("outbox relay stopped");
    }

    /// Takes or renews the lease when due; whether the relay holds it.
    async fn lease(&mut self) -> bool {
        if self.lease.due() {
            let asked_at = Instant::now();
            match DB::take_lease(&self.outbox.pool, &self.holder, self.config.lease_ttl).await {
                Ok(true) => {
                    if self.lease.valid_until.is_none() {
                        info!(holder = %self.holder, "outbox relay took the lease; publishing");
                    }
                    self.lease.taken(asked_at);
                }
                Ok(false) => {
                    if self.lease.valid_until.is_some() {
                        warn!(holder = %self.holder, "outbox relay lost its lease; standing by");
                    }
                    self.lease.refused();
                }
                Err(error) => {
                    debug!(%error, "outbox relay could not renew its lease");
                    self.lease.failed();
                }
            }
        }
        self.lease.held()
    }

    /// Reads one batch and publishes it in waves: the first pending row of
    /// each aggregate, then the second, and so on, each wave concurrently.
    async fn round(&mut self) -> Result<Round, Error> {
        let rows = DB::fetch_pending(&self.outbox.pool, i64::from(self.config.batch_size)).await?;
        let fetched = rows.len();
        let mut queues = queues(rows);
        let mut acked = Vec::new();
        let mut failure = None;
        let mut waves = 0;
        let publish_timeout = self.config.publish_timeout;
        while !self.cancel.is_cancelled() && self.lease().await {
            let wave: Vec<(usize, i64, Envelope)> = queues
                .iter_mut()
                .enumerate()
                .filter_map(|(i, queue)| queue.pop_front().map(|(pos, env)| (i, pos, env)))
                .collect();
            if wave.is_empty() {
                break;
            }
            waves += 1;
            let broker = &self.broker;
            let results = join_all(wave.iter().map(|(_, _, envelope)| async move {
                match tokio::time::timeout(publish_timeout, broker.publish(envelope)).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::Timeout(publish_timeout)),
                }
            }))
            .await;
            for ((queue, position, envelope), result) in wave.into_iter().zip(results) {
                match result {
                    Ok(_) => {
                        acked.push(position);
                        metrics()
                            .published
                            .add(1, &[KeyValue::new("event.type", envelope.r#type)]);
                    }
                    Err(error) => {
                        // The rest of this aggregate waits for this one.
                        queues[queue].clear();
                        failure.get_or_insert(error);
                    }
                }
            }
        }
        if !acked.is_empty() {
            let marked = DB::mark_published(&self.outbox.pool, &acked, &self.holder).await?;
            if marked < acked.len() as u64 {
                // Another relay holds the lease now (and publishes these
                // again, deduplicated by the broker) or marked them already.
                debug!(
                    acked = acked.len(),
                    marked, "outbox relay could not mark every published row"
                );
                if marked == 0 {
                    self.lease.lost();
                    self.lease.next_attempt = Instant::now();
                }
            }
        }
        debug!(
            fetched,
            published = acked.len(),
            waves,
            failed = failure.is_some(),
            "outbox relay batch"
        );
        Ok(Round {
            fetched,
            acked: acked.len(),
            failure,
        })
    }

    fn recovered(&mut self) {
        if self.failing {
            info!("outbox relay publishes again");
            self.failing = false;
        }
        self.backoffs = 0;
    }

    /// Logs a failure: a warning at the first of an outage, then at debug.
    fn note_failure(&mut self, error: &Error) {
        if self.failing {
            debug!(%error, "outbox relay failed again");
        } else {
            warn!(%error, "outbox relay failed; retrying with backoff until it recovers");
            self.failing = true;
        }
    }

    /// Logs a failure and waits, longer after each failed round in a row.
    async fn failed(&mut self, error: &Error) {
        self.note_failure(error);
        let wait = self.backoff.wait(self.backoffs, self.rng.next_f64());
        self.backoffs = self.backoffs.saturating_add(1);
        self.sleep_until(Instant::now() + wait).await;
    }

    /// Waits for a wake-up, the poll interval, the lease's renewal or
    /// shutdown, whichever comes first.
    async fn idle(&mut self) {
        let until = (Instant::now() + self.config.poll_interval).min(self.lease.next_attempt);
        tokio::select! {
            () = self.cancel.cancelled() => {}
            _ = self.wake.changed() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    async fn sleep_until(&self, until: Instant) {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    /// Deletes published rows past retention, a chunk at a time.
    async fn purge(&mut self) {
        let chunk = self.config.purge_chunk;
        let mut purged = 0;
        loop {
            match self.outbox.purge(self.config.retention, chunk).await {
                Ok(n) => {
                    purged += n;
                    if n < u64::from(chunk) || self.cancel.is_cancelled() || !self.lease.held() {
                        break;
                    }
                }
                Err(error) => {
                    debug!(%error, "outbox relay could not purge published rows");
                    break;
                }
            }
        }
        if purged > 0 {
            debug!(purged, "outbox relay purged published rows");
        }
    }

    async fn record_stats(&mut self) {
        match self.outbox.pending().await {
            Ok(pending) => {
                metrics().outbox_pending.record(pending.count, &[]);
                metrics()
                    .outbox_lag
                    .record(pending.oldest.map_or(0.0, |d| d.as_secs_f64()), &[]);
            }
            Err(error) => debug!(%error, "outbox relay could not count pending rows"),
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The rows of a batch as one queue per aggregate, each in position order,
/// the aggregates in order of their first row. A row whose envelope does
/// not decode holds back the rest of its aggregate (it cannot be published
/// and must not be skipped).
fn queues(rows: Vec<PendingRow>) -> Vec<VecDeque<(i64, Envelope)>> {
    let mut index: HashMap<String, Option<usize>> = HashMap::new();
    let mut queues: Vec<VecDeque<(i64, Envelope)>> = Vec::new();
    for row in rows {
        let slot = match index.get(&row.aggregate_id) {
            Some(Some(slot)) => Some(*slot),
            Some(None) => continue,
            None => None,
        };
        match Envelope::from_stored(&row.envelope) {
            Ok(envelope) => {
                let slot = slot.unwrap_or_else(|| {
                    queues.push(VecDeque::new());
                    index.insert(row.aggregate_id, Some(queues.len() - 1));
                    queues.len() - 1
                });
                queues[slot].push_back((row.position, envelope));
            }
            Err(error) => {
                error!(
                    position = row.position,
                    %error,
                    "outbox row does not decode; its aggregate's later events are held back"
                );
                index.insert(row.aggregate_id, None);
            }
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn row(position: i64, aggregate: &str) -> PendingRow {
        let envelope = Envelope {
            id: format!("id-{position}"),
            aggregate_id: aggregate.into(),
            ..Envelope::default()
        };
        PendingRow {
            position,
            aggregate_id: aggregate.into(),
            envelope: envelope.encode_to_vec(),
        }
    }

    fn positions(queues: &[VecDeque<(i64, Envelope)>]) -> Vec<Vec<i64>> {
        queues
            .iter()
            .map(|q| q.iter().map(|(p, _)| *p).collect())
            .collect()
    }

    #[test]
    fn rows_queue_per_aggregate_in_position_order() {
        let rows = vec![
            row(1, "a"),
            row(2, "b"),
            row(3, "a"),
            row(4, "c"),
            row(5, "b"),
        ];
        assert_eq!(
            positions(&queues(rows)),
            vec![vec![1, 3], vec![2, 5], vec![4]]
        );
    }

    #[test]
    fn a_row_that_does_not_decode_holds_its_aggregate_back() {
        let mut bad = row(2, "a");
        bad.envelope = vec![0xff, 0xff, 0xff];
        let rows = vec![row(1, "a"), bad, row(3, "b"), row(4, "a")];
        assert_eq!(positions(&queues(rows)), vec![vec![1], vec![3]]);
        let mut first = row(1, "a");
        first.envelope = vec![0xff];
        assert_eq!(
            positions(&queues(vec![first, row(2, "a"), row(3, "b")])),
            vec![vec![3]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_held_until_a_tenth_before_it_expires() {
        let ttl = Duration::from_secs(9);
        let leader = Arc::new(AtomicBool::new(false));
        let mut lease = Lease {
            ttl,
            valid_until: None,
            next_attempt: Instant::now(),
            leader: leader.clone(),
        };
        assert!(lease.due() && !lease.held());

        lease.taken(Instant::now());
        assert!(lease.held() && leader.load(Ordering::Relaxed));
        assert!(!lease.due());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(lease.due(), "renewed every third of the ttl");

        // Renewal failed: still held until a tenth before expiry.
        lease.failed();
        assert!(!lease.due());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(lease.due(), "tried again a tenth of the ttl later");
        tokio::time::advance(Duration::from_millis(4200 - 1)).await;
        assert!(lease.held());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lease.held() && !leader.load(Ordering::Relaxed));

        // Refused: a standby, asking again a third of the ttl later.
        lease.taken(Instant::now());
        lease.refused();
        assert!(!lease.held() && !lease.due());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(lease.due());
    }

    #[test]
    fn settings_are_checked() {
        assert!(RelayConfig::default().validate().is_ok());
        let zero = RelayConfig {
            batch_size: 0,
            ..RelayConfig::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(Error::Config {
                key: "relay.batch_size",
                ..
            })
        ));
        let inverted = RelayConfig {
            backoff_initial: Duration::from_secs(20),
            ..RelayConfig::default()
        };
        assert!(inverted.validate().is_err());
    }
}
