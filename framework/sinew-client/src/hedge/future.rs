use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use pin_project_lite::pin_project;
use tokio::time::{Instant, sleep_until};
use tonic::body::Body;
use tower::Service;

use super::layer::Settings;
use crate::{
    CallDeadline, HedgingPolicy,
    retry::{self, Failure, Outcome, Pushback, Replay},
};

pin_project! {
    /// Response future of [`Hedge`](super::Hedge): the inner service's
    /// call for a request that is not hedged, or the whole hedged call
    /// (boxed: it holds every copy under way).
    pub struct ResponseFuture<S>
    where
        S: Service<http::Request<Body>>,
    {
        #[pin]
        inner: retry::ResponseFuture<S>,
    }
}

// === impl ResponseFuture ===

impl<S> ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
{
    pub(super) fn forward(inner: S, request: http::Request<Body>) -> Self {
        Self {
            inner: retry::ResponseFuture::forward(inner, request),
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
    pub(super) fn hedging(
        inner: S,
        settings: Settings,
        policy: HedgingPolicy,
        deadline: Option<CallDeadline>,
        request: http::Request<Body>,
    ) -> Self {
        Self {
            inner: retry::ResponseFuture::managed(Box::pin(run(
                inner, settings, policy, deadline, request,
            ))),
        }
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResponseFuture").field(&self.inner).finish()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<http::Request<Body>>,
    S::Error: Into<crate::BoxError>,
{
    type Output = Result<S::Response, crate::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// The hedged call: send copies on a schedule, take the first good
/// answer.
async fn run<S, B>(
    inner: S,
    settings: Settings,
    policy: HedgingPolicy,
    deadline: Option<CallDeadline>,
    request: http::Request<Body>,
) -> Result<http::Response<B>, crate::BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
{
    if deadline.is_some_and(|deadline| deadline.remaining().is_zero()) {
        return Err(retry::deadline_spent());
    }
    let (parts, body) = request.into_parts();
    let mut template = retry::Template::new(parts);
    let mut replay = retry::within(deadline, Replay::buffer(body, settings.buffer_limit)).await?;
    if !matches!(replay, Replay::Buffered(_)) {
        // Too large to keep a copy of: one plain attempt.
        let body = replay.next_body().unwrap_or_default();
        let request = template.request(body, 0, deadline);
        let result = retry::send(inner, request, deadline).await;
        return template.with_attempts(result, 1);
    }

    let max_copies = policy
        .max_attempts
        .clamp(1, settings.max_attempts_cap.max(1));
    let throttle = settings.throttle;
    let deadline_at = deadline.map(CallDeadline::at);
    let mut copies = FuturesUnordered::new();
    let mut sent = 0u32;
    let mut next_copy = Instant::now();
    // Pushback said stop, or the throttle did.
    let mut stopped = false;
    let mut last: Option<Failure<B>> = None;
    loop {
        let may_send = !stopped
            && sent < max_copies
            && deadline_at.is_none_or(|deadline| next_copy < deadline);
        if !may_send && copies.is_empty() {
            return match last {
                Some(failure) => template.with_attempts(failure.result, sent),
                // Unreachable: the first copy is always sent, and its
                // failure recorded. Fail safe all the same.
                None => Err(retry::deadline_exceeded()),
            };
        }
        tokio::select! {
            // Answers first: a failure that arrives when a copy is due
            // decides whether that copy goes.
            biased;
            Some(result) = copies.next(), if !copies.is_empty() => {
                let failure = match Outcome::of(result) {
                    Outcome::Success(response) => {
                        if let Some(throttle) = &throttle {
                            throttle.on_success();
                        }
                        // Returning drops the other copies: cancelled.
                        return template.with_attempts(Ok(response), sent);
                    }
                    Outcome::Failure(failure) => failure,
                };
                if !policy.non_fatal_codes.contains(failure.code) {
                    return template.with_attempts(failure.result, sent);
                }
                if let Some(throttle) = &throttle {
                    throttle.on_failure();
                }
                match failure.pushback {
                    Pushback::Stop => stopped = true,
                    Pushback::Wait(wait) => next_copy = Instant::now() + wait,
                    // gRFC A6: a non-fatal failure sends the next copy now.
                    Pushback::Absent => next_copy = Instant::now(),
                }
                last = Some(failure);
            }
            () = sleep_until(next_copy), if may_send => {
                if sent > 0 && throttle.as_ref().is_some_and(|throttle| !throttle.allows_retry()) {
                    stopped = true;
                    continue;
                }
                let body = replay.next_body().unwrap_or_default();
                let request = template.request(body, sent, deadline);
                // Copies are not bounded one by one: the deadline branch
                // below ends them all.
                if sent > 0 {
                    sinew_telemetry::events::hedge(request.uri().path(), sent + 1);
                }
                copies.push(retry::send(inner.clone(), request, None));
                sent += 1;
                next_copy = Instant::now() + policy.hedging_delay;
            }
            () = sleep_until(deadline_at.unwrap_or(next_copy)), if deadline_at.is_some() => {
                return Err(retry::deadline_exceeded());
            }
        }
    }
}
