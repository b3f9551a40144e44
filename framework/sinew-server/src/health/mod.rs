//! gRPC health checking (`grpc.health.v1`), spec-correct, with readiness
//! probes.
//!
//! The scaffold registers every service it hosts, the overall status under
//! the empty name `""`, and [`LIVENESS`]. [`HealthRegistry`] holds the
//! statuses; the `Health` service answers from it:
//!
//! - `Check` on a known name answers its status; on an unknown name it fails
//!   with `NOT_FOUND`.
//! - `Watch` sends the current status, then each change. On an unknown name
//!   it sends `SERVICE_UNKNOWN` and stays open, and reports the service if it
//!   is registered later. Streams end when the server drains, after they
//!   have seen `NOT_SERVING`.
//! - `List` (gRFC A90) answers every known name and its status.
//!
//! Readiness is the overall status `""`: it is `SERVING` only while every
//! [`Probe`] passes. Liveness, under [`LIVENESS`], stays `SERVING` while the
//! process runs, through failing probes and through the drain, so an
//! orchestrator restarts a process only when it stops answering.

mod pb;
mod probe;
mod service;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, PoisonError, RwLock},
};

use tokio::sync::watch;

pub use pb::grpc::health::v1 as proto;
pub use probe::Probe;
pub use proto::health_check_response::ServingStatus;

pub(crate) use pb::FILE_DESCRIPTOR_SET;
pub(crate) use probe::run_probes;
pub(crate) use service::HealthService;

/// The health name of the process's liveness: `SERVING` while it runs.
pub const LIVENESS: &str = "liveness";

/// The path of health's `Watch`, whose streams the scaffold's
/// `request_timeout` does not cut: they last until the caller's own
/// deadline, or the drain.
pub const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// The overall status: the server's readiness.
pub const OVERALL: &str = "";

/// How many names that the server does not know may be watched at once; a
/// further `Watch` on an unknown name fails with `RESOURCE_EXHAUSTED`, so
/// clients cannot grow the registry without bound.
pub const MAX_UNKNOWN_WATCHED: usize = 1024;

/// The health statuses of a server, by service name.
///
/// Clones share the same statuses. Setting a status wakes every `Watch`
/// stream on that name, and only when the status actually changes.
#[derive(Clone, Debug)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Held only for map lookups and inserts, never across an await.
    services: RwLock<HashMap<String, watch::Sender<ServingStatus>>>,
    // Becomes true when the server drains: open Watch streams end.
    closing: watch::Sender<bool>,
}

/// A `Watch` on an unknown name was refused: too many are open.
#[derive(Debug, thiserror::Error)]
#[error("too many health watches on unknown services")]
pub(crate) struct TooManyWatches;

