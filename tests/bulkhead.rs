//! The bulkhead through the generated client: a bounded number of calls in
//! flight, a bounded wait queue with a timeout, RESOURCE_EXHAUSTED beyond.

mod common;

use std::time::Duration;

use common::{Scripted, echo_client, serve_echo};
use sinew::client::{BulkheadFull, bulkhead::BulkheadConfig, cause};
use sinew_workspace::proto::echo::v1::EchoRequest;
use tonic::Code;

fn slow(delay_ms: u32) -> EchoRequest {
    EchoRequest {
        message: "slow".to_owned(),
        delay_ms,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_slow_dependency_cannot_take_more_than_its_slots() {
    let script = Scripted::failing(0, Code::Ok);
    let server = serve_echo(script.clone()).await;
    let bulkhead = BulkheadConfig {
        max_concurrent: 2,
        max_queue: 1,
        queue_timeout: Duration::from_millis(100),
    };
    let client = echo_client(&[server.addr], |c| c.bulkhead(bulkhead)).await;

    // Two slow calls take both slots.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.post(slow(1_000)).await })
        })
        .collect();
    while script.calls() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A third waits in the queue; a fourth finds the queue full.
    let mut queued_client = client.clone();
    let queued = tokio::spawn(async move { queued_client.post(slow(0)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut full_client = client.clone();
    let status = full_client.post(slow(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        cause::<BulkheadFull>(&status),
        Some(&BulkheadFull { timed_out: false })
    );

    // The queued call gives up after the queue timeout.
    let status = queued.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        cause::<BulkheadFull>(&status),
        Some(&BulkheadFull { timed_out: true })
    );
    assert_eq!(
        script.calls(),
        2,
        "only the admitted calls reached the server"
    );

    for call in busy {
        call.await.unwrap().expect("the admitted calls complete");
    }
    // Slots are free again.
    let mut client = client.clone();
    client
        .post(slow(0))
        .await
        .expect("admitted once slots free up");
    server.stop().await;
}

#[tokio::test]
async fn without_a_bulkhead_calls_are_not_bounded() {
    let script = Scripted::failing(0, Code::Ok);
    let server = serve_echo(script.clone()).await;
    let client = echo_client(&[server.addr], |c| c.bulkhead(None)).await;

    // More slow calls at once than the default bulkhead would admit with
    // its queue (100 + 50): every one reaches the server.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.post(slow(200)).await })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap().expect("no bulkhead refuses it");
        assert!(reply.into_inner().message.starts_with("slow #"));
    }
    assert_eq!(script.calls(), 200);
    server.stop().await;
}
