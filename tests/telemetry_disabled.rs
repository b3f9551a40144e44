//! `OTEL_SDK_DISABLED=true` switches telemetry off: calls through the
//! scaffold and the client succeed and log to the console, without ids,
//! while a collector named by `OTEL_EXPORTER_OTLP_ENDPOINT` receives
//! nothing, no exporter thread starts, no runtime is needed to install it,
//! and a stale invalid setting does not stop the start.
//!
//! The variables are read from the real environment, as in production. A
//! test cannot safely set its own process's environment, and telemetry
//! installs once per process, so the test runs the body in a child process
//! of this binary, with the variables set, against a collector in the
//! parent.

mod common;

use std::process::Command;

use common::{Scripted, Unary, collector::Collector, echo, echo_client, serve_echo};
use opentelemetry::trace::TraceContextExt as _;
use sinew::telemetry::{TelemetryConfig, TelemetryError, VARIABLES, flush, init, init_with};
use sinew_workspace::proto::echo::v1::{EchoReply, EchoRequest};
use tonic::{Code, Request, Response, Status};

/// Marks the child process that runs [`child_serves_calls_with_telemetry_off`].
const CHILD: &str = "SINEW_TELEMETRY_DISABLED_TEST";

/// What the handler logs for each call.
const HANDLER_LINE: &str = "handling a call with telemetry off";

/// Logs each call, then answers as its [`Scripted`] does.
#[derive(Clone)]
struct Logged(Scripted);

#[tonic::async_trait]
impl Unary for Logged {
    async fn unary(
        &self,
        method: &'static str,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        tracing::info!(method, "{HANDLER_LINE}");
        self.0.unary(method, request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_telemetry_records_and_exports_nothing() {
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();

    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args([
            "--exact",
            "child_serves_calls_with_telemetry_off",
            "--nocapture",
            "--test-threads=1",
        ]);
        // Only what this test sets, whatever the developer's shell says.
        for variable in VARIABLES {
            child.env_remove(variable);
        }
        child
            .env(CHILD, "1")
            .env("OTEL_SDK_DISABLED", "TRUE")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "20")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "50")
            // Left over and invalid: enabled, it would fail the start.
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "child ran no test:\n{stdout}\n{stderr}"
    );

    // The console works, says why nothing is recorded, and names the
    // setting it ignored; its lines carry no ids.
    assert!(
        stderr.contains("telemetry is disabled by OTEL_SDK_DISABLED"),
        "{stderr}"
    );
    assert!(!stderr.contains("telemetry installed"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(" WARN ") && line.contains("OTEL_EXPORTER_OTLP_COMPRESSION")),
        "{stderr}"
    );
    assert!(stderr.contains(HANDLER_LINE), "{stderr}");
    assert!(stderr.contains("logged inside a span"), "{stderr}");
    assert!(!stderr.contains("trace_id="), "{stderr}");

    // The child has exited, after a flush and a shutdown that would have
    // sent anything recorded: the collector saw nothing at all.
    assert!(
        collector.trace_requests().is_empty(),
        "spans received: {:?}",
        collector.span_names()
    );
    assert!(
        collector.metric_requests().is_empty(),
        "metrics received: {:?}",
        collector.metric_names()
    );
}

/// The body of [`disabled_telemetry_records_and_exports_nothing`]; does
/// nothing unless run as its child.
#[test]
fn child_serves_calls_with_telemetry_off() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // Outside any runtime: were telemetry on, the endpoint would make this
    // fail with NoRuntime.
    let telemetry = init("quiet").expect("disabled telemetry installs without a runtime");

    // Still once per process, disabled or not.
    assert!(matches!(
        init("again"),
        Err(TelemetryError::AlreadyInstalled)
    ));
    assert!(matches!(
        init_with(TelemetryConfig::new("again").disabled(true)),
        Err(TelemetryError::AlreadyInstalled)
    ));

    // The subscriber is installed, but no OpenTelemetry layer gives spans
    // ids.
    assert!(tracing::dispatcher::has_been_set());
    tracing::info_span!("work").in_scope(|| {
        let cx = opentelemetry::Context::current();
        assert!(!cx.span().span_context().is_valid());
        tracing::info!("logged inside a span");
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let script = Scripted::failing(0, Code::Ok);
        let server = serve_echo(Logged(script.clone())).await;
        let mut client = echo_client(&[server.addr], |c| c).await;
        for i in 0..20 {
            let reply = client
                .put(echo(&format!("{i}")))
                .await
                .expect("calls succeed with telemetry off");
            assert_eq!(reply.into_inner().message, format!("{i} #{}", i + 1));
        }
        assert_eq!(script.calls(), 20);

        // No waiting for exports: had anything been recorded, the flush
        // and the shutdown below would send it before the child exits, and
        // the parent would find it at the collector.
        flush().await.expect("nothing to flush");
        assert_eq!(telemetry.dropped_spans(), 0);
        assert_eq!(telemetry.failed_spans(), 0);
        let exporters = exporter_threads();
        assert!(exporters.is_empty(), "exporter threads: {exporters:?}");

        server.stop().await;
        telemetry.shutdown().await.expect("nothing to shut down");
    });
}

/// The threads the span and metric exporters start when telemetry is on:
/// the SDK's batch processor and periodic reader (`OpenTelemetry.*`) and
/// sinew's OTLP runtime (`sinew-otlp`). Read from `/proc`, so Linux only;
/// elsewhere none are found.
fn exporter_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("OpenTelemetry") || name.starts_with("sinew-otlp"))
        .collect()
}
