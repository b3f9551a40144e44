//! Installing telemetry process-wide, and taking it down.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use opentelemetry::{global, propagation::TextMapCompositePropagator};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use super::{
    TelemetryConfig, TelemetryError, call,
    export::{Pipeline, off_runtime},
    logs,
};

/// How long [`flush`] waits for the exporters.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Telemetry::shutdown`] (or dropping [`Telemetry`]) waits for
/// the exporters.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What is installed in this process.
struct Installed {
    /// Whether `init` succeeded once; it cannot succeed again, since the
    /// `tracing` subscriber cannot be replaced.
    done: bool,
    /// The pipeline until it is shut down, for [`flush`].
    pipeline: Option<Pipeline>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    done: false,
    pipeline: None,
});

fn installed() -> std::sync::MutexGuard<'static, Installed> {
    // The state stays consistent whatever panicked while holding the lock.
    INSTALLED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs telemetry for `service_name`, configured from the environment:
/// [`init_with`]`(`[`TelemetryConfig::from_env`]`(service_name)?)`.
///
/// Call it once, early in `main`, inside the tokio runtime, and keep the
/// guard until the end:
///
/// ```no_run
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> { Ok(()) }
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let telemetry = sinew_telemetry::init("greeter")?;
///     serve().await?;
///     telemetry.shutdown().await?;
///     Ok(())
/// }
/// ```
pub fn init(service_name: impl Into<String>) -> Result<Telemetry, TelemetryError> {
    init_with(TelemetryConfig::from_env(service_name)?)
}

/// Installs telemetry as `config` says, process-wide:
///
/// - the global OpenTelemetry tracer provider, with the sampler and
///   resource, exporting spans over OTLP/gRPC through a bounded queue when
///   a traces endpoint is set;
/// - the global meter provider (what `opentelemetry::global::meter` hands
///   out), exporting periodically over OTLP/gRPC when a metrics endpoint
///   is set;
/// - the global propagator: W3C `traceparent`/`tracestate`, then W3C
///   `baggage`;
/// - the global `tracing` subscriber: console logs to stderr carrying trace
///   ids, and the bridge turning `tracing` spans into OpenTelemetry spans.
///
/// Disabled (`OTEL_SDK_DISABLED=true` or
/// [`TelemetryConfig::disabled`]), it installs the propagator and the
/// console logs only, which then carry no ids: no providers, no exporters,
/// no threads, and the scaffold's and clients' layers stay off, at one
/// atomic load per call. No setting but the log filter is checked, and no
/// runtime is needed. The returned guard reports nothing and its
/// `shutdown` returns at once.
///
/// It succeeds once per process, disabled or not. It fails, installing
/// nothing, on an invalid setting; with
/// [`TelemetryError::AlreadyInstalled`] if it already succeeded; with
/// [`TelemetryError::SubscriberInstalled`] if something else installed a
/// `tracing` subscriber; and with [`TelemetryError::NoRuntime`] if it must
/// export metrics but was called outside a tokio runtime.
pub fn init_with(config: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    if config.disabled {
        return init_disabled(&config);
    }
    let pipeline = {
        let mut installed = installed();
        if installed.done {
            return Err(TelemetryError::AlreadyInstalled);
        }
        let pipeline = Pipeline::build(&config)?;
        let subscriber = logs::subscriber(&config.log_filter, pipeline.tracer())?;
        // The one step that can fail for reasons outside sinew goes first,
        // so a failure leaves the OpenTelemetry globals untouched.
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| TelemetryError::SubscriberInstalled)?;

        set_propagator();
        global::set_tracer_provider(pipeline.tracer_provider.clone());
        global::set_meter_provider(pipeline.meter_provider.clone());

        installed.done = true;
        installed.pipeline = Some(pipeline.clone());
        pipeline
    };
    // The scaffold's and the clients' layers record from now on.
    call::enable(config.sampler, pipeline.queue.clone());

    let TelemetryConfig {
        service_name,
        traces_endpoint,
        metrics_endpoint,
        sampler,
        unrecognised_disabled,
        ignored,
        ..
    } = config;
    tracing::info!(
        target: "sinew::telemetry",
        service = %service_name,
        traces = traces_endpoint.as_deref().unwrap_or("not exported"),
        metrics = metrics_endpoint.as_deref().unwrap_or("not exported"),
        %sampler,
        "telemetry installed",
    );
    report_unused_settings(unrecognised_disabled.as_deref(), ignored.as_deref());
    Ok(Telemetry {
        pipeline: Some(pipeline),
    })
}

