//! Answering one call from several concurrent upstream calls, with
//! partial results.
//!
//! An [`Aggregate`] holds the deadline of the call being answered; each
//! [`part`](Aggregate::part) of the answer runs inside it, with a timeout
//! of its own, and ends as a [`Part`]: its value, or the status it failed
//! with, DEADLINE_EXCEEDED if it ran out of time. The parts run together
//! on the caller's task with `tokio::join!`, so each may have its own
//! type:
//!
//! ```ignore
//! let aggregate = Aggregate::new();
//! let (profile, orders) = tokio::join!(
//!     aggregate.part("profile", Duration::from_millis(200), users.get(request)),
//!     aggregate.part("orders", Duration::from_millis(500), orders.list(request)),
//! );
//! let profile = profile.into_ok().ok_or_else(|| Status::unavailable("no profile"))?;
//! let summary = failed(&[&orders]); // reported alongside the partial answer
//! ```

use std::time::Duration;

use prost::Message as _;
use sinew_core::deadline::Deadline;
use tokio::time::Instant;
use tonic::{Code, Status};

pub use crate::RpcStatus;

/// Concurrent parts of one answer, each inside the caller's deadline.
///
/// Holds the outer deadline: the incoming call's
/// ([`Deadline::current`], read when the aggregate is made) or one given.
#[derive(Debug, Clone, Copy)]
pub struct Aggregate {
    deadline: Option<Deadline>,
}

impl Default for Aggregate {
    /// The same as [`Aggregate::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Aggregate {
    /// Inside the current incoming call's deadline
    /// ([`Deadline::current`]), if any; with none, each part is bounded by
    /// its own timeout alone.
    pub fn new() -> Self {
        Self {
            deadline: Deadline::current(),
        }
    }

    /// Inside `deadline`.
    pub fn within(deadline: Deadline) -> Self {
        Self {
            deadline: Some(deadline),
        }
    }

    /// The outer deadline, if any.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// Runs `call` as the part `name`, with at most `timeout` of its own,
    /// inside the outer deadline.
    ///
    /// The part's deadline is the sooner of the two (its `timeout`
    /// counted from when this future is first polled). `call` runs under
    /// [`Deadline::scope`] of that deadline, so the sinew client calls it
    /// makes send the shrunk deadline upstream. Past it, `call` is
    /// dropped and the part is DEADLINE_EXCEEDED, with a message saying
    /// which of the two ran out. A part whose deadline has passed already
    /// is DEADLINE_EXCEEDED without `call` being polled at all.
    ///
    /// With no outer deadline and a `timeout` too long to add to the
    /// clock (such as [`Duration::MAX`]), `call` runs unbounded and
    /// outside any deadline scope.
    pub async fn part<T, F>(&self, name: &'static str, timeout: Duration, call: F) -> Part<T>
    where
        F: Future<Output = Result<T, Status>>,
    {
        let own = Instant::now().checked_add(timeout).map(Deadline::at);
        // Whether the part's own timeout is what bounds it.
        let own_is_sooner = own.is_some_and(|own| self.deadline.is_none_or(|outer| own < outer));
        let deadline = if own_is_sooner { own } else { self.deadline };
        let Some(deadline) = deadline else {
            return Part {
                name,
                result: call.await,
            };
        };
        let exceeded = || {
            let why = if own_is_sooner {
                format!("part {name} took longer than its timeout of {timeout:?}")
            } else {
                format!("part {name} ran out of the call's deadline")
            };
            tracing::debug!(part = name, "{why}");
            Err(Status::deadline_exceeded(why))
        };
        if deadline.remaining().is_zero() {
            return Part {
                name,
                result: exceeded(),
            };
        }
        let result = tokio::time::timeout_at(deadline.instant(), deadline.scope(call))
            .await
            .unwrap_or_else(|_elapsed| exceeded());
        Part { name, result }
    }
}

/// One part's outcome.
#[derive(Debug)]
pub struct Part<T> {
    /// The part's name, as given to [`Aggregate::part`].
    pub name: &'static str,
    /// Its value, or the status it failed with.
    pub result: Result<T, Status>,
}

impl<T> Part<T> {
    /// The value, if the part succeeded.
    pub fn ok(&self) -> Option<&T> {
        self.result.as_ref().ok()
    }

