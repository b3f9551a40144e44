/// A fault spec that does not parse. Names the rule (its entry number,
/// from 1, in the order written) and the token at fault.
///
/// Displays as `fault rule 2: "error=UNAVAILBLE": unknown status code ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault rule {rule}: {token:?}: {reason}")]
pub struct FaultParseError {
    rule: usize,
    token: String,
    reason: String,
}

// === impl FaultParseError ===

impl FaultParseError {
    pub(super) fn new(rule: usize, token: &str, reason: impl Into<String>) -> Self {
        Self {
            rule,
            token: token.to_owned(),
            reason: reason.into(),
        }
    }

    /// The number of the `;`-separated entry at fault, from 1.
    pub fn rule(&self) -> usize {
        self.rule
    }

    /// The token at fault; the whole rule when something is missing from
    /// it rather than wrong in it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// What is wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The cause of a failure the fault layer injected on purpose: the source
/// of the status an `error` or `abort` fault answers with. Callers and
/// layers that must tell a rehearsed failure from a real one find it with
/// [`cause`](crate::status::cause).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected fault")]
pub struct InjectedFault;
