use std::time::Duration;

/// The limits of one bulkhead (or of one group of methods in it).
///
/// Build one from the defaults and change what you need:
/// `BulkheadConfig { max_concurrent: 8, ..BulkheadConfig::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls in flight at once. Default 100. 0 admits nothing: every call
    /// waits in the queue and times out there.
    pub max_concurrent: usize,
    /// Calls that may wait for a slot. Default 50; 0 means a call that
    /// finds no slot fails at once.
    pub max_queue: usize,
    /// The longest a call waits for a slot, measured from when it is made.
    /// Default 500ms: long enough to ride out a burst, short enough that
    /// the caller's deadline is still worth something afterwards.
    pub queue_timeout: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 100,
            max_queue: 50,
            queue_timeout: Duration::from_millis(500),
        }
    }
}
