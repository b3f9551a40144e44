//! Reloading TLS files on an interval and on `SIGHUP`.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use super::{
    TlsError,
    files::{Named, read_all},
};

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

/// A configuration built from files: a server's or a client's TLS.
pub(crate) trait FromFiles: Send + Sync + 'static {
    /// What is built: a rustls configuration.
    type Built: Send + Sync + 'static;

    /// The files, in the order [`build`](Self::build) reads their bytes.
    fn files(&self) -> Vec<&Named>;

    /// The configuration from the files' bytes.
    fn build(&self, read: &[Vec<u8>]) -> Result<Self::Built, TlsError>;
}

/// A configuration loaded from its files, with what it was built from, so
/// that a reload builds anew only when their bytes changed.
pub(crate) struct Loaded<C: FromFiles> {
    pub(crate) config: C,
    current: RwLock<Arc<C::Built>>,
    /// The files' bytes the current configuration was built from.
    read: Mutex<Vec<Vec<u8>>>,
}

impl<C: FromFiles> Loaded<C> {
    /// Reads the files and builds the configuration.
    pub(crate) fn load(config: C) -> Result<Arc<Self>, TlsError> {
        let read = read_all(&config.files())?;
        let built = config.build(&read)?;
        Ok(Arc::new(Self {
            config,
            current: RwLock::new(Arc::new(built)),
            read: Mutex::new(read),
        }))
    }

    /// The configuration in use.
    pub(crate) fn current(&self) -> Arc<C::Built> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the files again and builds anew if their bytes changed.
    pub(crate) fn reload(&self) -> Result<bool, TlsError> {
        let read = read_all(&self.config.files())?;
        let mut seen = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == read {
            return Ok(false);
        }
        let built = self.config.build(&read)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(built);
        *seen = read;
        Ok(true)
    }

    /// Reloads `this` on an interval and on `SIGHUP` for as long as it
    /// lives (see [`watch`]), logged as `what`.
    pub(crate) fn watch(
        this: &Arc<Self>,
        what: String,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(this);
        watch(what, interval, move || {
            weak.upgrade().map(|loaded| loaded.reload())
        })
    }
}