// === impl HealthRegistry ===

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                services: RwLock::new(HashMap::new()),
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// Sets the status of `service`, registering it if it is new.
    ///
    /// `SERVICE_UNKNOWN` is not a status a service can have; setting it
    /// does nothing.
    pub fn set(&self, service: &str, status: ServingStatus) {
        if status == ServingStatus::ServiceUnknown {
            return;
        }
        // Status changes are rare; one write lock keeps this simple.
        let mut services = self.write();
        match services.get(service) {
            Some(sender) => {
                let changed = sender.send_if_modified(|current| {
                    let changed = *current != status;
                    *current = status;
                    changed
                });
                if changed {
                    sinew_telemetry::events::health_changed(service, status.as_str_name());
                }
            }
            None => {
                services.insert(service.to_owned(), watch::Sender::new(status));
                sinew_telemetry::events::health_changed(service, status.as_str_name());
            }
        }
    }

    /// The status of `service`, or `None` if the server does not know it.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let services = self.read();
        let status = *services.get(service)?.borrow();
        (status != ServingStatus::ServiceUnknown).then_some(status)
    }

    /// Every known service and its status, sorted by name.
    pub fn list(&self) -> BTreeMap<String, ServingStatus> {
        self.read()
            .iter()
            .map(|(name, sender)| (name.clone(), *sender.borrow()))
            .filter(|(_, status)| *status != ServingStatus::ServiceUnknown)
            .collect()
    }

    /// Sets every known service except [`LIVENESS`] to `status`.
    pub(crate) fn set_all_but_liveness(&self, status: ServingStatus) {
        let names: Vec<String> = self
            .list()
            .into_keys()
            .filter(|name| name != LIVENESS)
            .collect();
        for name in names {
            self.set(&name, status);
        }
    }

    /// A receiver for the status of `service`. An unknown name is added as
    /// `SERVICE_UNKNOWN`, hidden from `status` and `list`, until a status is
    /// set or its last watcher leaves.
    pub(crate) fn subscribe(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<ServingStatus>, TooManyWatches> {
        if let Some(sender) = self.read().get(service) {
            return Ok(sender.subscribe());
        }
        let mut services = self.write();
        if let Some(sender) = services.get(service) {
            return Ok(sender.subscribe());
        }
        let unknown = services
            .values()
            .filter(|s| *s.borrow() == ServingStatus::ServiceUnknown)
            .count();
        if unknown >= MAX_UNKNOWN_WATCHED {
            return Err(TooManyWatches);
        }
        let sender = watch::Sender::new(ServingStatus::ServiceUnknown);
        let receiver = sender.subscribe();
        services.insert(service.to_owned(), sender);
        Ok(receiver)
    }

    /// Forgets `service` if it is still unknown and nobody watches it.
    pub(crate) fn release(&self, service: &str) {
        let mut services = self.write();
        if let Some(sender) = services.get(service)
            && *sender.borrow() == ServingStatus::ServiceUnknown
            && sender.receiver_count() == 0
        {
            services.remove(service);
        }
    }

    /// Ends every open `Watch` stream (the server is draining).
    pub(crate) fn close_watches(&self) {
        self.inner.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        // A panic while holding the lock cannot leave the map half-written
        // (each operation is a single insert, remove or send), so a
        // poisoned lock is still sound to use.
        self.inner
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        self.inner
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_hidden_until_set() {
        let registry = HealthRegistry::new();
        let rx = registry.subscribe("a.B").unwrap();
        assert_eq!(*rx.borrow(), ServingStatus::ServiceUnknown);
        assert_eq!(registry.status("a.B"), None);
        assert!(registry.list().is_empty());

        registry.set("a.B", ServingStatus::Serving);
        assert_eq!(*rx.borrow(), ServingStatus::Serving);
        assert_eq!(registry.status("a.B"), Some(ServingStatus::Serving));
    }

    #[test]
    fn an_unwatched_unknown_name_is_forgotten() {
        let registry = HealthRegistry::new();
        let rx = registry.subscribe("gone").unwrap();
        drop(rx);
        registry.release("gone");
        assert!(registry.read().get("gone").is_none());
    }

    #[test]
    fn unknown_watches_are_bounded() {
        let registry = HealthRegistry::new();
        let held: Vec<_> = (0..MAX_UNKNOWN_WATCHED)
            .map(|i| registry.subscribe(&format!("svc{i}")).unwrap())
            .collect();
        assert!(registry.subscribe("one.too.many").is_err());
        // A known name can always be watched.
        registry.set("known", ServingStatus::Serving);
        assert!(registry.subscribe("known").is_ok());
        drop(held);
    }

    #[test]
    fn setting_the_same_status_wakes_nobody() {
        let registry = HealthRegistry::new();
        registry.set("s", ServingStatus::Serving);
        let mut rx = registry.subscribe("s").unwrap();
        rx.mark_unchanged();
        registry.set("s", ServingStatus::Serving);
        assert!(!rx.has_changed().unwrap());
        registry.set("s", ServingStatus::NotServing);
        assert!(rx.has_changed().unwrap());
    }
}
