//! What a call is recorded under: its span name, its RPC attributes and
//! its method's count of calls in flight, worked out once per method path
//! rather than once per call.
//!
//! Every call to the same method has the same span name
//! (`package.Service/Method`) and the same `rpc.system`, `rpc.service` and
//! `rpc.method` attributes. Building them per call would cost a string
//! allocation each; instead:
//!
//! 1. Each thread keeps a map from path to [`Method`], lent to the
//!    caller, which clones only what it keeps: reference-counted strings
//!    made by this thread, so their counts stay on its own cache lines.
//! 2. On a miss, the method is registered process-wide: its name, its
//!    [`Active`] counters and its [`SpanParts`] (the name and RPC
//!    attributes every span of the method shares, already encoded as
//!    OTLP) are leaked once and then borrowed by every call.
//! 3. Both are bounded ([`MAX_METHODS`]): a peer sending calls to endless
//!    made-up paths cannot grow memory. Past the bound a path gets an
//!    owned name, fresh attributes and span parts per call, as if there
//!    were no cache, and its calls in flight are counted under `_OTHER`.
//!
//! A registered method also keeps its duration histograms bound to their
//! attribute sets, one per side and status code, bound the first time the
//! code is seen on that side ([`Durations`]). A bound histogram records
//! straight into its data point; an unbound one would hash and look up
//! four attributes in the SDK on every call.
//!
//! The calls in flight (`rpc.{server,client}.active_requests`) are plain
//! atomic counters here, read by the meter when it collects: an increment
//! and a decrement per call instead of two attribute-set lookups in the
//! SDK.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
};

use opentelemetry::{
    KeyValue, StringValue,
    metrics::{AsyncInstrument, BoundHistogram},
};
use tonic::Code;

use super::{call::status_attribute, metrics::metrics, pipeline::SpanParts};

/// How many distinct paths are cached per thread, and registered in all.
/// Well above what one process serves and calls; a registered method
/// costs a few hundred bytes.
pub(crate) const MAX_METHODS: usize = 1024;

/// The span name, RPC attributes and in-flight counters of one method.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    /// `package.Service/Method`.
    pub(crate) name: Cow<'static, str>,
    /// `rpc.system`, `rpc.service`, `rpc.method`, in that order.
    pub(crate) attributes: [KeyValue; 3],
    /// The method's calls in flight (shared with every path past the
    /// bound, under `_OTHER`).
    pub(crate) active: &'static Active,
    /// Its duration histograms, bound; `None` for a path past the bound,
    /// whose calls record with attributes of their own.
    pub(crate) durations: Option<&'static Durations>,
    /// What its spans share, encoded; `None` past the bound, whose spans
    /// make their own.
    pub(crate) span: Option<&'static SpanParts>,
}

/// A registered method's duration histograms (`rpc.server.duration`,
/// `rpc.client.duration`), bound to its RPC attributes and a status code:
/// one per side and code, bound the first time the code is seen there, so
/// a code never seen exports no data point.
#[derive(Debug)]
pub(crate) struct Durations {
    /// `rpc.system`, `rpc.service`, `rpc.method`.
    rpc: [KeyValue; 3],
    /// Indexed by the code's number.
    server: [OnceLock<BoundHistogram<f64>>; CODES],
    client: [OnceLock<BoundHistogram<f64>>; CODES],
}

/// How many gRPC status codes there are (`OK` is 0, `UNAUTHENTICATED` 16).
const CODES: usize = 17;

/// Calls in flight of one method, on each side.
#[derive(Debug)]
pub(crate) struct Active {
    /// `rpc.service` and `rpc.method`, as the counters are reported.
    attributes: [KeyValue; 2],
    server: Gauge,
    client: Gauge,
}

/// One side's count. Aligned to a cache line of its own: a process that
/// serves and calls a method updates both sides at once from different
/// cores.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Gauge {
    value: AtomicI64,
    /// Whether a call was ever counted here: a method only ever called is
    /// not reported as served, and the other way round.
    used: AtomicBool,
}

/// Calls `f` with the [`Method`] of a call to `path`
/// (`/package.Service/Method`): borrowed from this thread's cache, where
/// it can be.
pub(crate) fn with_method<T>(path: &str, f: impl FnOnce(&Method) -> T) -> T {
    // Hashed with foldhash, seeded per thread, rather than the standard
    // SipHash, which cost about 200 instructions a lookup for a short
    // path: a peer's made-up paths can at worst slow the lookups of a map
    // bounded at `MAX_METHODS`.
    thread_local! {
        static CACHE: RefCell<HashMap<Box<str>, Method, foldhash::fast::RandomState>> =
            RefCell::new(HashMap::default());
    }
    CACHE.with(|cache| {
        if let Some(method) = cache.borrow().get(path) {
            return f(method);
        }
        let method = build(path);
        let result = f(&method);
        let mut cache = cache.borrow_mut();
        if cache.len() < MAX_METHODS && matches!(method.name, Cow::Borrowed(_)) {
            cache.insert(path.into(), method);
        }
        result
    })
}

