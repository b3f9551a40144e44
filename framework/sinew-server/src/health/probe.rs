//! Readiness probes: named async checks the scaffold runs periodically.

use std::{collections::HashSet, fmt, future::Future, sync::Arc, time::Duration};

use futures_util::future::{BoxFuture, FutureExt, join_all};

use super::{HealthRegistry, OVERALL, ServingStatus};
use crate::BoxError;

type Check = dyn Fn() -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync;

/// A named readiness check, such as a database ping or a call to a
/// dependency.
///
/// The scaffold runs every probe at start and then every probe interval,
/// each under the probe timeout. While a probe fails or times out, the
/// overall status and the services it affects (all of them, unless
/// narrowed with [`Probe::for_services`]) are `NOT_SERVING`; they return to
/// `SERVING` once it passes again. Liveness is never affected.
#[derive(Clone)]
pub struct Probe {
    name: String,
    services: Option<Vec<String>>,
    check: Arc<Check>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("name", &self.name)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

// === impl Probe ===

impl Probe {
    /// A probe called `name` that passes when `check` resolves to `Ok`.
    pub fn new<F, Fut, E>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self {
            name: name.into(),
            services: None,
            check: Arc::new(move || check().map(|r| r.map_err(Into::into)).boxed()),
        }
    }

    /// Narrows the probe to these services (fully qualified names): when it
    /// fails, only they and the overall status become `NOT_SERVING`.
    pub fn for_services<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn affects(&self, service: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|services| services.iter().any(|s| s == service))
    }

    async fn passes(&self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, (self.check)()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::debug!(probe = %self.name, %error, "readiness probe failed");
                false
            }
            Err(_) => {
                tracing::debug!(probe = %self.name, ?timeout, "readiness probe timed out");
                false
            }
        }
    }
}

/// Runs every probe now and then every `interval`, forever, setting the
/// overall status and each of `services` from the results. The drain stops
/// it by dropping the future.
pub(crate) async fn run_probes(
    probes: Vec<Probe>,
    registry: HealthRegistry,
    services: Vec<String>,
    interval: Duration,
    timeout: Duration,
) {
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        let results = join_all(probes.iter().map(|p| p.passes(timeout))).await;
        let now_failing: HashSet<String> = probes
            .iter()
            .zip(results)
            .filter(|(_, passed)| !passed)
            .map(|(p, _)| p.name.clone())
            .collect();
        for name in now_failing.difference(&failing) {
            tracing::warn!(probe = %name, "readiness probe failing: not serving");
        }
        for name in failing.difference(&now_failing) {
            tracing::info!(probe = %name, "readiness probe passing again");
        }
        failing = now_failing;

        let status = |down: bool| {
            if down {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            }
        };
        for service in &services {
            let down = probes
                .iter()
                .any(|p| failing.contains(&p.name) && p.affects(service));
            registry.set(service, status(down));
        }
        registry.set(OVERALL, status(!failing.is_empty()));

        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_probe_flips_only_what_it_affects_and_recovers() {
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let db = Probe::new("db", move || {
            let ok = flag.load(Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err("down") } }
        })
        .for_services(["a.Orders"]);
        let registry = HealthRegistry::new();
        let services = vec!["a.Orders".to_owned(), "a.Catalog".to_owned()];
        let interval = Duration::from_secs(5);
        tokio::spawn(run_probes(
            vec![db],
            registry.clone(),
            services,
            interval,
            Duration::from_secs(1),
        ));

        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(registry.status(""), Some(ServingStatus::Serving));
        assert_eq!(registry.status("a.Orders"), Some(ServingStatus::Serving));

        healthy.store(false, Ordering::SeqCst);
        tokio::time::sleep(interval).await;
        assert_eq!(registry.status(""), Some(ServingStatus::NotServing));
        assert_eq!(registry.status("a.Orders"), Some(ServingStatus::NotServing));
        assert_eq!(registry.status("a.Catalog"), Some(ServingStatus::Serving));

        healthy.store(true, Ordering::SeqCst);
        tokio::time::sleep(interval).await;
        assert_eq!(registry.status(""), Some(ServingStatus::Serving));
        assert_eq!(registry.status("a.Orders"), Some(ServingStatus::Serving));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_counts_as_failing() {
        let stuck = Probe::new("stuck", || async {
            std::future::pending::<Result<(), BoxError>>().await
        });
        let registry = HealthRegistry::new();
        tokio::spawn(run_probes(
            vec![stuck],
            registry.clone(),
            vec!["a.B".to_owned()],
            Duration::from_secs(5),
            Duration::from_secs(1),
        ));
        tokio::time::sleep(Duration::from_millis(1001)).await;
        assert_eq!(registry.status(""), Some(ServingStatus::NotServing));
        assert_eq!(registry.status("a.B"), Some(ServingStatus::NotServing));
    }
}
