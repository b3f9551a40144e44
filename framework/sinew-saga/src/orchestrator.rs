//! The orchestrator: runs sagas from the log, forward then, on a final
//! failure, backward; recovers unfinished ones after a crash.

use std::{collections::HashMap, sync::Arc, time::Duration};

use opentelemetry::{
    Context, KeyValue,
    context::FutureExt as _,
    global,
    trace::{SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use prost::Message;
use sinew_core::backoff::Backoff;

use crate::{
    IdempotencyKey, Phase,
    definition::{BoxFuture, Done, Emit, SagaDefinition, StepContext, StepError},
    log::{HistoryEntry, LogDatabase, SagaLog, SagaRecord, SagaStatus},
    metrics::metrics,
};

/// What went wrong running a saga (not a step's failure: that is the
/// saga's business, recorded in its log).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The log's database failed; the saga goes on from the log when it
    /// is run again (after [`Orchestrator::recover`]).
    #[error("saga log: {0}")]
    Log(#[from] sqlx::Error),
    /// No definition of that name is registered.
    #[error("no saga definition `{0}` is registered")]
    Unknown(String),
    /// No saga has that id.
    #[error("no saga `{0}`")]
    NotFound(String),
    /// The saga's stored state does not decode as its definition's state.
    #[error("saga `{id}`: stored state does not decode: {reason}")]
    State {
        /// The saga.
        id: String,
        /// What prost said.
        reason: String,
    },
    /// A step's idempotency key could not be made from the saga's id.
    #[error("saga `{0}`: its id cannot make an idempotency key")]
    Key(String),
    /// Another orchestrator holds the saga now (this one's lease on it ran
    /// out): this one stops driving it.
    #[error("saga `{0}` is held by another orchestrator now")]
    Lost(String),
    /// The saga is not parked, so it cannot be resumed.
    #[error("saga `{id}` is {status:?}, not parked")]
    NotParked {
        /// The saga.
        id: String,
        /// Where it is.
        status: SagaStatus,
    },
}

/// Unfinished sagas taken and driven at once by [`Orchestrator::recover`].
const RECOVERY_BATCH: u32 = 256;

/// A registered definition, whatever its state type.
trait Runnable<DB: LogDatabase>: Send + Sync {
    fn drive<'a>(
        &'a self,
        log: &'a SagaLog<DB>,
        record: SagaRecord,
    ) -> BoxFuture<'a, Result<SagaStatus, SagaError>>;
}

/// Registered definitions by name, then version.
type Definitions<DB> = HashMap<&'static str, HashMap<u32, Arc<dyn Runnable<DB>>>>;

/// Runs sagas of the registered definitions, durable in a [`SagaLog`].
/// Clones share the log and the definitions.
pub struct Orchestrator<DB: LogDatabase> {
    log: SagaLog<DB>,
    /// By name, then version; the newest version starts new sagas.
    definitions: Arc<Definitions<DB>>,
}

impl<DB: LogDatabase> Clone for Orchestrator<DB> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            definitions: self.definitions.clone(),
        }
    }
}

impl<DB: LogDatabase> std::fmt::Debug for Orchestrator<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.definitions.keys().collect();
        names.sort();
        f.debug_struct("Orchestrator")
            .field("definitions", &names)
            .finish_non_exhaustive()
    }
}

/// Registers definitions, then builds the [`Orchestrator`].
pub struct OrchestratorBuilder<DB: LogDatabase> {
    log: SagaLog<DB>,
    definitions: Definitions<DB>,
    /// A registered definition that publishes events, by name.
    emits: Option<&'static str>,
}

impl<DB: LogDatabase> std::fmt::Debug for OrchestratorBuilder<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .finish_non_exhaustive()
    }
}

impl<DB: LogDatabase> OrchestratorBuilder<DB> {
    /// Registers a definition (a later registration of the same name and
    /// version replaces it).
    #[must_use]
    pub fn register<S>(mut self, definition: SagaDefinition<S>) -> Self
    where
        S: Message + Default + Clone + Send + Sync + 'static,
    {
        if definition.emits() {
            self.emits = Some(definition.name);
        }
        self.definitions
            .entry(definition.name)
            .or_default()
            .insert(definition.version, Arc::new(definition));
        self
    }