/// The [`Method`] of a call to `path`, cloned.
#[cfg(test)]
pub(crate) fn method(path: &str) -> Method {
    with_method(path, Method::clone)
}

fn build(path: &str) -> Method {
    let (service, method) = split_path(path);
    let (name, active, durations, span) = match registry().register(path) {
        Some(registered) => (
            Cow::Borrowed(registered.name),
            registered.active,
            Some(registered.durations),
            Some(registered.span),
        ),
        None => (
            Cow::Owned(path.strip_prefix('/').unwrap_or(path).to_owned()),
            overflow(),
            None,
            None,
        ),
    };
    Method {
        name,
        attributes: rpc_attributes(service, method),
        active,
        durations,
        span,
    }
}

/// `rpc.system`, `rpc.service` and `rpc.method` of a call to `method` of
/// `service`.
fn rpc_attributes(service: &str, method: &str) -> [KeyValue; 3] {
    [
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", shared(service)),
        KeyValue::new("rpc.method", shared(method)),
    ]
}

fn shared(text: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(text))
}

/// Reports every registered method's calls in flight on the server
/// (`server` true) or client side to `observer`: the callback of the
/// `rpc.*.active_requests` instruments.
pub(crate) fn observe_active(server: bool, observer: &dyn AsyncInstrument<i64>) {
    let registry = registry();
    let overflow = OVERFLOW.get().into_iter();
    for active in registry.methods.values().map(|m| m.active).chain(overflow) {
        let gauge = if server {
            &active.server
        } else {
            &active.client
        };
        if gauge.used.load(Ordering::Relaxed) {
            observer.observe(gauge.value.load(Ordering::Relaxed), &active.attributes);
        }
    }
}

// === impl Active ===

impl Active {
    fn new(service: &str, method: &str) -> Self {
        Self {
            attributes: [
                KeyValue::new("rpc.service", shared(service)),
                KeyValue::new("rpc.method", shared(method)),
            ],
            server: Gauge::default(),
            client: Gauge::default(),
        }
    }

    /// The server side's count (`server` true), or the client side's.
    pub(crate) fn side(&self, server: bool) -> &Gauge {
        if server { &self.server } else { &self.client }
    }
}

// === impl Durations ===

