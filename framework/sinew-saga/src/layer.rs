//! The participant's layer: reads and checks the key of each call.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tower::{Layer, Service};

use crate::key::IdempotencyKey;

/// The gRPC method a keyed call was made to (`/package.Service/Method`),
/// which [`IdempotencyLayer`] puts in the request's extensions next to its
/// [`IdempotencyKey`]: tonic gives handlers no path, and the store keeps
/// it to refuse a key reused for another method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledMethod(Arc<str>);

impl CalledMethod {
    /// A method's path, `/package.Service/Method`: for a request that
    /// did not come through the layer (a test, another transport), set
    /// with the [`IdempotencyKey`] in its extensions.
    pub fn new(path: &str) -> Self {
        Self(Arc::from(path))
    }

    /// The method's path, `/package.Service/Method`.
    pub fn path(&self) -> &str {
        &self.0
    }
}

/// A tower layer for a participant's service
/// (`Server::add_service_with(service, IdempotencyLayer::new())`): it
/// reads the call's [`HEADER`](crate::HEADER), checks it, and puts the
/// [`IdempotencyKey`] and the [`CalledMethod`] in the request's
/// extensions, where the handler finds them
/// (`request.extensions().get::<IdempotencyKey>()`) and
/// [`IdempotencyStore`](crate::IdempotencyStore) reads them.
///
/// A call with a malformed key (empty, over [`MAX_LEN`](crate::MAX_LEN)
/// bytes, not printable ASCII, or given twice) is refused with
/// `INVALID_ARGUMENT` before the handler runs; a call without a key
/// passes untouched.
///
/// The layer touches no database: whether a key was seen is known only
/// inside the transaction that records it with the handler's writes,
/// which the store does in the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdempotencyLayer {
    _private: (),
}

impl IdempotencyLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService { inner }
    }
}

/// The service [`IdempotencyLayer`] makes.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for IdempotencyService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = KeyedFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match IdempotencyKey::from_headers(request.headers()) {
            Ok(None) => {}
            Ok(Some(key)) => {
                let method = CalledMethod(Arc::from(request.uri().path()));
                let extensions = request.extensions_mut();
                extensions.insert(key);
                extensions.insert(method);
            }
            Err(error) => {
                tracing::debug!(%error, "idempotency: call refused");
                let refused = tonic::Status::from(error).into_http();
                return KeyedFuture::Refused {
                    response: Some(refused),
                };
            }
        }
        KeyedFuture::Inner {
            future: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`IdempotencyService`].
    #[project = KeyedProject]
    #[allow(missing_docs)]
    pub enum KeyedFuture<F, B> {
        /// The inner service's answer.
        Inner { #[pin] future: F },
        /// A refusal, answered at once.
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B, E> Future for KeyedFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            KeyedProject::Inner { future } => future.poll(cx),
            KeyedProject::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}