    /// Writes the events sagas publish ([`Step::emits`](crate::Step::emits),
    /// [`SagaDefinition::on_completed`], [`SagaDefinition::on_compensated`])
    /// into `outbox`, in the log's transactions: an event is in the outbox
    /// if and only if the step or end it belongs to is in the log. The
    /// outbox must be in the log's database; run its
    /// [`Relay`](sinew_events::Relay) to publish them.
    #[must_use]
    pub fn outbox(mut self, outbox: sinew_events::Outbox<DB>) -> Self {
        self.log = self.log.with_outbox(outbox);
        self
    }

    /// The orchestrator.
    ///
    /// # Panics
    /// When a registered definition publishes events and no
    /// [`outbox`](Self::outbox) is set: a mistake of the service's code,
    /// reported at its start rather than at a saga's end.
    pub fn build(self) -> Orchestrator<DB> {
        if let Some(name) = self.emits {
            assert!(
                self.log.has_outbox(),
                "saga `{name}` publishes events, but the orchestrator has no outbox: \
                 call OrchestratorBuilder::outbox"
            );
        }
        Orchestrator {
            log: self.log,
            definitions: Arc::new(self.definitions),
        }
    }
}

impl<DB: LogDatabase> Orchestrator<DB> {
    /// An orchestrator on `log`; register its definitions next.
    pub fn builder(log: SagaLog<DB>) -> OrchestratorBuilder<DB> {
        OrchestratorBuilder {
            log,
            definitions: HashMap::new(),
            emits: None,
        }
    }

    /// The log.
    pub fn log(&self) -> &SagaLog<DB> {
        &self.log
    }

