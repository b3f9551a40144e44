//! A scripted inner service for the retry and hedge tests, in the manner of
//! `tower-test`: each call takes the next step of the script (the last one
//! repeats), and every call's arrival is recorded.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::Service;

use super::policy::PUSHBACK;

/// The response header that names the attempt a response came from.
pub(crate) const ATTEMPT: &str = "x-attempt";

#[derive(Debug, Clone)]
enum Reply {
    /// A trailers-only response with this status, and maybe a pushback.
    Status(Code, Option<&'static str>),
    /// Response headers without a status: the server is answering.
    Committed,
    /// An error from a connection that could not be made.
    ConnectError,
    /// Never answers.
    Hang,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    reply: Reply,
    after: Duration,
    /// Read this many request frames (all when `None`) before answering.
    read: Option<usize>,
}

pub(crate) fn status(code: Code) -> Step {
    Step::new(Reply::Status(code, None))
}

pub(crate) fn pushback(code: Code, value: &'static str) -> Step {
    Step::new(Reply::Status(code, Some(value)))
}

pub(crate) fn committed() -> Step {
    Step::new(Reply::Committed)
}

pub(crate) fn connect_error() -> Step {
    Step::new(Reply::ConnectError)
}

pub(crate) fn hang() -> Step {
    Step::new(Reply::Hang)
}

impl Step {
    fn new(reply: Reply) -> Self {
        Self {
            reply,
            after: Duration::ZERO,
            read: None,
        }
    }

    /// Answers `ms` milliseconds after the request arrived.
    pub(crate) fn after(self, ms: u64) -> Self {
        Self {
            after: Duration::from_millis(ms),
            ..self
        }
    }

    /// Reads only `frames` request frames before answering.
    pub(crate) fn reading(self, frames: usize) -> Self {
        Self {
            read: Some(frames),
            ..self
        }
    }
}

/// What the mock saw of one call.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) at: Instant,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
    /// Dropped before it answered.
    pub(crate) cancelled: bool,
}

#[derive(Debug)]
struct State {
    script: VecDeque<Step>,
    seen: Vec<Seen>,
}

/// The scripted service; clones share the script and the record.
#[derive(Debug, Clone)]
pub(crate) struct Mock {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mock {
    pub(crate) fn new(script: impl IntoIterator<Item = Step>) -> Self {
        let script: VecDeque<Step> = script.into_iter().collect();
        assert!(!script.is_empty(), "a script needs a step");
        Self {
            state: Arc::new(Mutex::new(State {
                script,
                seen: Vec::new(),
            })),
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    pub(crate) fn calls(&self) -> usize {
        lock(&self.state).seen.len()
    }

    /// Arrival times, in milliseconds since `start`.
    pub(crate) fn times(&self, start: Instant) -> Vec<u64> {
        self.seen()
            .iter()
            .map(|seen| (seen.at - start).as_millis() as u64)
            .collect()
    }

    /// The value of request header `name` on each call.
    pub(crate) fn header(&self, name: &str) -> Vec<Option<String>> {
        self.seen()
            .iter()
            .map(|seen| {
                seen.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            })
            .collect()
    }
}

/// Marks a call cancelled if its future is dropped before it answers.
struct Guard {
    state: Arc<Mutex<State>>,
    index: usize,
    answered: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.answered {
            lock(&self.state).seen[self.index].cancelled = true;
        }
    }
}

type MockFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, crate::BoxError>> + Send>>;

impl Service<http::Request<Body>> for Mock {
    type Response = http::Response<Body>;
    type Error = crate::BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (index, step) = {
            let mut state = lock(&self.state);
            let index = state.seen.len();
            state.seen.push(Seen {
                at: Instant::now(),
                headers: request.headers().clone(),
                body: Vec::new(),
                cancelled: false,
            });
            let step = if state.script.len() > 1 {
                state.script.pop_front()
            } else {
                state.script.front().cloned()
            };
            (index, step.expect("a step"))
        };
        let state = self.state.clone();
        Box::pin(async move {
            let mut guard = Guard {
                state: state.clone(),
                index,
                answered: false,
            };
            let mut body = request.into_body();
            let mut bytes = Vec::new();
            let mut frames = 0;
            while step.read.is_none_or(|read| frames < read) {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            bytes.extend_from_slice(data);
                        }
                        frames += 1;
                    }
                    _ => break,
                }
            }
            lock(&state).seen[index].body = bytes;
            tokio::time::sleep(step.after).await;
            let attempt = HeaderValue::from(index);
            let reply = match step.reply {
                Reply::Status(code, pushback) => {
                    let mut response = Status::new(code, "scripted").into_http::<Body>();
                    if let Some(value) = pushback {
                        response
                            .headers_mut()
                            .insert(PUSHBACK, HeaderValue::from_static(value));
                    }
                    response.headers_mut().insert(ATTEMPT, attempt);
                    Ok(response)
                }
                Reply::Committed => {
                    let mut response =
                        http::Response::new(Body::new(Full::new(Bytes::from_static(b"answer"))));
                    response.headers_mut().insert(ATTEMPT, attempt);
                    Ok(response)
                }
                Reply::ConnectError => Err(Box::new(tonic::ConnectError(Box::new(io::Error::from(
                    io::ErrorKind::ConnectionRefused,
                )))) as crate::BoxError),
                Reply::Hang => std::future::pending().await,
            };
            guard.answered = true;
            reply
        })
    }
}
