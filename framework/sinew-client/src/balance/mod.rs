//! Client-side load balancing over several endpoints.
//!
//! [`Balance`] spreads calls with the power of two choices: it draws two
//! endpoints at random (with the client's seeded [`Rng`](super::Rng)) and
//! sends to the one that costs less, which steers load away from slow
//! endpoints without any global coordination. The cost is peak EWMA, as in
//! linkerd and Finagle: an estimate of the endpoint's latency times its
//! calls outstanding plus one. Costs within a factor of two count as
//! equal, and then the one with fewer calls outstanding wins: endpoints of
//! about the same latency share a light load evenly instead of one taking
//! every call for having answered fastest lately.
//!
//! - The latency is the time to the response headers. One slower than the
//!   estimate replaces it at once; faster ones pull it down gradually;
//!   without news it decays towards zero with a 10s time constant, so an
//!   endpoint avoided for being slow is tried again in time.
//! - A call dropped unanswered (its deadline passed on a server that went
//!   silent, or its caller gave up), or that failed without response
//!   headers (its connection was closed as silent), counts the time it
//!   waited, if that is above the estimate. A silent endpoint looks slow after one such call
//!   and is passed over; its breaker ejects it if its calls keep timing
//!   out.
//!
//! An endpoint is passed over while it is ejected:
//!
//! - its circuit breaker is open ([`Availability`]; outlier ejection), until
//!   the breaker lets a probe through and the probe succeeds;
//! - its connection attempts are failing, for a reconnect backoff that
//!   doubles from [`ReconnectBackoff::initial`] up to its maximum, with
//!   jitter, and resets on the first success.
//!
//! When every endpoint is ejected, calls fail at once with `UNAVAILABLE`:
//! with the cause [`BreakerOpen`](super::BreakerOpen) when a breaker is
//! open (the call is handed to that endpoint's breaker, which refuses it
//! without the network), else [`NoEndpoint`](super::NoEndpoint).
//!
//! The endpoints come from [`Discovery`]: a static list, or a DNS name that
//! is re-resolved periodically. Endpoints that stay in the answer keep
//! their connections and breaker state; new ones are added, gone ones
//! dropped.

mod discover;
mod endpoint;
mod future;
mod load;
mod service;

pub use discover::{Discovery, DiscoveryError, Target};
pub use endpoint::{InFlight, InFlightBody, ReconnectBackoff};
pub use future::ResponseFuture;
pub use service::Balance;
#[cfg(test)]
pub(crate) use service::is_connect_error;

use tokio::time::Instant;

