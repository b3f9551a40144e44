//! A broker in one process's memory, with JetStream's semantics:
//! deduplication by message id, durable consumer groups that share work,
//! explicit acknowledgement, delayed redelivery, redelivery after
//! `ack_wait`, and a delivery limit.
//!
//! **Not durable**: everything is lost when the process ends. It serves
//! unit tests (its timers run on tokio's clock, so paused time drives
//! them) and single-process demos.
//!
//! ```
//! use sinew_events::{Broker, MemoryBroker};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let broker = MemoryBroker::new();
//! broker
//!     .publish_raw("shop.orders.placed".into(), Default::default(), "x".into())
//!     .await
//!     .unwrap();
//! assert_eq!(broker.messages("shop.orders.placed").len(), 1);
//! # }
//! ```

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt as _};
use tokio::{sync::Notify, time::Instant};

use crate::{
    Error,
    broker::{Broker, Delivery, Published},
    consumer::ConsumerConfig,
    envelope::MSG_ID,
    jetstream::durable_name,
};

/// The most messages a memory broker holds, all subjects together, unless
/// set otherwise: publishing past it fails.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// A broker in memory. Clones share it.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every publish, acknowledgement and nak.
    changed: Notify,
    capacity: usize,
    duplicate_window: Duration,
}

#[derive(Debug, Default)]
struct State {
    subjects: HashMap<String, Vec<Stored>>,
    total: usize,
    /// Message ids seen, with when, oldest first.
    seen: VecDeque<(String, Instant)>,
    seen_ids: HashMap<String, Instant>,
    groups: HashMap<String, Group>,
}

#[derive(Debug, Clone)]
struct Stored {
    headers: HeaderMap,
    payload: Bytes,
}

#[derive(Debug)]
struct Group {
    subject: String,
    /// Index of the first message never delivered.
    next: usize,
    /// Delivered and not acknowledged, by index.
    pending: BTreeMap<usize, Pending>,
    ack_wait: Duration,
    /// Deliveries after which a message is no longer delivered.
    max_deliver: u64,
    max_ack_pending: usize,
}

