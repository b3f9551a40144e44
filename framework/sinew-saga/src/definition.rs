//! What a saga is: an ordered list of steps over a typed state.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use prost::Message;
use sinew_client::Client;
use sinew_core::{
    BoxError,
    contract::{CompensationInput, MethodInfo, Streaming},
};
use sinew_events::Envelope;

use crate::{
    IdempotencyKey, Phase,
    call::{self, Ignored},
};

/// A boxed future, as steps return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a step's call knows: the saga, the step, and the idempotency key
/// its call must carry.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The saga's id.
    pub saga_id: Arc<str>,
    /// The step's name.
    pub step: &'static str,
    /// The action, or its compensation.
    pub phase: Phase,
    /// The key of this call: the same on every attempt and after a crash,
    /// so the participant applies it once.
    pub key: IdempotencyKey,
    /// This attempt, from 1.
    pub attempt: u32,
}

impl StepContext {
    /// This call's context for a phase of its step: the same saga, step and
    /// attempt, with that phase's key. A compensation undoing an action of
    /// uncertain outcome calls the action again with
    /// `cx.for_phase(Phase::Action)?.request(..)`: a participant that applied
    /// it answers what it recorded, and one that did not applies it now, so
    /// that either way there is a known result to undo.
    pub fn for_phase(&self, phase: Phase) -> Result<Self, StepError> {
        let key = IdempotencyKey::for_step(&self.saga_id, self.step, phase)
            .map_err(|e| StepError::Final(Box::new(e)))?;
        Ok(Self {
            phase,
            key,
            ..self.clone()
        })
    }

    /// A request for `message` that carries this call's idempotency key.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.key.apply(&mut request);
        request
    }
}

/// Why a step's call failed.
#[derive(Debug)]
pub enum StepError {
    /// Worth another attempt (the participant was unreachable, busy, or
    /// out of time).
    Retryable(BoxError),
    /// No attempt will do better: the saga compensates.
    Final(BoxError),
}

impl StepError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable(e) => write!(f, "retryable: {e}"),
            Self::Final(e) => write!(f, "final: {e}"),
        }
    }
}

/// A gRPC status is retryable when the call may not have happened or may
/// succeed later: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
/// `ABORTED`, `UNKNOWN` and `INTERNAL`; any other is final.
impl From<tonic::Status> for StepError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code::{
            Aborted, DeadlineExceeded, Internal, ResourceExhausted, Unavailable, Unknown,
        };
        let retryable = matches!(
            status.code(),
            Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Unknown | Internal
        );
        let error: BoxError = Box::new(status);
        if retryable {
            Self::Retryable(error)
        } else {
            Self::Final(error)
        }
    }
}

/// What an action leaves: the state extended, and, for a step built from
/// a contract's method, the compensation's request, encoded (kept in the
/// log until the saga ends).
pub(crate) struct Done<S> {
    pub(crate) state: S,
    pub(crate) undo: Option<Vec<u8>>,
}

pub(crate) type Action<S> =
    Arc<dyn Fn(StepContext, S) -> BoxFuture<'static, Result<Done<S>, StepError>> + Send + Sync>;
/// A compensation gets the state and what its action recorded for it.
pub(crate) type Compensation<S> = Arc<
    dyn Fn(StepContext, S, Option<Vec<u8>>) -> BoxFuture<'static, Result<(), StepError>>
        + Send
        + Sync,
>;
/// Events recorded, from the state, with a step's or a saga's end.
pub(crate) type Emit<S> = Arc<dyn Fn(&S) -> Vec<Envelope> + Send + Sync>;

/// A recorded request, decoded; a log that does not decode is no
/// attempt's fault, so the compensation parks.
fn decode<T: Message + Default>(bytes: &[u8], path: &str) -> Result<T, StepError> {
    T::decode(bytes).map_err(|e| {
        StepError::Final(format!("the request recorded for {path} does not decode: {e}").into())
    })
}

/// One step: an action that reads and extends the state, and what undoes
/// it.
pub struct Step<S> {
    pub(crate) name: &'static str,
    pub(crate) action: Action<S>,
    pub(crate) compensation: Option<Compensation<S>>,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) emits: Option<Emit<S>>,
}

impl<S> std::fmt::Debug for Step<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensated", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("emits", &self.emits.is_some())
            .finish()
    }
}