/// Whether an endpoint can take calls now. A circuit breaker implements it
/// so that the balancer ejects endpoints whose breaker is open.
pub trait Availability {
    /// False while the endpoint must not be sent calls.
    fn is_available(&self, now: Instant) -> bool;
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        future::Future,
        pin::Pin,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
        task::{Context, Poll},
        time::Duration,
    };

    use tokio::time::Instant;
    use tonic::{Code, body::Body};
    use tower::{Service, ServiceExt};

    use super::*;
    use crate::{
        BoxError, {NoEndpoint, Rng, cause},
    };

    /// A scripted endpoint: counts hits, can be ejected, can refuse
    /// connections.
    #[derive(Clone, Default)]
    struct Mock {
        hits: Arc<AtomicUsize>,
        ejected: Arc<AtomicBool>,
        refusing: Arc<AtomicBool>,
        /// Answers after this long (milliseconds); `u64::MAX` never.
        delay_ms: Arc<std::sync::atomic::AtomicU64>,
    }

    impl Availability for Mock {
        fn is_available(&self, _now: Instant) -> bool {
            !self.ejected.load(Ordering::SeqCst)
        }
    }

    impl Service<http::Request<Body>> for Mock {
        type Response = http::Response<Body>;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
            self.hits.fetch_add(1, Ordering::SeqCst);
            let refusing = self.refusing.load(Ordering::SeqCst);
            let delay_ms = self.delay_ms.load(Ordering::SeqCst);
            Box::pin(async move {
                match delay_ms {
                    0 => {}
                    u64::MAX => std::future::pending::<()>().await,
                    ms => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
                if refusing {
                    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                    return Err(Box::new(refused) as BoxError);
                }
                // A body that never ends keeps the call outstanding.
                let never = futures_util::stream::pending::<
                    Result<http_body::Frame<bytes::Bytes>, BoxError>,
                >();
                Ok(http::Response::new(Body::new(
                    http_body_util::StreamBody::new(never),
                )))
            })
        }
    }

    async fn balancer(names: &[&str], seed: u64) -> (Balance<Mock>, HashMap<String, Mock>) {
        let mocks: HashMap<String, Mock> = names
            .iter()
            .map(|n| (format!("http://{n}:1/"), Mock::default()))
            .collect();
        let by_key = mocks.clone();
        let discovery = Discovery::fixed(names.iter().map(|n| format!("http://{n}:1"))).unwrap();
        let balance = Balance::discover(
            discovery,
            move |target| by_key[target.key()].clone(),
            Arc::new(Rng::seeded(seed)),
            ReconnectBackoff::default(),
        )
        .await
        .unwrap();
        (balance, mocks)
    }

    fn hits(mocks: &HashMap<String, Mock>, name: &str) -> usize {
        mocks[&format!("http://{name}:1/")]
            .hits
            .load(Ordering::SeqCst)
    }

    async fn call(balance: &Balance<Mock>) -> Result<http::Response<InFlightBody<Body>>, BoxError> {
        balance
            .clone()
            .oneshot(http::Request::new(Body::empty()))
            .await
    }

    // Paused, so that every answer takes no time and only the calls
    // outstanding tell the endpoints apart.
    #[tokio::test(start_paused = true)]
    async fn outstanding_calls_steer_the_choice() {
        let (balance, mocks) = balancer(&["a", "b"], 7).await;
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(call(&balance).await.unwrap());
        }
        // With two endpoints both are always drawn: the one with fewer
        // outstanding calls wins, so they stay within one of each other.
        assert_eq!(hits(&mocks, "a"), 5);
        assert_eq!(hits(&mocks, "b"), 5);
        drop(held);
    }

    fn delay(mocks: &HashMap<String, Mock>, name: &str, ms: u64) {
        mocks[&format!("http://{name}:1/")]
            .delay_ms
            .store(ms, Ordering::SeqCst);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_endpoint_is_passed_over_once_it_has_been_slow() {
        let (balance, mocks) = balancer(&["fast", "slow"], 11).await;
        delay(&mocks, "fast", 1);
        delay(&mocks, "slow", 100);
        // One call at a time: both always have nothing outstanding, so
        // only the latency tells them apart.
        for _ in 0..50 {
            drop(call(&balance).await.unwrap());
        }
        assert!(
            hits(&mocks, "slow") <= 1,
            "slow got {} of 50",
            hits(&mocks, "slow")
        );

        // Without news its estimate decays (fast's too, but fast's next
        // answer sets it back to 1ms), and it is tried again.
        tokio::time::sleep(Duration::from_secs(120)).await;
        delay(&mocks, "slow", 1);
        for _ in 0..50 {
            drop(call(&balance).await.unwrap());
        }
        assert!(hits(&mocks, "slow") > 5, "tried again once decayed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_endpoint_is_passed_over_after_one_call_times_out() {
        let (balance, mocks) = balancer(&["live", "silent"], 4).await;
        delay(&mocks, "silent", u64::MAX);
        let mut timed_out = 0;
        for _ in 0..50 {
            // What the deadline layer above does at the call's deadline.
            match tokio::time::timeout(Duration::from_millis(200), call(&balance)).await {
                Ok(response) => drop(response.unwrap()),
                Err(_elapsed) => timed_out += 1,
            }
        }
        assert_eq!(hits(&mocks, "silent"), timed_out);
        assert!(
            timed_out <= 1,
            "{timed_out} of 50 went to the silent endpoint"
        );
    }

    #[tokio::test]
    async fn an_ejected_endpoint_gets_no_calls_until_it_is_back() {
        let (balance, mocks) = balancer(&["a", "b", "c"], 3).await;
        mocks["http://b:1/"].ejected.store(true, Ordering::SeqCst);
        for _ in 0..30 {
            drop(call(&balance).await.unwrap());
        }
        assert_eq!(hits(&mocks, "b"), 0);
        assert_eq!(hits(&mocks, "a") + hits(&mocks, "c"), 30);

        mocks["http://b:1/"].ejected.store(false, Ordering::SeqCst);
        for _ in 0..30 {
            drop(call(&balance).await.unwrap());
        }
        assert!(hits(&mocks, "b") > 0, "b takes calls again once available");
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_backing_off_calls_fail_fast() {
        let (balance, mocks) = balancer(&["a", "b"], 1).await;
        for mock in mocks.values() {
            mock.refusing.store(true, Ordering::SeqCst);
        }
        while hits(&mocks, "a") == 0 || hits(&mocks, "b") == 0 {
            drop(call(&balance).await);
        }
        let before = hits(&mocks, "a") + hits(&mocks, "b");
        let status = tonic::Status::from_error(call(&balance).await.unwrap_err());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(cause::<NoEndpoint>(&status).is_some());
        assert_eq!(hits(&mocks, "a") + hits(&mocks, "b"), before);
    }

    #[tokio::test]
    async fn with_every_breaker_open_the_call_goes_to_a_breaker_to_refuse() {
        let (balance, mocks) = balancer(&["a", "b"], 1).await;
        for mock in mocks.values() {
            mock.ejected.store(true, Ordering::SeqCst);
        }
        // The mock stands in for a breaker: it is handed the call.
        drop(call(&balance).await);
        assert_eq!(hits(&mocks, "a") + hits(&mocks, "b"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_endpoint_backs_off_then_is_tried_again() {
        let (balance, mocks) = balancer(&["a", "b"], 5).await;
        mocks["http://a:1/"].refusing.store(true, Ordering::SeqCst);
        // Until a is drawn and refuses once.
        while hits(&mocks, "a") == 0 {
            drop(call(&balance).await);
        }
        let before = hits(&mocks, "a");
        for _ in 0..20 {
            drop(call(&balance).await.unwrap());
        }
        assert_eq!(
            hits(&mocks, "a"),
            before,
            "a is left alone while backing off"
        );

        // The first backoff is at most 100ms.
        tokio::time::sleep(Duration::from_millis(101)).await;
        mocks["http://a:1/"].refusing.store(false, Ordering::SeqCst);
        for _ in 0..20 {
            drop(call(&balance).await.unwrap());
        }
        assert!(
            hits(&mocks, "a") > before,
            "a is tried again after its backoff"
        );
    }

    #[tokio::test]
    async fn updates_keep_surviving_endpoints() {
        let (balance, _mocks) = balancer(&["a", "b"], 1).await;
        let before = balance.snapshot();
        let b = Target {
            key: "http://b:1/".to_owned(),
            connect: "http://b:1".parse().unwrap(),
            origin: "http://b:1".parse().unwrap(),
        };
        balance.update(&[b]);
        let after = balance.snapshot();
        assert_eq!(balance.endpoints(), ["http://b:1/"]);
        assert!(Arc::ptr_eq(&after[0], &before[1]), "b keeps its state");
    }
}
