use sinew_core::body::{End, Guard, GuardBody};

use super::limits::Slot;

/// The response body of a [`Bulkhead`](super::Bulkhead)'s call: it holds
/// the call's slot until it ends (at its trailers, its end, an error, or
/// its drop). A call whose response ended the call at its headers holds
/// none, nor does the body of a call made around the bulkhead (a client
/// with none: [`GuardBody::unguarded`]).
pub type SlotBody<B> = GuardBody<B, HeldSlot>;

/// A bulkhead slot held by a [`SlotBody`]: freed when the body's call ends
/// or the body is dropped, whichever comes first.
#[derive(Debug)]
pub struct HeldSlot {
    /// Held for its drop, which gives the slot back.
    _slot: Slot,
}

impl HeldSlot {
    pub(crate) fn new(slot: Slot) -> Self {
        Self { _slot: slot }
    }
}

/// Dropping the slot frees it.
impl Guard for HeldSlot {
    fn finish(self, _end: End<'_>) {}
}
