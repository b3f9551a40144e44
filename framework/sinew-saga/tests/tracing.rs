//! A saga is a span; each step's action and compensation is a child span,
//! and the step's own calls are children of those.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use sinew_saga::{Orchestrator, SagaDefinition, SagaLog, SagaStatus, Step, StepContext, StepError};

#[derive(Clone, PartialEq, prost::Message)]
struct State {
    #[prost(uint32, tag = "1")]
    done: u32,
}

#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Spans {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test]
async fn a_saga_is_a_span_and_its_steps_are_children() {
    let spans = Spans::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    // One connection: each in-memory SQLite connection is a database of its own.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let log = SagaLog::new(pool).await.unwrap();
    let call_parent = Arc::new(Mutex::new(Vec::new()));
    let seen = call_parent.clone();
    let definition = SagaDefinition::new("traced", 1)
        .step(
            Step::new("first", move |_: StepContext, mut state: State| {
                let seen = seen.clone();
                async move {
                    // What a client call made here would take as its parent.
                    let cx = opentelemetry::Context::current();
                    seen.lock()
                        .unwrap()
                        .push(cx.span().span_context().span_id());
                    state.done += 1;
                    Ok(state)
                }
            })
            .compensate(|_: StepContext, _| async { Ok(()) }),
        )
        .step(Step::new("second", |_: StepContext, _: State| async {
            Err(StepError::Final("no".into()))
        }))
        .backoff(Duration::from_millis(1), Duration::from_millis(1));
    let saga = Orchestrator::builder(log).register(definition).build();

    let tracer = provider.tracer("test");
    let request = tracer.start("PlaceOrder");
    let request_cx = opentelemetry::Context::current_with_span(request);
    let parent_id = request_cx.span().span_context().span_id();
    let status = {
        let _attached = request_cx.clone().attach();
        saga.run("traced", "t-1", &State::default()).await.unwrap()
    };
    assert_eq!(status, SagaStatus::Compensated);
    drop(request_cx);

    let spans = spans.0.lock().unwrap().clone();
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span {name}: {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
            .clone()
    };
    let root = named("saga traced");
    assert_eq!(
        root.parent_span_id, parent_id,
        "a child of the request that started it"
    );
    assert_eq!(root.span_kind, SpanKind::Internal);
    for name in ["action first", "action second", "compensation first"] {
        let step = named(name);
        assert_eq!(step.parent_span_id, root.span_context.span_id(), "{name}");
        assert_eq!(step.span_context.trace_id(), root.span_context.trace_id());
    }
    let first = named("action first");
    assert_eq!(call_parent.lock().unwrap()[0], first.span_context.span_id());
    assert!(matches!(
        named("action second").status,
        opentelemetry::trace::Status::Error { .. }
    ));
}