    /// Starts saga `id` of the newest registered version of definition
    /// `name` with `state`, and runs it to its end: `Completed`,
    /// `Compensated`, or `NeedsAttention` (parked). The saga is in the
    /// log before its first call, so a crash at any point leaves it for
    /// [`recover`](Self::recover).
    pub async fn run<S: Message>(
        &self,
        name: &str,
        id: impl Into<String>,
        state: &S,
    ) -> Result<SagaStatus, SagaError> {
        let (&static_name, versions) = self
            .definitions
            .get_key_value(name)
            .ok_or_else(|| SagaError::Unknown(name.to_owned()))?;
        let (&version, definition) = versions
            .iter()
            .max_by_key(|(version, _)| **version)
            .ok_or_else(|| SagaError::Unknown(name.to_owned()))?;
        let record = SagaRecord {
            id: id.into(),
            name: name.to_owned(),
            version,
            state: state.encode_to_vec(),
            status: SagaStatus::Running,
            step: 0,
            in_flight: true,
            parked_from: None,
            error: None,
            holder: self.log.new_holder(),
            undo: std::collections::BTreeMap::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        self.log.create(&record).await?;
        metrics()
            .started
            .add(1, &[KeyValue::new("saga.name", static_name)]);
        definition.drive(&self.log, record).await
    }

    /// Runs every saga the log holds unfinished (running or compensating)
    /// to its end, each from where it stopped: a call in flight is made
    /// again with its idempotency key. A saga whose definition version is
    /// not registered is parked with the reason. Returns each saga's id and
    /// end.
    pub async fn recover(&self) -> Result<Vec<(String, SagaStatus)>, SagaError> {
        let mut ended = Vec::new();
        loop {
            // Batches of at most RECOVERY_BATCH, driven at once.
            let claimed = self.log.claim_unfinished(RECOVERY_BATCH).await?;
            if claimed.is_empty() {
                return Ok(ended);
            }
            let runs = claimed.into_iter().map(|record| async move {
                let id = record.id.clone();
                self.drive(record).await.map(|status| (id, status))
            });
            for outcome in futures_util::future::join_all(runs).await {
                match outcome {
                    Ok(done) => ended.push(done),
                    // Taken over mid-way: the other orchestrator finishes it.
                    Err(SagaError::Lost(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }

    /// Resumes a parked saga: it goes on with what it was doing (usually a
    /// compensation), with a fresh count of attempts.
    pub async fn resume(&self, id: &str) -> Result<SagaStatus, SagaError> {
        let record = self.take_parked(id).await?;
        self.drive(record).await
    }

    /// Resumes a parked saga as [`resume`](Self::resume) does, in a task
    /// of its own: returns the saga as it restarts, without waiting for its
    /// end. Must be called inside a Tokio runtime.
    pub async fn resume_in_background(&self, id: &str) -> Result<SagaRecord, SagaError> {
        let record = self.take_parked(id).await?;
        let this = self.clone();
        let restarted = record.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            match this.drive(record).await {
                Ok(status) => {
                    tracing::info!(saga = %id, status = status.as_str(), "resumed saga ended")
                }
                Err(SagaError::Lost(_)) => {}
                Err(error) => {
                    tracing::error!(saga = %id, %error, "resumed saga stopped; recover() takes it up again")
                }
            }
        });
        Ok(restarted)
    }

    /// Aborts a parked saga: it ends as `Aborted`, with `reason` in its
    /// history, and nothing more is called; what is left to undo is the
    /// operator's. Aborting an aborted saga again returns it as it is.
    pub async fn abort(&self, id: &str, reason: &str) -> Result<SagaRecord, SagaError> {
        if let Some(record) = self.log.abort(id, reason).await? {
            tracing::warn!(saga = %id, reason = record.error.as_deref().unwrap_or(""), "saga aborted by an operator");
            return Ok(record);
        }
        let record = self
            .log
            .get(id)
            .await?
            .ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
        Err(SagaError::NotParked {
            id: id.to_owned(),
            status: record.status,
        })
    }

    /// Takes a parked saga for a resume: its status back to what it was
    /// doing, its last call to be made again with its key.
    async fn take_parked(&self, id: &str) -> Result<SagaRecord, SagaError> {
        let Some(mut record) = self.log.claim(id).await? else {
            let record = self
                .log
                .get(id)
                .await?
                .ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
            return Err(SagaError::NotParked {
                id: id.to_owned(),
                status: record.status,
            });
        };
        record.status = record
            .parked_from
            .take()
            .unwrap_or(SagaStatus::Compensating);
        // Its last call is made again, with its key.
        record.in_flight = false;
        Ok(record)
    }

    async fn drive(&self, record: SagaRecord) -> Result<SagaStatus, SagaError> {
        let definition = self
            .definitions
            .get(record.name.as_str())
            .and_then(|versions| versions.get(&record.version));
        match definition {
            Some(definition) => definition.drive(&self.log, record).await,
            None => {
                let mut known: Vec<u32> = self
                    .definitions
                    .get(record.name.as_str())
                    .map(|v| v.keys().copied().collect())
                    .unwrap_or_default();
                known.sort_unstable();
                let reason = format!(
                    "saga definition `{}` version {} is not registered (registered versions: {:?})",
                    record.name, record.version, known
                );
                tracing::error!(saga = %record.id, %reason, "saga parked");
                metrics()
                    .parked
                    .add(1, &[KeyValue::new("saga.name", record.name.clone())]);
                let parked = SagaRecord {
                    parked_from: Some(record.status),
                    status: SagaStatus::NeedsAttention,
                    error: Some(reason.clone()),
                    ..record
                };
                let entry = HistoryEntry {
                    step: parked.step,
                    phase: if parked.parked_from == Some(SagaStatus::Running) {
                        Phase::Action
                    } else {
                        Phase::Compensation
                    },
                    outcome: "parked".to_owned(),
                    error: Some(reason),
                    at_ms: 0,
                };
                held(self.log.after(&parked, &entry, &[]).await?, &parked.id)?;
                Ok(SagaStatus::NeedsAttention)
            }
        }
    }
}

impl<S, DB> Runnable<DB> for SagaDefinition<S>
where
    S: Message + Default + Clone + Send + Sync + 'static,
    DB: LogDatabase,
{
    fn drive<'a>(
        &'a self,
        log: &'a SagaLog<DB>,
        record: SagaRecord,
    ) -> BoxFuture<'a, Result<SagaStatus, SagaError>> {
        Box::pin(self.drive_typed(log, record))
    }
}

impl<S> SagaDefinition<S>
where
    S: Message + Default + Clone + Send + Sync + 'static,
{
    fn wait(&self, attempt: u32) -> Duration {
        let (initial, max) = self.backoff;
        Backoff::new(initial, max, 2.0).ceiling(attempt.saturating_sub(1))
    }

    async fn drive_typed<DB: LogDatabase>(
        &self,
        log: &SagaLog<DB>,
        mut record: SagaRecord,
    ) -> Result<SagaStatus, SagaError> {
        let mut state = S::decode(record.state.as_slice()).map_err(|e| SagaError::State {
            id: record.id.clone(),
            reason: e.to_string(),
        })?;
        let saga_id: Arc<str> = Arc::from(record.id.as_str());
        let count = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        // The saga's span: a child of whatever started or recovered it.
        let tracer = global::tracer("sinew.saga");
        let span = tracer
            .span_builder(format!("saga {}", self.name))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("saga.name", self.name),
                KeyValue::new("saga.version", i64::from(self.version)),
                KeyValue::new("saga.id", record.id.clone()),
            ])
            .start(&tracer);
        let span_cx = Context::current().with_span(span);
        loop {
            match record.status {
                SagaStatus::Running if record.step >= count => {
                    // Nothing left to run (a definition with no step).
                    record.status = SagaStatus::Completed;
                    record.in_flight = false;
                    let entry = entry(record.step, Phase::Action, None);
                    let events = emit(self.on_completed.as_ref(), &state);
                    held(log.after(&record, &entry, &events).await?, &record.id)?;
                }
                SagaStatus::Running => {
                    let index = record.step;
                    if !record.in_flight {
                        held(
                            log.before(&record, SagaStatus::Running, index).await?,
                            &record.id,
                        )?;
                    }
                    match self
                        .act(
                            log,
                            &span_cx,
                            &saga_id,
                            &record.holder,
                            index,
                            state.clone(),
                        )
                        .await?
                    {
                        Ok(done) => {
                            state = done.state;
                            record.state = state.encode_to_vec();
                            record.step = index + 1;
                            record.in_flight = false;
                            record.error = None;
                            if let Some(undo) = done.undo {
                                record.undo.insert(index, undo);
                            }
                            let mut events =
                                emit(self.steps[index as usize].emits.as_ref(), &state);
                            if record.step >= count {
                                record.status = SagaStatus::Completed;
                                events.extend(emit(self.on_completed.as_ref(), &state));
                            }
                            held(
                                log.after(&record, &entry(index, Phase::Action, None), &events)
                                    .await?,
                                &record.id,
                            )?;
                        }
                        Err(error) => {
                            let message = error.to_string();
                            tracing::info!(saga = %record.id, step = self.steps[index as usize].name, error = %message, "saga step failed; compensating");
                            // Steps 0..index completed: undo them. A step
                            // whose last attempt failed retryably may have
                            // taken effect (a lost reply, a timeout): it is
                            // undone too, its compensation being a no-op
                            // if it did not.
                            record.status = SagaStatus::Compensating;
                            record.step = if error.is_retryable() {
                                self.compensable_below(index + 1)
                            } else {
                                self.compensable_below(index)
                            };
                            let mut events = Vec::new();
                            if record.step == 0 {
                                record.status = SagaStatus::Compensated;
                                events = emit(self.on_compensated.as_ref(), &state);
                            }
                            record.in_flight = false;
                            record.error = Some(message.clone());
                            held(
                                log.after(
                                    &record,
                                    &entry(index, Phase::Action, Some(message)),
                                    &events,
                                )
                                .await?,
                                &record.id,
                            )?;
                        }
                    }
                }
                SagaStatus::Compensating => {
                    // Steps without a compensation have nothing to undo.
                    let remaining = self.compensable_below(record.step);
                    if remaining == 0 {
                        record.status = SagaStatus::Compensated;
                        record.step = 0;
                        record.in_flight = false;
                        let events = emit(self.on_compensated.as_ref(), &state);
                        held(
                            log.after(&record, &entry(0, Phase::Compensation, None), &events)
                                .await?,
                            &record.id,
                        )?;
                        continue;
                    }
                    let index = remaining - 1;
                    if !record.in_flight || record.step != remaining {
                        held(
                            log.before(&record, SagaStatus::Compensating, remaining)
                                .await?,
                            &record.id,
                        )?;
                    }
                    record.step = remaining;
                    let undo = record.undo.get(&index).cloned();
                    match self
                        .compensate(
                            log,
                            &span_cx,
                            &saga_id,
                            &record.holder,
                            index,
                            state.clone(),
                            undo,
                        )
                        .await?
                    {
                        Ok(()) => {
                            record.step = self.compensable_below(index);
                            record.in_flight = false;
                            record.undo.remove(&index);
                            let mut events = Vec::new();
                            if record.step == 0 {
                                record.status = SagaStatus::Compensated;
                                events = emit(self.on_compensated.as_ref(), &state);
                            }
                            held(
                                log.after(
                                    &record,
                                    &entry(index, Phase::Compensation, None),
                                    &events,
                                )
                                .await?,
                                &record.id,
                            )?;
                        }
                        Err(error) => {
                            let message = error.to_string();
                            tracing::error!(saga = %record.id, step = self.steps[index as usize].name, error = %message, "saga compensation keeps failing; parked");
                            record.status = SagaStatus::NeedsAttention;
                            record.parked_from = Some(SagaStatus::Compensating);
                            record.in_flight = false;
                            record.error = Some(message.clone());
                            held(
                                log.after(
                                    &record,
                                    &entry(index, Phase::Compensation, Some(message)),
                                    &[],
                                )
                                .await?,
                                &record.id,
                            )?;
                        }
                    }
                }
                status => {
                    let counter = match status {
                        SagaStatus::Completed => &metrics().completed,
                        SagaStatus::Compensated => &metrics().compensated,
                        _ => &metrics().parked,
                    };
                    counter.add(1, &[KeyValue::new("saga.name", self.name)]);
                    if status == SagaStatus::NeedsAttention {
                        span_cx
                            .span()
                            .set_status(Status::error("parked: needs attention"));
                    }
                    span_cx
                        .span()
                        .set_attribute(KeyValue::new("saga.status", status.as_str()));
                    return Ok(status);
                }
            }
        }
    }