    /// The value, if the part succeeded.
    pub fn into_ok(self) -> Option<T> {
        self.result.ok()
    }

    /// The part's status as a `google.rpc.Status`: code 0 if it
    /// succeeded, else its code and message, and the details of the
    /// `google.rpc.Status` its status carried (tonic's
    /// [`Status::details`] bytes), if any. Details that do not decode as
    /// one are left out.
    pub fn status(&self) -> RpcStatus {
        match &self.result {
            Ok(_) => RpcStatus::default(),
            Err(status) => rpc_status(status),
        }
    }
}

/// What a summary of an answer's parts needs of each, whatever its value
/// type.
pub trait PartStatus {
    /// The part's name.
    fn name(&self) -> &'static str;
    /// Whether the part succeeded.
    fn is_ok(&self) -> bool;
    /// The part's status (see [`Part::status`]).
    fn status(&self) -> RpcStatus;
}

impl<T> PartStatus for Part<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    fn status(&self) -> RpcStatus {
        Part::status(self)
    }
}

/// The parts among `parts` that failed, by name, with their statuses, in
/// the order given: what a partial answer reports as missing.
pub fn failed(parts: &[&dyn PartStatus]) -> Vec<(&'static str, RpcStatus)> {
    parts
        .iter()
        .filter(|part| !part.is_ok())
        .map(|part| (part.name(), part.status()))
        .collect()
}

/// `status` as a `google.rpc.Status`.
fn rpc_status(status: &Status) -> RpcStatus {
    let details = match status.details() {
        [] => Vec::new(),
        bytes => match RpcStatus::decode(bytes) {
            Ok(carried) => carried.details,
            Err(error) => {
                tracing::debug!(%error, "status details are not a google.rpc.Status: left out");
                Vec::new()
            }
        },
    };
    RpcStatus {
        code: code_number(status.code()),
        message: status.message().to_owned(),
        details,
    }
}