/// [`init_with`] for a disabled `config`: the console and the propagator,
/// and nothing that records, exports, spawns or needs a runtime.
fn init_disabled(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    {
        let mut installed = installed();
        if installed.done {
            return Err(TelemetryError::AlreadyInstalled);
        }
        let subscriber = logs::console_subscriber(&config.log_filter)?;
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| TelemetryError::SubscriberInstalled)?;
        // The specification leaves propagators alone when the SDK is
        // disabled; code that injects or extracts through the global one
        // keeps working. (The scaffold's layers, being off, do neither.)
        set_propagator();
        // `call::enable` is not called: the layers stay off, and the global
        // providers stay the API's no-op ones.
        installed.done = true;
    }

    let by = if config.disabled_by_env {
        "OTEL_SDK_DISABLED"
    } else {
        "code"
    };
    tracing::info!(
        target: "sinew::telemetry",
        service = %config.service_name,
        "telemetry is disabled by {by}: console logs only, no traces or metrics recorded or exported",
    );
    report_unused_settings(
        config.unrecognised_disabled.as_deref(),
        config.ignored.as_deref(),
    );
    Ok(Telemetry { pipeline: None })
}

/// W3C `traceparent`/`tracestate`, then W3C `baggage`, as the global
/// propagator.
fn set_propagator() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// Warns of what the configuration read but did not act on: an
/// `OTEL_SDK_DISABLED` that is neither `true` nor `false`, and why a
/// setting was `ignored` while telemetry is disabled. Only now can it:
/// `from_env` runs before there is a console to warn on.
fn report_unused_settings(unrecognised_disabled: Option<&str>, ignored: Option<&str>) {
    if let Some(value) = unrecognised_disabled {
        tracing::warn!(
            target: "sinew::telemetry",
            value = %value,
            "OTEL_SDK_DISABLED is neither true nor false; taken as false, so telemetry is on",
        );
    }
    if let Some(error) = ignored {
        tracing::warn!(
            target: "sinew::telemetry",
            %error,
            "ignored while telemetry is disabled; it fails the start once OTEL_SDK_DISABLED \
             is unset",
        );
    }
}

/// Exports the spans and metrics waiting in the global providers, waiting
/// at most [`FLUSH_TIMEOUT`]. The server calls it at the end of its drain,
/// so the last calls' telemetry leaves before the process does.
///
/// Without [`init`], or after shutdown, there is nothing to flush and it
/// returns `Ok` at once. The blocking part runs on tokio's blocking pool,
/// so the runtime keeps driving the exports meanwhile. An error means some
/// telemetry was not delivered; it is not a reason to fail the shutdown.
pub async fn flush() -> Result<(), TelemetryError> {
    let pipeline = installed().pipeline.clone();
    match pipeline {
        Some(pipeline) => off_runtime("flush", move || pipeline.flush(FLUSH_TIMEOUT)).await,
        None => Ok(()),
    }
}

/// The installed telemetry. Keep it for the life of the process; at the end
/// call [`shutdown`](Self::shutdown) to export what is pending.
///
/// Dropping it without `shutdown` shuts down too, blocking the dropping
/// thread for up to [`SHUTDOWN_TIMEOUT`]. Prefer `shutdown().await`: on a
/// current-thread runtime, a blocking drop stalls the very runtime the
/// exports need, and they fail at the bound.
///
/// With telemetry disabled it holds nothing: its counters stay at zero,
/// and `shutdown` and dropping return at once.
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct Telemetry {
    pipeline: Option<Pipeline>,
}

// === impl Telemetry ===

impl Telemetry {
    /// Finished spans dropped because the export queue was full (the
    /// collector too slow or unreachable for `OTEL_BSP_MAX_QUEUE_SIZE`
    /// spans). Exactly the spans lost that way; never blocks a request.
    /// Not counted: spans the sampler left out, and spans in batches that
    /// failed to export (see [`failed_spans`](Self::failed_spans)).
    pub fn dropped_spans(&self) -> u64 {
        self.pipeline
            .as_ref()
            .map_or(0, |pipeline| pipeline.counters.dropped())
    }

