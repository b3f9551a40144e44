//! What a saga is: an ordered list of steps over a typed state.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use sinew_core::BoxError;

use crate::{IdempotencyKey, Phase};

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

pub(crate) type Action<S> =
    Arc<dyn Fn(StepContext, S) -> BoxFuture<'static, Result<S, StepError>> + Send + Sync>;
pub(crate) type Compensation<S> =
    Arc<dyn Fn(StepContext, S) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

/// One step: an action that reads and extends the state, and what undoes
/// it.
pub struct Step<S> {
    pub(crate) name: &'static str,
    pub(crate) action: Action<S>,
    pub(crate) compensation: Option<Compensation<S>>,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
}

impl<S> std::fmt::Debug for Step<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensated", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
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
        Self {
            name,
            action: Arc::new(move |cx, state| Box::pin(action(cx, state))),
            compensation: None,
            timeout: Duration::from_secs(10),
            attempts: 3,
        }
    }

    /// What undoes the action, given the state after it. Retried with
    /// backoff until it succeeds (see [`SagaDefinition::compensation_attempts`]).
    #[must_use]
    pub fn compensate<F, Fut>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.compensation = Some(Arc::new(move |cx, state| Box::pin(compensation(cx, state))));
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
        }
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
