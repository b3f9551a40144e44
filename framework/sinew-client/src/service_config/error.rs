/// A service config that cannot be used. Names the JSON path of the field
/// at fault and says why.
///
/// Displays as `path: reason`, for example
/// `methodConfig[0].retryPolicy.maxAttempts: must be at least 2, got 1`.
/// Errors about the document as a whole (not JSON, not an object) have an
/// empty path and display as `service config: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", if field.is_empty() { "service config" } else { field.as_str() })]
pub struct ServiceConfigError {
    field: String,
    reason: String,
}

// === impl ServiceConfigError ===

impl ServiceConfigError {
    pub(super) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The JSON path of the field at fault, such as
    /// `methodConfig[0].name[1].service`; empty for the whole document.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