    /// How many steps below `index` count for compensation: `index`,
    /// lowered past the steps that have no compensation.
    fn compensable_below(&self, index: u32) -> u32 {
        let mut n = index.min(u32::try_from(self.steps.len()).unwrap_or(u32::MAX));
        while n > 0 && self.steps[n as usize - 1].compensation.is_none() {
            n -= 1;
        }
        n
    }

    fn context(
        &self,
        saga_id: &Arc<str>,
        index: u32,
        phase: Phase,
        attempt: u32,
    ) -> Result<StepContext, SagaError> {
        let step = &self.steps[index as usize];
        let key = IdempotencyKey::for_step(saga_id, step.name, phase)
            .map_err(|_| SagaError::Key(saga_id.to_string()))?;
        Ok(StepContext {
            saga_id: saga_id.clone(),
            step: step.name,
            phase,
            key,
            attempt,
        })
    }

    /// The step's action, with its timeout and attempts.
    async fn act<DB: LogDatabase>(
        &self,
        log: &SagaLog<DB>,
        saga: &Context,
        saga_id: &Arc<str>,
        holder: &str,
        index: u32,
        state: S,
    ) -> Result<Result<Done<S>, StepError>, SagaError> {
        let step = &self.steps[index as usize];
        let mut attempt = 1;
        loop {
            let cx = self.context(saga_id, index, Phase::Action, attempt)?;
            let call = (step.action)(cx, state.clone());
            let outcome = self
                .attempt(log, (saga_id, holder), saga, index, Phase::Action, call)
                .await?;
            match outcome {
                Err(error) if error.is_retryable() && attempt < step.attempts => {
                    tracing::debug!(saga = %saga_id, step = step.name, attempt, %error, "saga step failed; retrying");
                    tokio::time::sleep(self.wait(attempt)).await;
                    held(log.renew(saga_id, holder).await?, saga_id)?;
                    attempt += 1;
                }
                outcome => return Ok(outcome),
            }
        }
    }

