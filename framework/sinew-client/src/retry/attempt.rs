//! One attempt of a call: the request it sends, and how it is sent.

use http::{HeaderName, HeaderValue, request::Parts};
use tonic::{Code, body::Body};
use tower::{Service, ServiceExt};

use tonic::GrpcMethod;

use crate::{
    CallDeadline, CallOptions, CallPolicy, CallState, DeadlineSpent, set_grpc_timeout,
    status_with_cause,
};

/// How many attempts a call made, the first included (for a hedged call:
/// how many copies were sent).
///
/// The retry and hedge layers insert it into the extensions of the
/// response they return, success or failure, whenever the outcome is a
/// response (a trailers-only status included). An `Err` outcome cannot
/// carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(pub u32);

/// gRFC A6: sent on every attempt after the first, with the number of
/// attempts before it.
pub(crate) const PREVIOUS_ATTEMPTS: HeaderName =
    HeaderName::from_static("grpc-previous-rpc-attempts");

/// What each attempt's request is made from: the call's request without
/// its body.
pub(crate) struct Template {
    parts: Parts,
    /// Set when the call's extensions can be rebuilt from their values
    /// (see [`Known`]); the first attempt is then sent the originals.
    known: Option<Known>,
    /// The original extensions went out with an attempt.
    originals_sent: bool,
    /// The original header map went out with an attempt.
    headers_sent: bool,
}

impl Template {
    pub(crate) fn new(parts: Parts) -> Self {
        let known = Known::of(&parts.extensions);
        Self {
            parts,
            known,
            originals_sent: false,
            headers_sent: false,
        }
    }

    /// The request of an attempt: a copy of the call's request with
    /// `body`, marked with the number of `previous` attempts, and with a
    /// `grpc-timeout` of what is left of `deadline`.
    pub(crate) fn request(
        &mut self,
        body: Body,
        previous: u32,
        deadline: Option<CallDeadline>,
    ) -> http::Request<Body> {
        let parts = &mut self.parts;
        let mut request = http::Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        // The first attempt gets the call's own header map, which has room
        // for the headers the layers below add; a copy has none, and the
        // first insert into it moves the whole map. Later attempts get
        // copies of the copy kept here.
        *request.headers_mut() = if self.headers_sent {
            parts.headers.clone()
        } else {
            self.headers_sent = true;
            let copy = parts.headers.clone();
            std::mem::replace(&mut parts.headers, copy)
        };
        *request.extensions_mut() = match &self.known {
            // Copying the extensions costs their map, its table and a box
            // per value, and most calls make one attempt: the first gets
            // the originals, and only a later one pays for a copy.
            Some(_) if !self.originals_sent => {
                self.originals_sent = true;
                std::mem::take(&mut parts.extensions)
            }
            Some(known) => known.extensions(),
            None => parts.extensions.clone(),
        };
        if previous > 0 {
            request
                .headers_mut()
                .insert(PREVIOUS_ATTEMPTS, HeaderValue::from(previous));
        }
        if let Some(deadline) = deadline {
            set_grpc_timeout(request.headers_mut(), deadline.remaining());
        }
        request
    }

    /// Puts the attempt count on a response outcome; see
    /// [`with_attempts`].
    pub(crate) fn with_attempts<B>(
        &mut self,
        result: Result<http::Response<B>, crate::BoxError>,
        attempts: u32,
    ) -> Result<http::Response<B>, crate::BoxError> {
        with_attempts(result, attempts, &mut self.parts.extensions)
    }
}

/// A call's extensions when every one of them is of a type that sinew or
/// tonic puts there (the client's record of the call, a policy, a
/// deadline, the caller's options, tonic's method name), kept as values:
/// equal extensions can be built again from them at any time. A call with
/// any other extension has its extensions copied for every attempt.
#[derive(Debug, Clone)]
struct Known {
    state: Option<CallState>,
    policy: Option<CallPolicy>,
    deadline: Option<CallDeadline>,
    options: Option<CallOptions>,
    method: Option<GrpcMethod<'static>>,
}

