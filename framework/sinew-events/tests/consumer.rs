//! The consumer's rules, on the in-memory broker under paused time:
//! acknowledgement, redelivery by the backoff list, dead letters (with the
//! reason and delivery count), panics, bad input, shared work and order.

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use sinew_events::Delivery as _;
use sinew_events::{
    Broker, Consumer, ConsumerConfig, DEAD_DELIVERIES, DEAD_GROUP, DEAD_REASON, DEAD_SUBJECT,
    Envelope, Event, Handler, HandlerError, MemoryBroker, Received,
};
use tokio::time::Instant;

test_event!(Placed, "shop.orders.placed");
test_event!(Other, "shop.orders.other");

const SECOND: Duration = Duration::from_secs(1);

fn placed(order: &str, n: u64) -> Placed {
    Placed {
        order_id: order.into(),
        n,
    }
}

/// What a handler saw: (n, delivery count, when), in order.
type Seen = Arc<Mutex<Vec<(u64, u64, Instant)>>>;

/// A handler that records each delivery, then does what `then` does.
fn recording<F, Fut>(seen: &Seen, then: F) -> impl Handler<Placed>
where
    F: Fn(Received<Placed>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let seen = seen.clone();
    move |ev: Received<Placed>| {
        seen.lock()
            .unwrap()
            .push((ev.event.n, ev.delivered, Instant::now()));
        then(ev)
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new("g")
        .max_deliver(3)
        .backoff([SECOND, 4 * SECOND])
        .ack_wait(30 * SECOND)
}

async fn settle() {
    // Paused time: sleeping lets every task run to its next wait.
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn handled_events_are_acknowledged_once() {
    let broker = MemoryBroker::new();
    let seen: Seen = Arc::default();
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config(),
        recording(&seen, |_: Received<Placed>| async move { Ok(()) }),
    )
    .await
    .unwrap();
    for n in 0..3 {
        broker
            .publish(&Envelope::new(&placed("o-1", n)))
            .await
            .unwrap();
    }
    settle().await;
    // Well past ack_wait: nothing comes again.
    tokio::time::sleep(120 * SECOND).await;
    let seen: Vec<(u64, u64)> = seen.lock().unwrap().iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(seen, [(0, 1), (1, 1), (2, 1)]);
    assert!(broker.messages("sinew.dead.g").is_empty());
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_come_again_after_the_backoff_then_dead_letter() {
    let broker = MemoryBroker::new();
    let seen: Seen = Arc::default();
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config(),
        recording(&seen, |_: Received<Placed>| async move {
            Err(HandlerError::retry("inventory service down"))
        }),
    )
    .await
    .unwrap();
    let envelope = Envelope::new(&placed("o-1", 7));
    broker.publish(&envelope).await.unwrap();
    tokio::time::sleep(60 * SECOND).await;

    let seen = seen.lock().unwrap().clone();
    let deliveries: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(deliveries, [1, 2, 3], "max_deliver is 3");
    // Redeliveries wait by the backoff list.
    assert_eq!(seen[1].2 - seen[0].2, SECOND);
    assert_eq!(seen[2].2 - seen[1].2, 4 * SECOND);

    let dead = broker.messages("sinew.dead.g");
    assert_eq!(dead.len(), 1, "one dead letter");
    let (headers, payload) = &dead[0];
    assert_eq!(payload, &envelope.payload);
    assert_eq!(headers.get(DEAD_DELIVERIES).unwrap().as_str(), "3");
    assert_eq!(
        headers.get(DEAD_SUBJECT).unwrap().as_str(),
        "shop.orders.placed"
    );
    assert_eq!(headers.get(DEAD_GROUP).unwrap().as_str(), "g");
    assert!(
        headers
            .get(DEAD_REASON)
            .unwrap()
            .as_str()
            .contains("inventory service down")
    );
    // The dead letter is still an event that can be read back.
    assert_eq!(
        Envelope::from_message("shop.orders.placed", Some(headers), payload.clone())
            .unwrap()
            .event::<Placed>()
            .unwrap(),
        placed("o-1", 7)
    );
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_dead_lettered_at_once_and_the_consumer_goes_on() {
    let broker = MemoryBroker::new();
    let seen: Seen = Arc::default();
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config(),
        recording(&seen, move |ev: Received<Placed>| async move {
            if ev.event.n == 0 {
                Err(HandlerError::permanent("order for an unknown customer"))
            } else {
                Ok(())
            }
        }),
    )
    .await
    .unwrap();
    broker
        .publish(&Envelope::new(&placed("o-1", 0)))
        .await
        .unwrap();
    broker
        .publish(&Envelope::new(&placed("o-2", 1)))
        .await
        .unwrap();
    tokio::time::sleep(60 * SECOND).await;
    let seen: Vec<(u64, u64)> = seen.lock().unwrap().iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(seen, [(0, 1), (1, 1)]);
    let dead = broker.messages("sinew.dead.g");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.get(DEAD_DELIVERIES).unwrap().as_str(), "1");
    assert!(
        dead[0]
            .0
            .get(DEAD_REASON)
            .unwrap()
            .as_str()
            .starts_with("permanent: ")
    );
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_retried() {
    let broker = MemoryBroker::new();
    let calls = Arc::new(Mutex::new(0));
    let count = calls.clone();
    let consumer =
        Consumer::start::<Placed, _, _>(&broker, config(), move |_: Received<Placed>| {
            let count = count.clone();
            async move {
                let n = {
                    let mut calls = count.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                assert!(n > 1, "first delivery panics");
                Ok(())
            }
        })
        .await
        .unwrap();
    broker
        .publish(&Envelope::new(&placed("o-1", 0)))
        .await
        .unwrap();
    tokio::time::sleep(10 * SECOND).await;
    assert_eq!(*calls.lock().unwrap(), 2);
    assert!(broker.messages("sinew.dead.g").is_empty());
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_dead_lettered_with_the_reason() {
    let broker = MemoryBroker::new();
    let seen: Seen = Arc::default();
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config(),
        recording(&seen, |_: Received<Placed>| async move { Ok(()) }),
    )
    .await
    .unwrap();
    let subject = Placed::SUBJECT.to_owned();
    // No headers at all.
    broker
        .publish_raw(subject.clone(), Default::default(), "junk".into())
        .await
        .unwrap();
    // Another event type on the subject.
    let other = Envelope::new(&Other {
        order_id: "o-9".into(),
        n: 9,
    });
    broker
        .publish_raw(subject.clone(), other.headers(), other.payload.clone())
        .await
        .unwrap();
    // A payload that does not decode.
    let good = Envelope::new(&placed("o-1", 1));
    let mut corrupt = Envelope::new(&placed("o-1", 2));
    corrupt.payload = vec![0x0a, 0xff, 0xff].into();
    broker
        .publish_raw(subject.clone(), corrupt.headers(), corrupt.payload.clone())
        .await
        .unwrap();
    // And a good one after them all.
    broker.publish(&good).await.unwrap();
    tokio::time::sleep(10 * SECOND).await;

    let seen: Vec<u64> = seen.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(seen, [1], "only the good event reaches the handler");
    let reasons: Vec<String> = broker
        .messages("sinew.dead.g")
        .iter()
        .map(|(h, _)| h.get(DEAD_REASON).unwrap().as_str().to_owned())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("Nats-Msg-Id"), "{}", reasons[0]);
    assert!(
        reasons[1].contains("unexpected event type `test.Other`"),
        "{}",
        reasons[1]
    );
    assert!(reasons[2].contains("does not decode"), "{}", reasons[2]);
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_ack_wait_is_dropped_and_retried_then_dead_lettered() {
    let broker = MemoryBroker::new();
    let seen: Seen = Arc::default();
    let config = config().ack_wait(5 * SECOND);
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config,
        recording(&seen, |_: Received<Placed>| {
            async move {
                // Hangs far past ack_wait.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }),
    )
    .await
    .unwrap();
    broker
        .publish(&Envelope::new(&placed("o-1", 0)))
        .await
        .unwrap();
    tokio::time::sleep(60 * SECOND).await;
    let seen = seen.lock().unwrap().clone();
    let deliveries: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(deliveries, [1, 2, 3], "up to max_deliver");
    // Each attempt ends at 9/10 of ack_wait, then waits out the backoff.
    assert_eq!(seen[1].2 - seen[0].2, Duration::from_millis(4500) + SECOND);
    assert_eq!(
        seen[2].2 - seen[1].2,
        Duration::from_millis(4500) + 4 * SECOND
    );
    let dead = broker.messages("sinew.dead.g");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .0
            .get(DEAD_REASON)
            .unwrap()
            .as_str()
            .contains("longer than 9/10 of ack_wait (4s 500ms)")
    );
    assert_eq!(dead[0].0.get(DEAD_DELIVERIES).unwrap().as_str(), "3");
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_event_whose_consumers_die_comes_once_more_to_be_dead_lettered() {
    let broker = MemoryBroker::new();
    let config = config().ack_wait(5 * SECOND);
    // Three members of the group take the event and die before acknowledging.
    let mut dying = broker.subscribe(Placed::SUBJECT, &config).await.unwrap();
    broker
        .publish(&Envelope::new(&placed("o-1", 0)))
        .await
        .unwrap();
    for expected in 1..=3 {
        let delivery = dying.next().await.unwrap().unwrap();
        assert_eq!(delivery.delivered(), expected);
        drop(delivery);
    }
    drop(dying);
    let seen: Seen = Arc::default();
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config,
        recording(&seen, |_: Received<Placed>| async move { Ok(()) }),
    )
    .await
    .unwrap();
    tokio::time::sleep(60 * SECOND).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "past max_deliver, not handled"
    );
    let dead = broker.messages("sinew.dead.g");
    assert_eq!(
        dead.len(),
        1,
        "the delivery after the last is dead-lettered"
    );
    assert!(
        dead[0]
            .0
            .get(DEAD_REASON)
            .unwrap()
            .as_str()
            .contains("delivery limit")
    );
    assert_eq!(dead[0].0.get(DEAD_DELIVERIES).unwrap().as_str(), "4");
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn members_of_a_group_share_the_work_and_groups_each_get_everything() {
    let broker = MemoryBroker::new();
    let handled: Arc<Mutex<HashMap<(String, u64), u32>>> = Arc::default();
    let mut consumers = Vec::new();
    for (group, member) in [("shipping", "a"), ("shipping", "b"), ("billing", "c")] {
        let handled = handled.clone();
        let consumer = Consumer::start::<Placed, _, _>(
            &broker,
            ConsumerConfig::new(group).max_ack_pending(4),
            move |ev: Received<Placed>| {
                let handled = handled.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    *handled
                        .lock()
                        .unwrap()
                        .entry((format!("{}/{member}", ev.group), ev.event.n))
                        .or_default() += 1;
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
        consumers.push(consumer);
    }
    for n in 0..100 {
        broker
            .publish(&Envelope::new(&placed(&format!("o-{n}"), n)))
            .await
            .unwrap();
    }
    tokio::time::sleep(60 * SECOND).await;
    let handled = handled.lock().unwrap().clone();
    assert!(handled.values().all(|&times| times == 1), "no event twice");
    for n in 0..100 {
        let shipping = ["shipping/a", "shipping/b"]
            .iter()
            .filter(|m| handled.contains_key(&((**m).to_owned(), n)))
            .count();
        assert_eq!(shipping, 1, "event {n} handled by one shipping member");
        assert!(handled.contains_key(&("billing/c".to_owned(), n)));
    }
    let by_a = handled.keys().filter(|k| k.0 == "shipping/a").count();
    assert!(by_a > 0 && by_a < 100, "both members worked: a took {by_a}");
    for consumer in consumers {
        consumer.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn with_one_pending_an_aggregate_is_handled_in_order_through_a_failure() {
    let broker = MemoryBroker::new();
    let seen: Seen = Arc::default();
    let failed_once = Arc::new(Mutex::new(false));
    let config = config().max_ack_pending(1);
    let consumer = Consumer::start::<Placed, _, _>(
        &broker,
        config,
        recording(&seen, move |ev: Received<Placed>| {
            let failed_once = failed_once.clone();
            async move {
                let mut failed = failed_once.lock().unwrap();
                if ev.event.n == 1 && !*failed {
                    *failed = true;
                    return Err(HandlerError::retry("not yet"));
                }
                Ok(())
            }
        }),
    )
    .await
    .unwrap();
    for n in 0..4 {
        broker
            .publish(&Envelope::new(&placed("o-1", n)))
            .await
            .unwrap();
    }
    tokio::time::sleep(60 * SECOND).await;
    let seen: Vec<(u64, u64)> = seen.lock().unwrap().iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(seen, [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]);
    consumer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_repeat_inside_the_deduplication_window_is_dropped() {
    let broker = MemoryBroker::with_limits(100, Duration::from_secs(120));
    let envelope = Envelope::new(&placed("o-1", 0));
    assert!(!broker.publish(&envelope).await.unwrap().duplicate);
    assert!(broker.publish(&envelope).await.unwrap().duplicate);
    tokio::time::sleep(Duration::from_secs(121)).await;
    assert!(!broker.publish(&envelope).await.unwrap().duplicate);
    assert_eq!(broker.messages(Placed::SUBJECT).len(), 2);
}

#[tokio::test]
async fn an_invalid_setting_is_refused_by_name() {
    let broker = MemoryBroker::new();
    let refused = Consumer::start::<Placed, _, _>(
        &broker,
        ConsumerConfig::new("no.dots"),
        |_: Received<Placed>| async { Ok(()) },
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(sinew_events::Error::Config {
                key: "consumer.group",
                ..
            })
        ),
        "{refused:?}"
    );
}
