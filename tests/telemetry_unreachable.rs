//! An unreachable collector never fails or blocks requests: spans that
//! cannot be exported are dropped and counted, off the request path.
//!
//! Telemetry is process-wide, so this file holds one test.

mod common;

use std::time::Duration;

use common::{ClosedPort, Scripted, echo, echo_client, serve_echo};
use sinew::telemetry::{TelemetryConfig, init_with};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_while_the_collector_is_down() {
    // A port where nothing listens.
    let port = ClosedPort::new();
    let closed = port.addr();
    let telemetry = init_with(
        TelemetryConfig::new("lonely")
            .endpoint(format!("http://{closed}"))
            .export_timeout(Duration::from_millis(300))
            .schedule_delay(Duration::from_millis(50))
            .max_queue_size(64)
            .metric_export_interval(Duration::from_millis(100)),
    )
    .expect("telemetry installs even if the collector is down");

    let script = Scripted::failing(0, Code::Ok);
    let server = serve_echo(script.clone()).await;
    let mut client = echo_client(&[server.addr], |c| c).await;
    let calls = tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..300 {
            client
                .post(echo(&format!("{i}")))
                .await
                .expect("every call succeeds");
        }
    })
    .await;
    assert!(calls.is_ok(), "calls were held up by the exporter");
    assert_eq!(script.calls(), 300);

    // 600 spans against a 64-span queue and a dead endpoint: some are
    // dropped or fail to export, and are counted.
    let _ = tokio::time::timeout(Duration::from_secs(5), sinew::telemetry::flush()).await;
    assert!(
        telemetry.dropped_spans() + telemetry.failed_spans() > 0,
        "dropped {} failed {}",
        telemetry.dropped_spans(),
        telemetry.failed_spans()
    );
    server.stop().await;
    let shutdown = tokio::time::timeout(Duration::from_secs(15), telemetry.shutdown()).await;
    assert!(
        shutdown.is_ok(),
        "shutdown is bounded with the collector down"
    );
}