impl Known {
    fn of(extensions: &http::Extensions) -> Option<Self> {
        // The usual ones first (the client's record, tonic's method name):
        // once every extension is accounted for, the others cannot be
        // there, and are not looked for.
        let mut left = extensions.len();
        let state = take(extensions, &mut left);
        let method = take(extensions, &mut left);
        let options = take(extensions, &mut left);
        let policy = take(extensions, &mut left);
        let deadline = take(extensions, &mut left);
        (left == 0).then_some(Self {
            state,
            policy,
            deadline,
            options,
            method,
        })
    }

    /// Extensions equal to the call's.
    fn extensions(&self) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        if let Some(state) = self.state {
            extensions.insert(state);
        }
        if let Some(policy) = self.policy {
            extensions.insert(policy);
        }
        if let Some(deadline) = self.deadline {
            extensions.insert(deadline);
        }
        if let Some(options) = self.options {
            extensions.insert(options);
        }
        if let Some(method) = &self.method {
            extensions.insert(method.clone());
        }
        extensions
    }
}

/// The `T` in `extensions`, counted off `left`; not looked for once `left`
/// is zero.
fn take<T: Clone + Send + Sync + 'static>(
    extensions: &http::Extensions,
    left: &mut usize,
) -> Option<T> {
    if *left == 0 {
        return None;
    }
    let found = extensions.get::<T>().cloned();
    *left -= usize::from(found.is_some());
    found
}

/// Sends `request` on `service` (a clone: each attempt waits for its own
/// readiness), giving up with `DEADLINE_EXCEEDED` when `deadline` passes
/// before the response headers arrive.
pub(crate) async fn send<S, B>(
    mut service: S,
    request: http::Request<Body>,
    deadline: Option<CallDeadline>,
) -> Result<http::Response<B>, crate::BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<crate::BoxError>,
{
    // Under the deadline layer the deadline is already enforced on the
    // whole call: a second timer per attempt would only cost.
    let enforced = deadline.is_some_and(CallDeadline::is_enforced);
    let attempt = async move {
        service
            .ready()
            .await
            .map_err(Into::<crate::BoxError>::into)?
            .call(request)
            .await
            .map_err(Into::into)
    };
    if enforced {
        attempt.await
    } else {
        within(deadline, attempt).await
    }
}

/// Runs `work`, failing with `DEADLINE_EXCEEDED` if `deadline` passes
/// first (and dropping `work`).
pub(crate) async fn within<T>(
    deadline: Option<CallDeadline>,
    work: impl Future<Output = Result<T, crate::BoxError>>,
) -> Result<T, crate::BoxError> {
    match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline.at(), work)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded())),
    }
}

/// The call's deadline passed while it was under way.
pub(crate) fn deadline_exceeded() -> crate::BoxError {
    tonic::Status::deadline_exceeded("deadline exceeded").into()
}

/// The call's deadline had passed before its first attempt.
pub(crate) fn deadline_spent() -> crate::BoxError {
    status_with_cause(Code::DeadlineExceeded, "deadline exceeded", DeadlineSpent).into()
}

/// Puts the attempt count on a response outcome.
///
/// `spare` is the call's own request extensions, which the call no longer
/// needs (every attempt was sent a copy; empty if an attempt was sent the
/// originals). A response from the transport
/// has no extensions of its own, and a first insert costs a map and its
/// table on top of the value: the spare's map, emptied, takes the count
/// instead, so only the value is allocated. A response that has
/// extensions just gets the count added.
fn with_attempts<B>(
    result: Result<http::Response<B>, crate::BoxError>,
    attempts: u32,
    spare: &mut http::Extensions,
) -> Result<http::Response<B>, crate::BoxError> {
    result.map(|mut response| {
        let extensions = response.extensions_mut();
        if extensions.is_empty() {
            let mut reused = std::mem::take(spare);
            reused.clear();
            reused.insert(Attempts(attempts));
            *extensions = reused;
        } else {
            extensions.insert(Attempts(attempts));
        }
        response
    })
}