impl<S: Send + 'static> Step<S> {
    /// A step called `name` (unique in its saga) whose action is `action`:
    /// given the state, it makes its call and returns the state extended
    /// with what the call answered. Each attempt gets 10s and the action
    /// 3 attempts, by default.
    pub fn new<F, Fut>(name: &'static str, action: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, StepError>> + Send + 'static,
    {
        let action = Arc::new(action);
        Self {
            name,
            action: Arc::new(move |cx, state| {
                let call = action(cx, state);
                Box::pin(async move { call.await.map(|state| Done { state, undo: None }) })
            }),
            compensation: None,
            timeout: Duration::from_secs(10),
            attempts: 3,
            emits: None,
        }
    }

    /// A step that calls the contract's `method` through `client` (a
    /// generated client's [`client()`](sinew_client::Client), or one
    /// connected for the contract): `request` builds its request from the
    /// state, and `merge` extends the state with its response.
    ///
    /// When the contract names the method's compensation
    /// (`(sinew.method).compensated_by`), the step compensates with it, with
    /// no more wiring: the compensation's request is the action's request or
    /// response, as the contract declares, kept in the saga's log from the
    /// action's end until the saga ends. [`compensate`](Self::compensate)
    /// replaces it. Both calls carry the step's idempotency key.
    ///
    /// When the action's outcome is uncertain (its last attempt failed
    /// retryably), the compensation is made all the same: from the request
    /// built again, or, when it takes the response, after calling the action
    /// again with its own key to learn the response (a final refusal then
    /// means the action never took effect, and nothing is undone).
    ///
    /// The call's failure is classified as `tonic::Status` is (see
    /// [`StepError`]'s `From`).
    ///
    /// # Panics
    /// If `method` streams: a step is one unary call (sinew-build refuses a
    /// streaming method with a compensation, but not a plain one).
    pub fn rpc<Req, Resp, B, M>(
        name: &'static str,
        client: &Client,
        method: &'static MethodInfo,
        request: B,
        merge: M,
    ) -> Self
    where
        Req: Message + Default + Clone + 'static,
        Resp: Message + Default + Clone + 'static,
        B: Fn(&S) -> Req + Send + Sync + 'static,
        M: Fn(S, Resp) -> S + Send + Sync + 'static,
    {
        assert!(
            method.streaming == Streaming::Unary,
            "saga step {name}: {} streams; a step is one unary call",
            method.path
        );
        let compensation = method.policy.compensated_by;
        let (request, merge) = (Arc::new(request), Arc::new(merge));
        let rebuild = request.clone();
        let caller = client.clone();
        let action: Action<S> = Arc::new(move |cx: StepContext, state: S| {
            let (client, request, merge) = (caller.clone(), request.clone(), merge.clone());
            Box::pin(async move {
                let message = request(&state);
                let sent = compensation
                    .filter(|c| c.input == CompensationInput::Request)
                    .map(|_| message.encode_to_vec());
                let reply: Resp = call::unary(&client, method.path, &cx, message).await?;
                let undo = match compensation.map(|c| c.input) {
                    Some(CompensationInput::Response) => Some(reply.encode_to_vec()),
                    _ => sent,
                };
                Ok(Done {
                    state: merge(state, reply),
                    undo,
                })
            })
        });
        let mut step = Self {
            name,
            action,
            compensation: None,
            timeout: Duration::from_secs(10),
            attempts: 3,
            emits: None,
        };
        if let Some(compensation) = compensation {
            let client = client.clone();
            step.compensation = Some(Arc::new(move |cx: StepContext, state: S, undo| {
                let (client, rebuild) = (client.clone(), rebuild.clone());
                Box::pin(async move {
                    // The request as the action recorded it: its own type
                    // or its response's, whichever the contract names.
                    let outcome = match (compensation.input, undo) {
                        (CompensationInput::Request, Some(undo)) => {
                            let message = decode::<Req>(&undo, compensation.path)?;
                            call::unary::<_, Ignored>(&client, compensation.path, &cx, message)
                                .await
                        }
                        (CompensationInput::Response, Some(undo)) => {
                            let message = decode::<Resp>(&undo, compensation.path)?;
                            call::unary::<_, Ignored>(&client, compensation.path, &cx, message)
                                .await
                        }
                        // The action's outcome is uncertain (its last
                        // attempt failed retryably), and `state` is the
                        // state it was given: its request, built again,
                        // is the one it sent.
                        (CompensationInput::Request, None) => {
                            let message = rebuild(&state);
                            call::unary::<_, Ignored>(&client, compensation.path, &cx, message)
                                .await
                        }
                        // Its response is not known: the action is called
                        // again with its own key. A participant that applied
                        // it answers its recorded response, one that did not
                        // applies it now; either way that response is undone.
                        // A final refusal means it never took effect.
                        (CompensationInput::Response, None) => {
                            let action = cx.for_phase(Phase::Action)?;
                            let sent = call::unary::<_, Resp>(
                                &client,
                                method.path,
                                &action,
                                rebuild(&state),
                            )
                            .await;
                            match sent.map_err(StepError::from) {
                                Ok(reply) => {
                                    call::unary::<_, Ignored>(
                                        &client,
                                        compensation.path,
                                        &cx,
                                        reply,
                                    )
                                    .await
                                }
                                Err(StepError::Final(_)) => return Ok(()),
                                Err(retryable) => return Err(retryable),
                            }
                        }
                    };
                    outcome.map(drop).map_err(StepError::from)
                })
            }));
        }
        step
    }

    /// What undoes the action, given the state after it. Retried with
    /// backoff until it succeeds (see [`SagaDefinition::compensation_attempts`]).
    ///
    /// It is also called for an action whose outcome is uncertain: one
    /// whose last attempt failed with a retryable error (a timeout, a lost
    /// reply) may have taken effect. It then gets the state the action was
    /// given, and must undo the action if it took effect and succeed doing
    /// nothing if it did not (see [`StepContext::for_phase`]). An action
    /// that failed for good ([`StepError::Final`]) is not compensated.
    #[must_use]
    pub fn compensate<F, Fut>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.compensation = Some(Arc::new(move |cx, state, _| {
            Box::pin(compensation(cx, state))
        }));
        self
    }

    /// Events to publish when the action succeeds, made from the state
    /// after it (`sinew_events::Envelope::new(&event)` for each). They are
    /// written to the orchestrator's outbox in the same transaction as the
    /// log's record of the step, so they are published if and only if the
    /// step is recorded done (see [`OrchestratorBuilder::outbox`](crate::OrchestratorBuilder::outbox)).
    #[must_use]
    pub fn emits<F>(mut self, events: F) -> Self
    where
        F: Fn(&S) -> Vec<Envelope> + Send + Sync + 'static,
    {
        self.emits = Some(Arc::new(events));
        self
    }

    /// How long one attempt of the action or compensation may take.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts of the action in all (at least 1) before a retryable
    /// failure counts as final.
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }
}