/// The number of `code`.
fn code_number(code: Code) -> i32 {
    code.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;
    use tokio::time::sleep;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A deadline `millis` from now.
    fn in_ms(millis: u64) -> Deadline {
        Deadline::at(Instant::now() + ms(millis))
    }

    /// Succeeds with `value` after `millis`.
    async fn after<T>(millis: u64, value: T) -> Result<T, Status> {
        sleep(ms(millis)).await;
        Ok(value)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_part_times_out_while_the_others_succeed() {
        let aggregate = Aggregate::within(in_ms(10_000));
        let start = Instant::now();
        let (dropped, was_dropped) = oneshot::channel::<()>();
        let (fast, slow, other) = tokio::join!(
            aggregate.part("fast", ms(1000), after(100, 1)),
            aggregate.part("slow", ms(200), async move {
                let _held = dropped;
                after(5000, "late").await
            }),
            aggregate.part("other", ms(1000), after(300, vec![3])),
        );
        assert_eq!(fast.ok(), Some(&1));
        assert_eq!(other.into_ok(), Some(vec![3]));
        assert_eq!(slow.name, "slow");
        let status = slow.result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "part slow took longer than its timeout of 200ms"
        );
        // The slow part's future was dropped at its timeout.
        assert!(was_dropped.await.is_err());
        assert_eq!(Instant::now() - start, ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_outer_deadline_bounds_a_part_with_a_longer_timeout() {
        let aggregate = Aggregate::within(in_ms(300));
        let start = Instant::now();
        let part = aggregate.part("long", ms(1000), after(2000, ())).await;
        let status = part.result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(status.message(), "part long ran out of the call's deadline");
        assert_eq!(Instant::now() - start, ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_keeps_its_code_message_and_details() {
        let detail = prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: vec![10, 3, b'b', b'a', b'd'],
        };
        let carried = RpcStatus {
            code: 5,
            message: "no such user".into(),
            details: vec![detail.clone()],
        };
        let aggregate = Aggregate::within(in_ms(1000));
        let failing = async {
            Err::<(), _>(Status::with_details(
                Code::NotFound,
                "no such user",
                carried.encode_to_vec().into(),
            ))
        };
        let (part, plain, fine) = tokio::join!(
            aggregate.part("user", ms(100), failing),
            aggregate.part("plain", ms(100), async {
                Err::<(), _>(Status::permission_denied("not yours"))
            }),
            aggregate.part("fine", ms(100), after(10, ())),
        );
        assert_eq!(part.ok(), None);
        let status = part.result.as_ref().unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such user");
        assert_eq!(part.status(), carried);
        assert_eq!(
            plain.status(),
            RpcStatus {
                code: 7,
                message: "not yours".into(),
                details: vec![],
            }
        );
        assert_eq!(fine.status(), RpcStatus::default());
        // Details that are not a google.rpc.Status are left out.
        let odd = Part::<()> {
            name: "odd",
            result: Err(Status::with_details(
                Code::Internal,
                "odd",
                vec![0xff].into(),
            )),
        };
        assert_eq!(odd.status().details, vec![]);
        assert_eq!(
            failed(&[&part, &plain, &fine]),
            vec![("user", carried), ("plain", plain.status())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_runs_inside_its_shrunk_deadline() {
        let start = Instant::now();
        let current = async { Ok(Deadline::current()) };
        // Its own timeout is sooner than the call's deadline.
        let part = Aggregate::within(in_ms(10_000))
            .part("own", ms(1000), current)
            .await;
        assert_eq!(part.into_ok(), Some(Some(Deadline::at(start + ms(1000)))));
        // The call's deadline is sooner than its own timeout.
        let outer = in_ms(300);
        let part = Aggregate::within(outer)
            .part("outer", ms(1000), async { Ok(Deadline::current()) })
            .await;
        assert_eq!(part.into_ok(), Some(Some(outer)));
        // Nested: a part's parts are inside its deadline.
        let part = Aggregate::within(in_ms(10_000))
            .part("outer", ms(500), async {
                let inner = Aggregate::new();
                assert_eq!(inner.deadline(), Some(Deadline::at(start + ms(500))));
                Ok(inner
                    .part("inner", ms(1000), async { Ok(Deadline::current()) })
                    .await
                    .into_ok())
            })
            .await;
        assert_eq!(
            part.into_ok(),
            Some(Some(Some(Deadline::at(start + ms(500)))))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_reads_the_incoming_calls_deadline() {
        let deadline = in_ms(250);
        let aggregate = deadline.scope(async { Aggregate::new() }).await;
        assert_eq!(aggregate.deadline(), Some(deadline));
        // Outside any call, each part has its own timeout alone.
        let aggregate = Aggregate::new();
        assert_eq!(aggregate.deadline(), None);
        let start = Instant::now();
        let part = aggregate.part("alone", ms(400), after(1000, ())).await;
        assert_eq!(part.result.unwrap_err().code(), Code::DeadlineExceeded);
        assert_eq!(Instant::now() - start, ms(400));
        // And no timeout at all: unbounded.
        let part = aggregate
            .part("unbounded", Duration::MAX, async {
                Ok(Deadline::current())
            })
            .await;
        assert_eq!(part.into_ok(), Some(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_past_its_deadline_is_not_started() {
        let aggregate = Aggregate::within(in_ms(100));
        tokio::time::advance(ms(100)).await;
        let started = Arc::new(AtomicBool::new(false));
        let part = aggregate
            .part("late", ms(1000), async {
                started.store(true, Ordering::Relaxed);
                Ok(())
            })
            .await;
        assert_eq!(part.result.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(!started.load(Ordering::Relaxed));
        let part = Aggregate::within(in_ms(1000))
            .part("no time", Duration::ZERO, async {
                started.store(true, Ordering::Relaxed);
                Ok(())
            })
            .await;
        assert_eq!(part.result.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(!started.load(Ordering::Relaxed));
    }
}
