//! Client deadlines: every call has one, and budgets shrink across hops.
//!
//! A call's deadline is the sooner of:
//!
//! - its own timeout: the caller's [`CallOptions`](super::CallOptions), else
//!   the method's timeout from the contract or service config (carried in
//!   the [`CallPolicy`](super::CallPolicy)), else the layer's default;
//! - the deadline of the incoming call whose handler is making this call
//!   ([`Deadline::current`](sinew_core::deadline::Deadline::current), set by the
//!   server scaffold), less a small headroom so the answer can travel back
//!   in time.
//!
//! A call whose deadline has already passed fails at once with
//! `DEADLINE_EXCEEDED` (cause [`DeadlineSpent`](super::DeadlineSpent)) and
//! never touches the network. Otherwise the deadline is sent as
//! `grpc-timeout`, recorded as a [`CallDeadline`](super::CallDeadline) in
//! the request's extensions for the retry and hedging layers (inside the
//! [`Client`](super::Client), in its record of the call), and enforced
//! here: past it, the call fails with `DEADLINE_EXCEEDED`, whether it is
//! still waiting for its response or still streaming it.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::ClientDeadlineLayer;
pub use service::ClientDeadline;
pub use sinew_core::deadline::DeadlineBody;

use std::time::Duration;

#[cfg(test)]
use tower::Layer;

/// The default headroom kept from an inherited deadline: 5ms, enough for a
/// reply to travel back over a data-centre network.
pub const DEFAULT_HEADROOM: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use tokio::time::Instant;
    use tonic::{Code, body::Body};
    use tower::{Service, ServiceExt, service_fn};

    use super::*;
    use crate::{
        BoxError, {CallDeadline, CallOptions, DeadlineSpent, cause},
    };
    use sinew_core::deadline::Deadline;

    type Seen = Arc<std::sync::Mutex<Vec<(Option<String>, Option<CallDeadline>)>>>;

    /// An inner service that answers after `delay`, recording the
    /// grpc-timeout header and CallDeadline it saw.
    #[allow(
        clippy::disallowed_types,
        reason = "a test's record, never held across await"
    )]
    fn inner(
        delay: Duration,
        calls: Arc<AtomicUsize>,
        seen: Seen,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = BoxError,
        Future = impl Future<Output = Result<http::Response<Body>, BoxError>> + Send,
    > + Clone {
        service_fn(move |request: http::Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let timeout = request
                .headers()
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock()
                .unwrap()
                .push((timeout, request.extensions().get::<CallDeadline>().copied()));
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, BoxError>(http::Response::new(Body::empty()))
            }
        })
    }

    fn status_of(error: BoxError) -> tonic::Status {
        tonic::Status::from_error(error)
    }

    #[tokio::test(start_paused = true)]
    async fn a_default_timeout_is_sent_and_enforced() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let mut svc = ClientDeadlineLayer::new(Some(Duration::from_millis(100))).layer(inner(
            Duration::from_secs(1),
            calls.clone(),
            seen.clone(),
        ));
        let start = Instant::now();
        let error = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap_err();
        assert_eq!(status_of(error).code(), Code::DeadlineExceeded);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0.as_deref(), Some("100m"));
        assert_eq!(
            seen[0].1,
            Some(CallDeadline::enforced(start + Duration::from_millis(100)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn call_options_win_over_the_default() {
        let seen = Seen::default();
        let mut svc = ClientDeadlineLayer::new(Some(Duration::from_secs(10))).layer(inner(
            Duration::ZERO,
            Arc::default(),
            seen.clone(),
        ));
        let mut request = http::Request::new(Body::empty());
        request
            .extensions_mut()
            .insert(CallOptions::timeout(Duration::from_millis(30)));
        svc.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(seen.lock().unwrap()[0].0.as_deref(), Some("30m"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_inherited_deadline_shrinks_the_budget_by_the_headroom() {
        let seen = Seen::default();
        let mut svc = ClientDeadlineLayer::new(Some(Duration::from_secs(10)))
            .headroom(Duration::from_millis(5))
            .layer(inner(Duration::ZERO, Arc::default(), seen.clone()));
        let incoming = Deadline::at(Instant::now() + Duration::from_millis(200));
        incoming
            .scope(async {
                svc.ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(Body::empty()))
                    .await
                    .unwrap();
            })
            .await;
        assert_eq!(seen.lock().unwrap()[0].0.as_deref(), Some("195m"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_fails_without_touching_the_network() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = ClientDeadlineLayer::new(None)
            .headroom(Duration::from_millis(5))
            .layer(inner(Duration::ZERO, calls.clone(), Seen::default()));
        // The incoming call has 3ms left: less than the headroom.
        let incoming = Deadline::at(Instant::now() + Duration::from_millis(3));
        let error = incoming
            .scope(async {
                svc.ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(Body::empty()))
                    .await
                    .unwrap_err()
            })
            .await;
        let status = status_of(error);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(cause::<DeadlineSpent>(&status).is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_timeout_anywhere_means_no_deadline() {
        let seen = Seen::default();
        let mut svc = ClientDeadlineLayer::new(None).layer(inner(
            Duration::ZERO,
            Arc::default(),
            seen.clone(),
        ));
        svc.ready()
            .await
            .unwrap()
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap()[0], (None, None));
    }
}
