use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, timeout_at},
};

use super::BulkheadConfig;

/// The slots and the queue of one bulkhead. Cheap to clone: clones share
/// the same slots, which is how several services share one bulkhead.
#[derive(Clone)]
pub struct Limits {
    shared: Arc<Shared>,
}

struct Shared {
    config: BulkheadConfig,
    /// Capped at what a semaphore can hold.
    max_concurrent: usize,
    /// One permit per slot. tokio's semaphore is fair: a freed permit goes
    /// to the longest waiter, and `try_acquire` never jumps the queue.
    slots: Arc<Semaphore>,
    /// Calls waiting for a slot.
    queued: AtomicUsize,
}

/// A slot, held until the call is over.
pub(crate) type Slot = OwnedSemaphorePermit;

/// A wait for a slot: `None` if the queue timeout passed first. Boxed, as
/// tokio's acquire future has no name; only calls that queue pay for it.
pub(crate) type Wait = Pin<Box<dyn Future<Output = Option<Slot>> + Send>>;

/// What [`Limits::admit`] decided.
pub(crate) enum Admission {
    /// A slot was free.
    Now(Slot),
    /// The call is in the queue.
    Queued(Wait),
    /// No slot and no room in the queue.
    Full,
}

// === impl Limits ===

impl Limits {
    /// New limits, all slots free.
    pub fn new(config: BulkheadConfig) -> Self {
        let max_concurrent = config.max_concurrent.min(Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Shared {
                config,
                max_concurrent,
                slots: Arc::new(Semaphore::new(max_concurrent)),
                queued: AtomicUsize::new(0),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> BulkheadConfig {
        self.shared.config
    }

    /// Calls holding a slot now (a slot just handed to a queued call
    /// counts, though that call may not have been sent yet).
    pub fn in_flight(&self) -> usize {
        self.shared.max_concurrent - self.shared.slots.available_permits()
    }

    /// Calls waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Takes a free slot, or a place in the queue, or neither. The wait's
    /// timeout starts now, not when the wait is first polled.
    pub(crate) fn admit(&self) -> Admission {
        if let Ok(slot) = Arc::clone(&self.shared.slots).try_acquire_owned() {
            return Admission::Now(slot);
        }
        let Some(place) = self.enter_queue() else {
            return Admission::Full;
        };
        let deadline = Instant::now() + self.shared.config.queue_timeout;
        let slots = Arc::clone(&self.shared.slots);
        Admission::Queued(Box::pin(async move {
            // Leaves the queue when the wait ends, whichever way, or when
            // the caller drops it.
            let _place = place;
            // Err: elapsed, or the semaphore closed (it never is).
            timeout_at(deadline, slots.acquire_owned()).await.ok()?.ok()
        }))
    }

    fn enter_queue(&self) -> Option<Place> {
        let max = self.shared.config.max_queue;
        self.shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max).then_some(queued + 1)
            })
            .ok()?;
        Some(Place {
            shared: Arc::clone(&self.shared),
        })
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.shared.config)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

/// A place in the queue; counted in `queued` while it lives.
struct Place {
    shared: Arc<Shared>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The limits of each group of methods, by path prefix.
#[derive(Debug)]
pub(crate) struct Groups {
    default: Limits,
    by_prefix: Vec<(Box<str>, Limits)>,
}

// === impl Groups ===

impl Groups {
    pub(crate) fn new(default: Limits, by_prefix: Vec<(Box<str>, Limits)>) -> Self {
        Self { default, by_prefix }
    }

    pub(crate) fn default_limits(&self) -> &Limits {
        &self.default
    }

    /// The limits of the longest prefix of `path`, or the default. A
    /// linear scan: there are a handful of groups at most.
    pub(crate) fn pick(&self, path: &str) -> &Limits {
        self.by_prefix
            .iter()
            .filter(|(prefix, _)| path.starts_with(&**prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(&self.default, |(_, limits)| limits)
    }
}