    /// Spans handed to the exporter in batches it could not deliver (the
    /// collector refused them, or did not answer within the export
    /// timeout, retries included).
    pub fn failed_spans(&self) -> u64 {
        self.pipeline
            .as_ref()
            .map_or(0, |pipeline| pipeline.counters.failed())
    }

    /// Exports what is pending and stops the exporters, waiting at most
    /// [`SHUTDOWN_TIMEOUT`]. Afterwards spans are no longer recorded (they
    /// still carry ids) and [`flush`] does nothing. The console logs carry
    /// on.
    ///
    /// An error means some telemetry was not delivered in time.
    pub async fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.pipeline.take() {
            Some(pipeline) => off_runtime("shutdown", move || shut_down(&pipeline)).await,
            None => Ok(()),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take()
            && let Err(error) = shut_down(&pipeline)
        {
            tracing::warn!(target: "sinew::telemetry", %error, "telemetry shutdown on drop");
        }
    }
}

/// Shuts `pipeline` down, blocking for up to [`SHUTDOWN_TIMEOUT`].
fn shut_down(pipeline: &Pipeline) -> Result<(), TelemetryError> {
    installed().pipeline = None;
    let result = pipeline.shutdown(SHUTDOWN_TIMEOUT);
    let (dropped, failed) = (pipeline.counters.dropped(), pipeline.counters.failed());
    if dropped > 0 || failed > 0 {
        tracing::warn!(
            target: "sinew::telemetry",
            dropped_spans = dropped,
            failed_spans = failed,
            "spans were lost over the life of the process",
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use std::{process::Command, time::Instant};

    use super::*;
    use sinew_testing::ClosedPort;

    /// Marks the child process that runs [`installs_globals_once`].
    const CHILD: &str = "SINEW_TELEMETRY_GLOBAL_TEST";

    /// Installing is once per process, and unit tests share one, so the
    /// test runs in a child process of its own: nothing it installs can
    /// disturb other tests, and theirs cannot disturb it.
    #[test]
    fn init_installs_once_and_shuts_down_promptly() {
        let exe = std::env::current_exe().unwrap();
        let output = Command::new(exe)
            .args([
                "--exact",
                "install::tests::installs_globals_once",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "child ran no test:\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains("telemetry installed"), "{stderr}");
    }

    /// The body of [`init_installs_once_and_shuts_down_promptly`]; does
    /// nothing unless run as its child.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn installs_globals_once() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        // An endpoint nothing listens on.
        let port = ClosedPort::new();
        let endpoint = format!("http://{}", port.addr());

        // Before init, flush has nothing to do.
        flush().await.unwrap();

        let config = TelemetryConfig::new("global-test")
            .endpoint(endpoint)
            .export_timeout(Duration::from_secs(2))
            .schedule_delay(Duration::from_secs(3600))
            .metric_export_interval(Duration::from_secs(3600));
        let telemetry = init_with(config.clone()).unwrap();

        assert!(matches!(
            init_with(config),
            Err(TelemetryError::AlreadyInstalled)
        ));
        assert!(matches!(
            init("again"),
            Err(TelemetryError::AlreadyInstalled)
        ));

        // The globals are sinew's: tracing spans get OpenTelemetry ids, and
        // the propagator writes traceparent.
        {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;

            let span = tracing::info_span!("request");
            let _entered = span.enter();
            tracing::info!("inside a span");
            let cx = span.context();
            assert!(cx.span().span_context().is_valid());
            let mut headers = std::collections::HashMap::new();
            global::get_text_map_propagator(|propagator| {
                propagator.inject_context(&cx, &mut headers);
            });
            assert!(headers.contains_key("traceparent"), "{headers:?}");
        }

        let started = Instant::now();
        assert!(
            flush().await.is_err(),
            "nothing listens, yet flush succeeded"
        );
        let _ = telemetry.shutdown().await;
        assert!(
            started.elapsed() < FLUSH_TIMEOUT + SHUTDOWN_TIMEOUT + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        // After shutdown, flush is a no-op again.
        flush().await.unwrap();
    }
}