    /// The step's compensation: retried on any failure, up to the
    /// definition's limit.
    #[allow(
        clippy::too_many_arguments,
        reason = "the saga's identity, its claim and the step's inputs"
    )]
    async fn compensate<DB: LogDatabase>(
        &self,
        log: &SagaLog<DB>,
        saga: &Context,
        saga_id: &Arc<str>,
        holder: &str,
        index: u32,
        state: S,
        undo: Option<Vec<u8>>,
    ) -> Result<Result<(), StepError>, SagaError> {
        let step = &self.steps[index as usize];
        let Some(compensation) = &step.compensation else {
            return Ok(Ok(()));
        };
        let mut attempt = 1;
        loop {
            let cx = self.context(saga_id, index, Phase::Compensation, attempt)?;
            let call = compensation(cx, state.clone(), undo.clone());
            let outcome = self
                .attempt(
                    log,
                    (saga_id, holder),
                    saga,
                    index,
                    Phase::Compensation,
                    call,
                )
                .await?;
            match outcome {
                Err(error) if attempt < self.compensation_attempts => {
                    tracing::warn!(saga = %saga_id, step = step.name, attempt, %error, "saga compensation failed; retrying");
                    tokio::time::sleep(self.wait(attempt)).await;
                    held(log.renew(saga_id, holder).await?, saga_id)?;
                    attempt += 1;
                }
                outcome => return Ok(outcome),
            }
        }
    }
}

