//! Reloading TLS files on an interval and on `SIGHUP`.

use std::time::Duration;

use super::TlsError;

/// A TLS configuration that can read its files again.
pub trait Reload: Send + Sync + 'static {
    /// Reads the files again; when their bytes changed, builds the new
    /// configuration and uses it from the next handshake on. `Ok(true)`
    /// when it changed. On error the configuration in use stays.
    fn reload(&self) -> Result<bool, TlsError>;

    /// What is reloaded, for the log.
    fn describe(&self) -> String;
}

/// Calls `reload` every `interval` (zero: only on `SIGHUP`) and on each
/// `SIGHUP`, until it answers `None` (what it reloads is gone). A reload
/// is logged at info; one that fails is logged as a warning naming the
/// setting, and the configuration in use stays.
///
/// Must be called within a tokio runtime.
pub(crate) fn watch<F>(what: String, interval: Duration, reload: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Option<Result<bool, TlsError>> + Send + 'static,
{
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = (!interval.is_zero()).then(|| {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        // The first tick is at once: skip it, what was loaded is current.
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        loop {
            let tick = async {
                match &mut ticks {
                    Some(ticks) => {
                        ticks.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(unix)]
            let hup = async {
                match &mut hangup {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            let why = tokio::select! {
                () = tick => "interval",
                () = hup => "SIGHUP",
            };
            let Some(result) = reload() else {
                return;
            };
            match result {
                Ok(true) => tracing::info!(%what, trigger = why, "TLS files reloaded"),
                Ok(false) => tracing::trace!(%what, "TLS files unchanged"),
                Err(error) => tracing::warn!(
                    %what,
                    %error,
                    "TLS files changed but cannot be used; keeping the configuration in use"
                ),
            }
        }
    })
}