impl Durations {
    fn new(rpc: [KeyValue; 3]) -> Self {
        Self {
            rpc,
            server: std::array::from_fn(|_| OnceLock::new()),
            client: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The server's (`server` true) or the client's duration histogram for
    /// calls that ended with `code`.
    pub(crate) fn histogram(&self, server: bool, code: Code) -> &BoundHistogram<f64> {
        // Every `Code` is below `CODES`; `min` only keeps the index in
        // bounds should tonic grow one.
        let index = usize::try_from(code as i32).map_or(0, |i| i.min(CODES - 1));
        let (bound, histogram) = if server {
            (&self.server, &metrics().server_duration)
        } else {
            (&self.client, &metrics().client_duration)
        };
        bound[index].get_or_init(|| histogram.bind(&self.attributes(code)))
    }

    /// The RPC attributes and `code`'s `rpc.grpc.status_code`.
    fn attributes(&self, code: Code) -> [KeyValue; 4] {
        let [system, service, method] = self.rpc.clone();
        [system, service, method, status_attribute(code)]
    }
}

// === impl Gauge ===

impl Gauge {
    /// A call started.
    pub(crate) fn enter(&self) {
        // Read first: after the first call the flag is only ever read, so
        // its cache line stays shared.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended.
    pub(crate) fn exit(&self) {
        self.value.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the calls of paths past the bound are counted.
static OVERFLOW: OnceLock<Active> = OnceLock::new();

fn overflow() -> &'static Active {
    OVERFLOW.get_or_init(|| Active::new("_OTHER", "_OTHER"))
}

/// The process-wide registry of methods.
fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    // Only a map insert happens under the lock; a panic cannot leave the
    // map half-updated, so poisoning is ignored.
    REGISTRY
        .get_or_init(|| Mutex::new(Registry::new(MAX_METHODS)))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Methods registered once each, leaked, up to a bound.
#[derive(Debug)]
struct Registry {
    methods: HashMap<&'static str, Registered>,
    max: usize,
}

/// A registered method: its span name, counters, duration attributes and
/// span parts, for the life of the process.
#[derive(Debug, Clone, Copy)]
struct Registered {
    name: &'static str,
    active: &'static Active,
    durations: &'static Durations,
    span: &'static SpanParts,
}

// === impl Registry ===

impl Registry {
    fn new(max: usize) -> Self {
        Self {
            methods: HashMap::new(),
            max,
        }
    }

    /// The registration of `path`, made now if there is room; `None` once
    /// the registry is full.
    fn register(&mut self, path: &str) -> Option<Registered> {
        if let Some(registered) = self.methods.get(path) {
            return Some(*registered);
        }
        if self.methods.len() >= self.max {
            return None;
        }
        let (service, method) = split_path(path);
        // Leaked on purpose, at most `max` times: see the module docs.
        let path: &'static str = Box::leak(path.into());
        let name = path.strip_prefix('/').unwrap_or(path);
        let registered = Registered {
            name,
            active: Box::leak(Box::new(Active::new(service, method))),
            durations: Box::leak(Box::new(Durations::new(rpc_attributes(service, method)))),
            span: Box::leak(Box::new(SpanParts::new(
                Cow::Borrowed(name),
                rpc_attributes(service, method),
            ))),
        };
        self.methods.insert(path, registered);
        Some(registered)
    }
}

/// Splits `/pkg.Service/Method` into service and method.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_is_named_and_attributed_per_the_conventions() {
        let method = method("/shop.v1.Orders/Place");
        assert_eq!(method.name, "shop.v1.Orders/Place");
        assert_eq!(method.attributes[0], KeyValue::new("rpc.system", "grpc"));
        assert_eq!(
            method.attributes[1],
            KeyValue::new("rpc.service", "shop.v1.Orders")
        );
        assert_eq!(method.attributes[2], KeyValue::new("rpc.method", "Place"));
    }

    #[test]
    fn every_thread_shares_one_registration_per_path() {
        let here = method("/test.Registered/Once");
        let there = std::thread::spawn(|| method("/test.Registered/Once"))
            .join()
            .unwrap();
        match (&here.name, &there.name) {
            (Cow::Borrowed(a), Cow::Borrowed(b)) => assert!(std::ptr::eq(*a, *b)),
            other => panic!("not registered: {other:?}"),
        }
        assert!(std::ptr::eq(here.active, there.active));
        let (Some(here), Some(there)) = (here.durations, there.durations) else {
            panic!("registered without duration attributes");
        };
        assert!(std::ptr::eq(here, there));
    }

    #[test]
    fn durations_are_bound_once_per_side_and_code() {
        let durations = method("/test.Durations/Get").durations.expect("registered");
        let expected = [
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", "test.Durations"),
            KeyValue::new("rpc.method", "Get"),
            KeyValue::new("rpc.grpc.status_code", 0),
        ];
        assert_eq!(durations.attributes(Code::Ok), expected);
        let unauthenticated = durations.attributes(Code::Unauthenticated);
        assert_eq!(unauthenticated[..3], expected[..3]);
        assert_eq!(
            unauthenticated[3],
            KeyValue::new("rpc.grpc.status_code", 16)
        );

        let ok = durations.histogram(true, Code::Ok);
        assert!(std::ptr::eq(ok, durations.histogram(true, Code::Ok)));
        assert!(!std::ptr::eq(ok, durations.histogram(false, Code::Ok)));
        assert!(!std::ptr::eq(ok, durations.histogram(true, Code::Internal)));
    }

    #[test]
    fn past_the_bound_paths_are_named_right_and_counted_apart() {
        let mut registry = Registry::new(2);
        let first = registry.register("/bound.A/M").unwrap();
        assert!(registry.register("/bound.B/M").is_some());
        assert!(registry.register("/bound.C/M").is_none());
        // Paths registered before the bound are still shared.
        let again = registry.register("/bound.A/M").unwrap();
        assert!(std::ptr::eq(first.name, again.name));
        assert!(std::ptr::eq(first.active, again.active));
        assert!(std::ptr::eq(first.durations, again.durations));
        assert_eq!(first.name, "bound.A/M");
    }

    /// Collects what a callback observes.
    #[derive(Default)]
    struct Observed(Mutex<Vec<(i64, Vec<KeyValue>)>>);

    impl AsyncInstrument<i64> for Observed {
        fn observe(&self, measurement: i64, attributes: &[KeyValue]) {
            self.0
                .lock()
                .unwrap()
                .push((measurement, attributes.to_vec()));
        }
    }

    fn observed(server: bool, method: &str) -> Option<i64> {
        let observed = Observed::default();
        observe_active(server, &observed);
        let points = observed.0.into_inner().unwrap();
        points
            .into_iter()
            .find(|(_, attributes)| attributes[1] == KeyValue::new("rpc.method", method.to_owned()))
            .map(|(value, _)| value)
    }

    #[test]
    fn calls_in_flight_are_counted_per_method_and_side() {
        let method = method("/test.Active/Count");
        // Never called on either side: not reported.
        assert_eq!(observed(true, "Count"), None);
        assert_eq!(observed(false, "Count"), None);

        let served = method.active.side(true);
        served.enter();
        served.enter();
        assert_eq!(observed(true, "Count"), Some(2));
        // The client side was never used: still not reported.
        assert_eq!(observed(false, "Count"), None);
        served.exit();
        served.exit();
        assert_eq!(observed(true, "Count"), Some(0));
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/a.B/C"), ("a.B", "C"));
        assert_eq!(split_path("a.B/C"), ("a.B", "C"));
        assert_eq!(split_path("/nomethod"), ("nomethod", ""));
    }
}