/// A saga: its name and version, and its steps in order.
pub struct SagaDefinition<S> {
    pub(crate) name: &'static str,
    pub(crate) version: u32,
    pub(crate) steps: Vec<Step<S>>,
    pub(crate) compensation_attempts: u32,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) on_completed: Option<Emit<S>>,
    pub(crate) on_compensated: Option<Emit<S>>,
}

impl<S> std::fmt::Debug for SagaDefinition<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl<S> SagaDefinition<S> {
    /// A saga called `name` at `version`, with no step yet. Instances
    /// record both: one whose version is no longer registered is parked.
    pub fn new(name: &'static str, version: u32) -> Self {
        Self {
            name,
            version,
            steps: Vec::new(),
            compensation_attempts: 10,
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            on_completed: None,
            on_compensated: None,
        }
    }

    /// Events to publish when the saga completes, made from its final
    /// state; written to the outbox in the transaction that records the
    /// completion.
    #[must_use]
    pub fn on_completed<F>(mut self, events: F) -> Self
    where
        F: Fn(&S) -> Vec<Envelope> + Send + Sync + 'static,
    {
        self.on_completed = Some(Arc::new(events));
        self
    }

    /// Events to publish when the saga has been compensated, made from its
    /// state; written to the outbox in the transaction that records it.
    #[must_use]
    pub fn on_compensated<F>(mut self, events: F) -> Self
    where
        F: Fn(&S) -> Vec<Envelope> + Send + Sync + 'static,
    {
        self.on_compensated = Some(Arc::new(events));
        self
    }

    /// Whether any step or end of this saga publishes events.
    pub(crate) fn emits(&self) -> bool {
        self.on_completed.is_some()
            || self.on_compensated.is_some()
            || self.steps.iter().any(|step| step.emits.is_some())
    }

    /// Adds a step after the others.
    #[must_use]
    pub fn step(mut self, step: Step<S>) -> Self {
        self.steps.push(step);
        self
    }

    /// Attempts of each compensation before the saga is parked as
    /// `NeedsAttention` (default 10). A parked saga is never dropped:
    /// resuming it tries again.
    #[must_use]
    pub fn compensation_attempts(mut self, attempts: u32) -> Self {
        self.compensation_attempts = attempts.max(1);
        self
    }

    /// The wait between attempts: from `initial`, doubling, up to `max`
    /// (default 100ms to 10s).
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max.max(initial));
        self
    }
}
