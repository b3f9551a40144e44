//! What a call is recorded under: its span name and its RPC attributes,
//! worked out once per method path rather than once per call.
//!
//! Every call to the same method has the same span name
//! (`package.Service/Method`) and the same `rpc.system`, `rpc.service` and
//! `rpc.method` attributes. Building them per call would cost a string
//! allocation each; instead:
//!
//! 1. Each thread keeps a map from path to [`Method`]. A hit clones
//!    reference-counted strings on the thread's own cache lines.
//! 2. On a miss, the span name is interned process-wide. The OpenTelemetry
//!    SDK keeps span names as `Cow<'static, str>`, so an interned name is
//!    leaked once and then borrowed by every span of that method.
//! 3. Both are bounded ([`MAX_METHODS`]): a peer sending calls to endless
//!    made-up paths cannot grow memory. Past the bound a path gets an
//!    owned name and fresh attributes per call, as if there were no cache.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use opentelemetry::{KeyValue, StringValue};

/// How many distinct paths are cached per thread, and interned in all.
/// Well above what one process serves and calls; the interned names cost
/// about a hundred bytes each.
pub(crate) const MAX_METHODS: usize = 1024;

/// The span name and RPC attributes of one method.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    /// `package.Service/Method`.
    pub(crate) name: Cow<'static, str>,
    /// `rpc.system`, `rpc.service`, `rpc.method`, in that order.
    pub(crate) attributes: [KeyValue; 3],
}

/// The [`Method`] of a call to `path` (`/package.Service/Method`).
pub(crate) fn method(path: &str) -> Method {
    thread_local! {
        static CACHE: RefCell<HashMap<Box<str>, Method>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        if let Some(method) = cache.borrow().get(path) {
            return method.clone();
        }
        let method = build(path);
        let mut cache = cache.borrow_mut();
        if cache.len() < MAX_METHODS && matches!(method.name, Cow::Borrowed(_)) {
            cache.insert(path.into(), method.clone());
        }
        method
    })
}

fn build(path: &str) -> Method {
    let (service, method) = split_path(path);
    Method {
        name: intern(path.strip_prefix('/').unwrap_or(path)),
        attributes: [
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", StringValue::from(Arc::<str>::from(service))),
            KeyValue::new("rpc.method", StringValue::from(Arc::<str>::from(method))),
        ],
    }
}

/// `name` as a `'static` string, from the process-wide [`Interner`].
fn intern(name: &str) -> Cow<'static, str> {
    static NAMES: Mutex<Option<Interner>> = Mutex::new(None);
    // Only a set insert happens under the lock; a panic cannot leave the
    // set half-updated, so poisoning is ignored.
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    names
        .get_or_insert_with(|| Interner::new(MAX_METHODS))
        .intern(name)
}

/// Span names leaked once each, up to a bound.
#[derive(Debug)]
struct Interner {
    names: HashSet<&'static str>,
    max: usize,
}

// === impl Interner ===

impl Interner {
    fn new(max: usize) -> Self {
        Self {
            names: HashSet::new(),
            max,
        }
    }

    /// `name`, borrowed from the set; an owned copy once the set is full.
    fn intern(&mut self, name: &str) -> Cow<'static, str> {
        if let Some(interned) = self.names.get(name) {
            return Cow::Borrowed(interned);
        }
        if self.names.len() >= self.max {
            return Cow::Owned(name.to_owned());
        }
        // Leaked on purpose, at most `max` times: see the module docs.
        let interned: &'static str = Box::leak(name.into());
        self.names.insert(interned);
        Cow::Borrowed(interned)
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
    fn the_same_path_borrows_one_interned_name() {
        let a = method("/test.Interned/Once");
        let b = build("/test.Interned/Once");
        match (a.name, b.name) {
            (Cow::Borrowed(a), Cow::Borrowed(b)) => assert!(std::ptr::eq(a, b)),
            other => panic!("not interned: {other:?}"),
        }
    }

    #[test]
    fn past_the_bound_names_are_owned_and_still_right() {
        let mut interner = Interner::new(2);
        let first = interner.intern("bound.A/M");
        assert!(matches!(first, Cow::Borrowed(_)));
        assert!(matches!(interner.intern("bound.B/M"), Cow::Borrowed(_)));
        let late = interner.intern("bound.C/M");
        assert!(matches!(late, Cow::Owned(_)), "{late:?}");
        assert_eq!(late, "bound.C/M");
        // Names interned before the bound are still shared.
        match (first, interner.intern("bound.A/M")) {
            (Cow::Borrowed(a), Cow::Borrowed(b)) => assert!(std::ptr::eq(a, b)),
            other => panic!("not interned: {other:?}"),
        }
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/a.B/C"), ("a.B", "C"));
        assert_eq!(split_path("a.B/C"), ("a.B", "C"));
        assert_eq!(split_path("/nomethod"), ("nomethod", ""));
    }
}