#[derive(Debug)]
struct Pending {
    delivered: u64,
    /// When it is due again: after `ack_wait`, or after a nak's delay.
    due: Instant,
    /// Whether it is out with a member now (not nak'ed).
    out: bool,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// An empty broker holding up to [`DEFAULT_CAPACITY`] messages, with
    /// a two-minute deduplication window.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_CAPACITY, Duration::from_secs(120))
    }

    /// An empty broker holding up to `capacity` messages, dropping repeats
    /// of a message id seen within `duplicate_window`.
    pub fn with_limits(capacity: usize, duplicate_window: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                capacity,
                duplicate_window,
            }),
        }
    }

    /// Every message stored on `subject`, oldest first: headers and
    /// payload. Dead letters are on `sinew.dead.<group>`.
    pub fn messages(&self, subject: &str) -> Vec<(HeaderMap, Bytes)> {
        self.shared
            .lock()
            .subjects
            .get(subject)
            .map(|stored| {
                stored
                    .iter()
                    .map(|s| (s.headers.clone(), s.payload.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl MemoryBroker {
    /// Messages on `subject` that consumer group `group` has not yet
    /// acknowledged (or terminated): delivered and pending, and never
    /// delivered. Zero once the group is done with everything published.
    pub fn unacknowledged(&self, subject: &str, group: &str) -> usize {
        let state = self.shared.lock();
        let stored = state.subjects.get(subject).map_or(0, Vec::len);
        match state.groups.get(&durable_name(group, subject)) {
            Some(g) => g.pending.len() + stored.saturating_sub(g.next),
            None => stored,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Broker for MemoryBroker {
    type Delivery = MemoryDelivery;
    type Deliveries = BoxStream<'static, Result<MemoryDelivery, Error>>;

    async fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Published, Error> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let now = Instant::now();
        while let Some((id, at)) = state.seen.front() {
            if now.duration_since(*at) < shared.duplicate_window {
                break;
            }
            let id = id.clone();
            state.seen.pop_front();
            state.seen_ids.remove(&id);
        }
        if let Some(id) = headers.get(MSG_ID).map(|id| id.as_str().to_owned()) {
            if state.seen_ids.contains_key(&id) {
                return Ok(Published { duplicate: true });
            }
            state.seen_ids.insert(id.clone(), now);
            state.seen.push_back((id, now));
        }
        if state.total >= shared.capacity {
            return Err(Error::broker(format!(
                "memory broker full ({} messages)",
                shared.capacity
            )));
        }
        state.total += 1;
        state
            .subjects
            .entry(subject)
            .or_default()
            .push(Stored { headers, payload });
        drop(state);
        shared.changed.notify_waiters();
        Ok(Published { duplicate: false })
    }

    async fn subscribe(
        &self,
        subject: &str,
        config: &ConsumerConfig,
    ) -> Result<Self::Deliveries, Error> {
        config.validate()?;
        let name = durable_name(&config.group, subject);
        {
            let mut state = self.shared.lock();
            let group = state.groups.entry(name.clone()).or_insert_with(|| Group {
                subject: subject.to_owned(),
                next: 0,
                pending: BTreeMap::new(),
                ack_wait: config.ack_wait,
                max_deliver: u64::from(config.max_deliver) + 1,
                max_ack_pending: config.max_ack_pending as usize,
            });
            // Like a durable consumer updated in place.
            group.ack_wait = config.ack_wait;
            group.max_deliver = u64::from(config.max_deliver) + 1;
            group.max_ack_pending = config.max_ack_pending as usize;
        }
        let shared = self.shared.clone();
        Ok(stream::unfold((shared, name), |(shared, name)| async move {
            let delivery = next_delivery(&shared, &name).await;
            Some((Ok(delivery), (shared, name)))
        })
        .boxed())
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// Waits for the next message due to the group `name`.
async fn next_delivery(shared: &Arc<Shared>, name: &str) -> MemoryDelivery {
    loop {
        let changed = shared.changed.notified();
        let wake = {
            let mut state = shared.lock();
            let now = Instant::now();
            let State {
                subjects, groups, ..
            } = &mut *state;
            let group = groups.get_mut(name).expect("groups are never removed");
            let log = subjects
                .get(&group.subject)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            // Give up on what has used all its deliveries.
            let max_deliver = group.max_deliver;
            group
                .pending
                .retain(|_, p| !(p.delivered >= max_deliver && p.due <= now));
            // First what is due again, oldest first; then what is new.
            let again = group
                .pending
                .iter()
                .find(|(_, p)| p.due <= now)
                .map(|(index, _)| *index);
            let index = again.or_else(|| {
                let unacked = group.pending.len();
                (group.next < log.len() && unacked < group.max_ack_pending).then_some(group.next)
            });
            if let Some(index) = index {
                if index == group.next {
                    group.next += 1;
                }
                let entry = group.pending.entry(index).or_insert(Pending {
                    delivered: 0,
                    due: now,
                    out: true,
                });
                entry.delivered += 1;
                entry.due = now + group.ack_wait;
                entry.out = true;
                let stored = &log[index];
                return MemoryDelivery {
                    shared: shared.clone(),
                    group: name.to_owned(),
                    subject: group.subject.clone(),
                    index,
                    delivered: entry.delivered,
                    headers: stored.headers.clone(),
                    payload: stored.payload.clone(),
                };
            }
            group.pending.values().map(|p| p.due).min()
        };
        match wake {
            Some(at) => {
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => changed.await,
        }
    }
}

/// A message delivered by a [`MemoryBroker`].
#[derive(Debug)]
pub struct MemoryDelivery {
    shared: Arc<Shared>,
    group: String,
    subject: String,
    index: usize,
    delivered: u64,
    headers: HeaderMap,
    payload: Bytes,
}

impl MemoryDelivery {
    /// Applies `change` to this delivery's pending entry, if it is still
    /// this delivery's (not since redelivered).
    fn settle(
        &self,
        change: impl FnOnce(&mut BTreeMap<usize, Pending>, Instant),
    ) -> Result<(), Error> {
        let mut state = self.shared.lock();
        let group = state.groups.get_mut(&self.group).ok_or(Error::Closed)?;
        match group.pending.get(&self.index) {
            Some(p) if p.delivered == self.delivered => {
                change(&mut group.pending, Instant::now());
                drop(state);
                self.shared.changed.notify_waiters();
                Ok(())
            }
            _ => Err(Error::broker("acknowledgement of a stale delivery")),
        }
    }
}

impl Delivery for MemoryDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn headers(&self) -> Option<&HeaderMap> {
        Some(&self.headers)
    }

    fn payload(&self) -> &Bytes {
        &self.payload
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    async fn ack(&self) -> Result<(), Error> {
        let index = self.index;
        self.settle(|pending, _| {
            pending.remove(&index);
        })
    }

    async fn nak(&self, delay: Duration) -> Result<(), Error> {
        let index = self.index;
        self.settle(|pending, now| {
            if let Some(p) = pending.get_mut(&index) {
                p.due = now + delay;
                p.out = false;
            }
        })
    }

    async fn term(&self) -> Result<(), Error> {
        self.ack().await
    }
}
