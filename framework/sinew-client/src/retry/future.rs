use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Service, util::Oneshot};

use super::{
    attempt,
    layer::Settings,
    policy::{Outcome, Pushback, RetryState},
    replay::Replay,
};
use crate::{CallDeadline, CallPolicy};

/// A managed call, boxed, answering with `R`.
type BoxResponseFuture<R> =
    Pin<Box<dyn Future<Output = Result<R, crate::BoxError>> + Send + 'static>>;

pin_project! {
    /// Response future of [`Retry`](super::Retry): either the inner
    /// service's call, for a request without a `CallPolicy`, or the whole
    /// retrying call (boxed: it holds the attempts, the backoff and the
    /// replay buffer).
    pub struct ResponseFuture<S>
    where
        S: Service<http::Request<Body>>,
    {
        #[pin]
        kind: Kind<S>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S>
    where
        S: Service<http::Request<Body>>,
    {
        Forward {
            #[pin]
            call: Oneshot<S, http::Request<Body>>,
        },
        Managed {
            call: BoxResponseFuture<S::Response>,
        },
    }
}

// === impl ResponseFuture ===

impl<S> ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
{
    /// Passes `request` to `inner` untouched.
    pub(crate) fn forward(inner: S, request: http::Request<Body>) -> Self {
        Self {
            kind: Kind::Forward {
                call: Oneshot::new(inner, request),
            },
        }
    }

    /// Wraps a call that the layer manages itself.
    pub(crate) fn managed(call: BoxResponseFuture<S::Response>) -> Self {
        Self {
            kind: Kind::Managed { call },
        }
    }
}

impl<S, B> ResponseFuture<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    pub(super) fn retrying(
        inner: S,
        settings: Arc<Settings>,
        policy: CallPolicy,
        deadline: Option<CallDeadline>,
        request: http::Request<Body>,
    ) -> Self {
        Self::managed(Box::pin(run(inner, settings, policy, deadline, request)))
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
    S::Error: Into<crate::BoxError>,
{
    type Output = Result<S::Response, crate::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Forward { call } => call.poll(cx).map_err(Into::into),
            KindProj::Managed { call } => call.as_mut().poll(cx),
        }
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Forward { .. } => "Forward",
            Kind::Managed { .. } => "Managed",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

/// The retrying call: attempt, classify, decide, wait, again.
async fn run<S, B>(
    inner: S,
    settings: Arc<Settings>,
    policy: CallPolicy,
    deadline: Option<CallDeadline>,
    request: http::Request<Body>,
) -> Result<http::Response<B>, crate::BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
{
    if deadline.is_some_and(|deadline| deadline.remaining().is_zero()) {
        return Err(attempt::deadline_spent());
    }
    let (parts, body) = request.into_parts();
    let mut template = attempt::Template::new(parts);
    let mut replay = if policy.single_request() {
        // As for each attempt: a deadline the deadline layer enforces
        // needs no second timer here.
        let unenforced = deadline.filter(|deadline| !deadline.is_enforced());
        attempt::within(unenforced, Replay::buffer(body, settings.buffer_limit)).await?
    } else {
        Replay::stream(body, settings.replay_limit)
    };
    let mut state = RetryState::new(
        &policy,
        settings.throttle.as_ref(),
        &settings.rng,
        settings.max_attempts_cap,
    );
    let mut sent = 0u32;
    loop {
        // The first attempt always has a body; later ones only get here
        // after `can_replay` said yes.
        let body = replay.next_body().unwrap_or_default();
        let request = template.request(body, sent, deadline);
        let result = attempt::send(inner.clone(), request, deadline).await;
        sent += 1;
        let failure = match Outcome::of(result) {
            Outcome::Success(response) => {
                state.on_success();
                replay.commit();
                return template.with_attempts(Ok(response), sent);
            }
            Outcome::Failure(failure) => failure,
        };
        let wait = state.on_failure(&failure);
        if state.throttled() {
            sinew_telemetry::events::retry_throttled(policy.path);
        }
        let Some(wait) = wait.filter(|_| replay.can_replay()) else {
            return template.with_attempts(failure.result, sent);
        };
        // Never wait into the deadline: an attempt that could only start
        // at (or after) it would fail for sure, and the caller is better
        // served by the failure it has now.
        if let Some(deadline) = deadline
            && Instant::now() + wait >= deadline.at()
        {
            return template.with_attempts(failure.result, sent);
        }
        // Let go of the failed response (and so its HTTP/2 stream) now,
        // not after the wait.
        let transparent = state.transparent();
        let pushback = matches!(failure.pushback, Pushback::Wait(_));
        drop(failure);
        sinew_telemetry::events::retry(policy.path, sent + 1, wait, transparent, pushback);
        tokio::time::sleep(wait).await;
    }
}