impl<S> SagaDefinition<S> {
    /// One attempt of a step's call, with the step's timeout, in a span of
    /// its own (a child of the saga's, and the parent of the call's client
    /// span); its duration goes to `sinew.saga.step.duration`.
    ///
    /// While the call is under way the saga's lease is renewed every third
    /// of its length, so that no other orchestrator (nor this one's
    /// recovery) takes a saga whose call is merely slow. If the saga was
    /// taken all the same (this process stalled past its lease), the call is
    /// dropped and the saga is [`SagaError::Lost`] here.
    async fn attempt<T, DB: LogDatabase>(
        &self,
        log: &SagaLog<DB>,
        (saga_id, holder): (&str, &str),
        saga: &Context,
        index: u32,
        phase: Phase,
        call: BoxFuture<'static, Result<T, StepError>>,
    ) -> Result<Result<T, StepError>, SagaError> {
        let step = &self.steps[index as usize];
        let tracer = global::tracer("sinew.saga");
        let span = tracer
            .span_builder(format!("{} {}", phase_name(phase), step.name))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("saga.name", self.name),
                KeyValue::new("saga.step", step.name),
                KeyValue::new("saga.phase", phase_name(phase)),
            ])
            .start_with_context(&tracer, saga);
        let cx = saga.with_span(span);
        let started = std::time::Instant::now();
        let timed = tokio::time::timeout(step.timeout, call.with_context(cx.clone()));
        tokio::pin!(timed);
        let heartbeat = (log.lease() / 3).max(Duration::from_millis(10));
        let outcome = loop {
            tokio::select! {
                outcome = &mut timed => break match outcome {
                    Ok(outcome) => outcome,
                    Err(_) => Err(StepError::Retryable(
                        format!(
                            "timed out after {}",
                            humantime::format_duration(step.timeout)
                        )
                        .into(),
                    )),
                },
                () = tokio::time::sleep(heartbeat) => match log.renew(saga_id, holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        cx.span().set_status(Status::error("saga taken over"));
                        return Err(held(false, saga_id).unwrap_err());
                    }
                    // The next write fences the saga if the lease ran out.
                    Err(error) => tracing::warn!(saga = %saga_id, %error, "saga lease not renewed"),
                },
            }
        };
        if let Err(error) = &outcome {
            cx.span().set_status(Status::error(error.to_string()));
        }
        metrics().step_duration.record(
            started.elapsed().as_secs_f64() * 1e3,
            &[
                KeyValue::new("saga.name", self.name),
                KeyValue::new("saga.step", step.name),
                KeyValue::new("saga.phase", phase_name(phase)),
                KeyValue::new("outcome", if outcome.is_ok() { "ok" } else { "failed" }),
            ],
        );
        Ok(outcome)
    }
}

/// An error unless the write found the saga still this orchestrator's.
fn held(held: bool, id: &str) -> Result<(), SagaError> {
    if held {
        Ok(())
    } else {
        tracing::warn!(saga = %id, "saga taken over by another orchestrator; stopping here");
        Err(SagaError::Lost(id.to_owned()))
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
    }
}

fn entry(step: u32, phase: Phase, error: Option<String>) -> HistoryEntry {
    HistoryEntry {
        step,
        outcome: if error.is_some() { "failed" } else { "ok" }.to_owned(),
        phase,
        error,
        at_ms: 0,
    }
}

/// The events `emit` makes of `state`, if any.
fn emit<S>(emit: Option<&Emit<S>>, state: &S) -> Vec<sinew_events::Envelope> {
    emit.map(|emit| emit(state)).unwrap_or_default()
}
