//! The `tracing` subscriber: console logs that carry trace ids, and the
//! bridge from `tracing` spans to OpenTelemetry.
//!
//! Two layers over one registry, each with its own filter:
//!
//! - the console layer writes events to stderr, filtered by `RUST_LOG`
//!   (default `info`). Each line inside a span ends with the current
//!   OpenTelemetry `trace_id=` and `span_id=`, so a log line leads to its
//!   trace and back;
//! - the OpenTelemetry layer turns spans at `INFO` and above into
//!   OpenTelemetry spans, whatever `RUST_LOG` says: quieting the console
//!   does not lose traces (use `OTEL_TRACES_SAMPLER` for that), and
//!   `RUST_LOG=trace` does not export the runtime's internals.
//!
//! With telemetry disabled there is only the console layer, and its lines
//! carry no ids.

use std::{fmt, io::IsTerminal as _};

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::LevelFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    layer::SubscriberExt as _,
    registry::LookupSpan,
};

use super::TelemetryError;

/// Formats console lines as
/// `<time> <LEVEL> <span{fields}>:…: <target>: <message> <fields> trace_id=… span_id=…`.
///
/// The ids are those of the OpenTelemetry span current on the thread, the
/// one the OpenTelemetry layer entered with the innermost `INFO` (or
/// higher) `tracing` span. Outside any span, or without the OpenTelemetry
/// layer, there are none and the line ends after the fields.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConsoleFormat {
    timer: SystemTime,
}

impl<S, N> FormatEvent<S, N> for ConsoleFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        self.timer.format_time(&mut writer)?;
        write!(writer, " {:>5} ", meta.level())?;

        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }

        write!(writer, "{}: ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;

        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let ids = span.span_context();
        if ids.is_valid() {
            write!(
                writer,
                " trace_id={} span_id={}",
                ids.trace_id(),
                ids.span_id()
            )?;
        }
        writeln!(writer)
    }
}

/// The subscriber [`init_with`](super::init_with) installs: the console
/// layer filtered by `log_filter`, and the OpenTelemetry layer exporting
/// through `tracer`.
pub(crate) fn subscriber(
    log_filter: &str,
    tracer: SdkTracer,
) -> Result<impl Subscriber + Send + Sync + 'static, TelemetryError> {
    let console = console_layer(log_filter)?;
    let otel = otel_layer(tracer);
    Ok(tracing_subscriber::registry().with(otel).with(console))
}

/// The subscriber [`init_with`](super::init_with) installs when telemetry
/// is disabled: the console layer alone. With no OpenTelemetry layer no
/// context is ever current, so the lines carry no ids.
pub(crate) fn console_subscriber(
    log_filter: &str,
) -> Result<impl Subscriber + Send + Sync + 'static, TelemetryError> {
    Ok(tracing_subscriber::registry().with(console_layer(log_filter)?))
}

/// The console layer: [`ConsoleFormat`] lines to stderr, filtered by
/// `log_filter`.
fn console_layer<S>(
    log_filter: &str,
) -> Result<impl Layer<S> + Send + Sync + 'static, TelemetryError>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let console_filter = EnvFilter::builder()
        .parse(log_filter)
        .map_err(|e| TelemetryError::invalid("log_filter", log_filter, e.to_string()))?;
    Ok(tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(ConsoleFormat::default())
        .with_filter(console_filter))
}

/// The layer that turns `tracing` spans into OpenTelemetry spans. Per
/// span, only what the conventions ask for: no thread, code location or
/// busy/idle attributes. Context activation stays on: the console reads
/// the ids of the active context.
fn otel_layer<S>(
    tracer: SdkTracer,
) -> tracing_subscriber::filter::Filtered<
    tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>,
    LevelFilter,
    S,
>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO)
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::{TelemetryConfig, export::Pipeline};

    /// Collects what the console layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// The installed stack, but writing to `out` and set for this thread
    /// only.
    fn with_console<T>(out: &Captured, f: impl FnOnce() -> T) -> T {
        let pipeline = Pipeline::build(&TelemetryConfig::new("svc")).unwrap();
        let console = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_ansi(false)
            .event_format(ConsoleFormat::default())
            .with_filter(EnvFilter::new("info"));
        let otel = otel_layer(pipeline.tracer());
        let subscriber = tracing_subscriber::registry().with(otel).with(console);
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn lines_inside_a_span_carry_its_trace_and_span_ids() {
        let out = Captured::default();
        let (trace_id, span_id) = with_console(&out, || {
            let span = tracing::info_span!("handle", rpc.method = "SayHello");
            let _entered = span.enter();
            tracing::info!(user = 7, "greeting");
            let cx = opentelemetry::Context::current();
            let ids = cx.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let line = &lines[0];
        assert!(
            line.contains(" INFO handle{rpc.method=\"SayHello\"}: "),
            "{line}"
        );
        assert!(line.contains("greeting user=7"), "{line}");
        assert_eq!(trace_id.len(), 32);
        assert!(
            line.ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
            "{line}"
        );
    }

    #[test]
    fn a_child_span_shares_the_trace_but_not_the_span_id() {
        let out = Captured::default();
        with_console(&out, || {
            let parent = tracing::info_span!("parent");
            let _p = parent.enter();
            tracing::info!("in parent");
            let child = tracing::info_span!("child");
            let _c = child.enter();
            tracing::info!("in child");
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        let ids = |line: &str| {
            let trace = line.split("trace_id=").nth(1).unwrap()[..32].to_owned();
            let span = line.split("span_id=").nth(1).unwrap().to_owned();
            (trace, span)
        };
        let (parent_trace, parent_span) = ids(&lines[0]);
        let (child_trace, child_span) = ids(&lines[1]);
        assert_eq!(parent_trace, child_trace);
        assert_ne!(parent_span, child_span);
        assert!(lines[1].contains("parent:child: "), "{}", lines[1]);
    }

    #[test]
    fn lines_outside_spans_have_no_ids_and_the_filter_applies() {
        let out = Captured::default();
        with_console(&out, || {
            tracing::info!("starting");
            tracing::debug!("hidden");
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(!lines[0].contains("trace_id="), "{}", lines[0]);
        assert!(lines[0].contains(" INFO "), "{}", lines[0]);
    }

    #[test]
    fn an_invalid_filter_is_refused() {
        let pipeline = Pipeline::build(&TelemetryConfig::new("svc")).unwrap();
        let err = subscriber("sinew=loud", pipeline.tracer())
            .map(drop)
            .unwrap_err();
        assert_eq!(err.key(), Some("log_filter"));
        let err = console_subscriber("sinew=loud").map(drop).unwrap_err();
        assert_eq!(err.key(), Some("log_filter"));
    }
}
