use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{
    Service, ServiceBuilder, ServiceExt as _,
    util::{Either, MapResponse, MapResponseLayer},
};

use super::{ClientConfig, ClientError, resolve::Resolver};
use crate::{
    BoxError,
    contract::{Contract, Idempotency, MethodInfo, Streaming},
    fault::{Fault, FaultLayer},
    {
        CallOptions, CallPolicy, CallState, Rng,
        balance::{Balance, InFlightBody, Target},
        breaker::{Breaker, BreakerBody, BreakerConfig, BreakerHandle},
        bulkhead::{Bulkhead, BulkheadLayer, SlotBody},
        connection::{ConnectSettings, Connection, ResponseBody},
        deadline::{ClientDeadline, ClientDeadlineLayer, DeadlineBody},
        hedge::{Hedge, HedgeLayer},
        retry::{Retry, RetryLayer, RetryThrottle},
        trace::{ClientTrace, ClientTraceLayer, RecordedBody},
    },
};

/// The layers of a client, outermost first, by name rather than boxed:
/// a boxed service costs an allocation per clone and per call.
type Inner = ClientTrace<ClientDeadline<Either<Bulkhead<Resilient>, Unbounded>>>;
/// Without a bulkhead, the calls' bodies are of the type a bulkhead gives
/// them, holding no slot.
type Unbounded = MapResponse<
    Resilient,
    fn(http::Response<EndpointBody>) -> http::Response<SlotBody<EndpointBody>>,
>;
/// Hedging and retries, over the balancer (with fault injection, if on).
type Resilient = Hedge<Retry<Either<Fault<Balance<Endpoint>>, Balance<Endpoint>>>>;
/// An endpoint: its connection behind its breaker.
type Endpoint = Breaker<Connection>;
/// The body of a response as the balancer passes it up: the connection's,
/// wrapped by the endpoint's breaker and counted on the endpoint.
type EndpointBody = InFlightBody<BreakerBody<ResponseBody>>;

/// A resilient gRPC channel for one contract: give it to a generated
/// tonic client (`FooClient::connect(config)` does).
///
/// Cheap to clone; clones share the endpoints, breakers, bulkhead and
/// retry throttle.
#[derive(Clone)]
pub struct Client {
    resolver: Arc<Resolver>,
    default: CallPolicy,
    inner: Inner,
    /// The `authorization` of every call, when configured.
    credentials: Option<crate::credentials::Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

// === impl Client ===

impl Client {
    /// A client of the contract `C`, with `config`.
    pub async fn connect<C: Contract>(config: ClientConfig) -> Result<Self, ClientError> {
        Self::connect_methods(C::METHODS, config).await
    }

    /// A client of a service with these methods, with `config`.
    pub async fn connect_methods(
        methods: &'static [MethodInfo],
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let resolver = Resolver::new(
            methods,
            config.timeout,
            config.retry,
            config.service_config.as_ref(),
        );
        let rng = Arc::new(config.seed.map_or_else(Rng::from_entropy, Rng::seeded));

        config.check_credentials()?;
        let tls = config.load_tls()?;
        if let Some(tls) = &tls {
            // Ends once the client (every connection that holds the TLS)
            // is gone.
            drop(tls.watch(config.tls_reload_interval));
        }
        let endpoint_config = config.clone();
        let make_endpoint = move |target: &Target| {
            let connection = Connection::lazy(
                target,
                ConnectSettings {
                    connect_timeout: endpoint_config.connect_timeout,
                    keepalive: endpoint_config.keepalive,
                    reconnect: endpoint_config.reconnect,
                    tls: tls.clone(),
                },
            );
            let breaker = endpoint_config
                .breaker
                .unwrap_or_else(BreakerConfig::disabled);
            let handle = BreakerHandle::for_endpoint(breaker, target);
            // A connection made again after failing half-opens the breaker
            // that failed connects opened: probes go at once.
            let reconnected = handle.clone();
            connection.on_reconnect(move || reconnected.reconnected());
            Breaker::with_handle(connection, handle)
        };
        let balance = Balance::discover(
            config.discovery()?,
            make_endpoint,
            rng.clone(),
            config.reconnect,
        )
        .await?;

        let throttle = config
            .service_config
            .as_ref()
            .and_then(|c| c.retry_throttling())
            .map(|t| (t.max_tokens, t.token_ratio))
            .or(config.throttle)
            .map(|(max_tokens, ratio)| RetryThrottle::new(max_tokens, ratio));

        let trace = match config.server_host() {
            Some(host) => ClientTraceLayer::new().server_address(host),
            None => ClientTraceLayer::new(),
        };
        let inner = ServiceBuilder::new()
            .layer(trace)
            .layer(ClientDeadlineLayer::new(None).headroom(config.headroom))
            .layer(match config.bulkhead {
                Some(bulkhead) => Either::Left(BulkheadLayer::new(bulkhead)),
                None => Either::Right(MapResponseLayer::new(unbounded as fn(_) -> _)),
            })
            .layer(
                HedgeLayer::new(throttle.clone(), rng.clone())
                    .max_attempts_cap(config.max_attempts_cap),
            )
            .layer(RetryLayer::new(throttle, rng).max_attempts_cap(config.max_attempts_cap))
            .option_layer(config.fault.clone().map(FaultLayer::new))
            .service(balance);

        let default = CallPolicy {
            path: "",
            idempotency: Idempotency::Unknown,
            streaming: Streaming::Bidirectional,
            timeout: config.timeout,
            retry: config.retry,
            hedging: None,
            retry_side_effects: false,
        };
        Ok(Self {
            resolver: Arc::new(resolver),
            default,
            inner,
            credentials: config.credentials.clone(),
        })
    }
}

/// The body of a response to a [`Client`]'s call, boxed once, where tonic
/// decodes it: the connection's, as the layers that watch it for the
/// call's end wrapped it (the breaker, the balancer, the bulkhead, the
/// deadline and the tracing). Retries and hedging pass the body of the
/// attempt that answered as it is.
pub type ClientBody = RecordedBody<DeadlineBody<SlotBody<InFlightBody<BreakerBody<ResponseBody>>>>>;

fn unbounded(response: http::Response<EndpointBody>) -> http::Response<SlotBody<EndpointBody>> {
    response.map(SlotBody::unguarded)
}

impl Service<http::Request<Body>> for Client {
    type Response = http::Response<ClientBody>;
    type Error = BoxError;
    type Future = futures_util::future::Either<
        <Inner as Service<http::Request<Body>>>::Future,
        Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let options = request.extensions().get::<CallOptions>();
        let policy = self
            .resolver
            .policy(request.uri().path(), options)
            // A path the contract does not know: nothing is assumed about
            // it, so it is treated as a stream with side effects.
            .unwrap_or(self.default);
        request.extensions_mut().insert(CallState::new(policy));
        let Some(credentials) = self.credentials.clone() else {
            return futures_util::future::Either::Left(self.inner.call(request));
        };
        // The stack was readied for this call: the clone is readied anew.
        let inner = self.inner.clone();
        futures_util::future::Either::Right(Box::pin(async move {
            let value = credentials.0.authorization().await.map_err(|error| {
                Box::new(sinew_core::status::status_with_cause(
                    tonic::Code::Unauthenticated,
                    "no credentials for the call",
                    error,
                )) as BoxError
            })?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
            inner.oneshot(request).await
        }))
    }
}
