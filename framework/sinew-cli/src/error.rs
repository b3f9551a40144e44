//! What can go wrong, and the exit code of each.

/// Why a command failed; [`exit_code`](Self::exit_code) is the process's
/// exit code (the table is in the crate docs).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached, or the TLS handshake failed.
    #[error("{0}")]
    Connect(String),
    /// A call the command needs failed (reflection, the health check).
    #[error("{0}")]
    Rpc(String),
    /// The server answered the call with an error status: its code, and
    /// the status told for a reader (the message and decoded details).
    #[error("{text}")]
    Status {
        /// The status code.
        code: tonic::Code,
        /// `NOT_FOUND (5): no such order`, and the details.
        text: String,
    },
    /// `health`: the service is not serving.
    #[error("{0}")]
    NotServing(String),
    /// `health`: the server does not know the service.
    #[error("{0}")]
    UnknownService(String),
    /// Input that cannot be used: JSON that does not fit, an unknown name,
    /// a contract that does not compile.
    #[error("{0}")]
    Input(String),
    /// Arguments that make no sense together.
    #[error("{0}")]
    Usage(String),
    /// A directory or file that cannot be created.
    #[error("{0}")]
    CannotCreate(String),
    /// A file that cannot be read or written.
    #[error("{0}")]
    Io(String),
}

impl CliError {
    /// The exit code of a usage error.
    pub const USAGE: u8 = 64;

    /// The process's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Connect(_) => 2,
            Self::Rpc(_) => 3,
            Self::NotServing(_) => 4,
            Self::UnknownService(_) => 5,
            Self::Usage(_) => Self::USAGE,
            Self::Input(_) => 65,
            Self::CannotCreate(_) => 73,
            Self::Io(_) => 74,
            // 100 + the code: 100 is OK, which never gets here, up to
            // 116 for UNAUTHENTICATED.
            Self::Status { code, .. } => 100 + u8::try_from(*code as i32).unwrap_or(2),
        }
    }
}

/// The canonical name of a status code: `NOT_FOUND`.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<crate::breaking::BreakingError> for CliError {
    fn from(error: crate::breaking::BreakingError) -> Self {
        use crate::breaking::BreakingError as E;
        let text = error.to_string();
        match error {
            E::Read { .. } | E::TempDir(_) => Self::Io(text),
            E::NotADirectory(_) | E::NotARepository { .. } | E::UnknownRef { .. } => {
                Self::Usage(text)
            }
            E::NoContracts(_) | E::Compile { .. } => Self::Input(text),
            E::GitMissing(_) | E::Git { .. } => Self::Io(text),
        }
    }
}

impl From<crate::new::NewError> for CliError {
    fn from(error: crate::new::NewError) -> Self {
        use crate::new::NewError as E;
        let text = error.to_string();
        match error {
            E::InvalidName { .. } | E::NoParent(_) | E::NotACheckout(_) | E::NotUtf8(_) => {
                Self::Usage(text)
            }
            E::Exists(_) | E::Write { .. } => Self::CannotCreate(text),
            E::ReadContract { .. } => Self::Io(text),
            E::Contract(_) | E::NoService(_) | E::UnsupportedMessage { .. } => Self::Input(text),
        }
    }
}

impl From<crate::bench::BenchError> for CliError {
    fn from(error: crate::bench::BenchError) -> Self {
        use crate::bench::BenchError as E;
        let text = error.to_string();
        match error {
            E::InvalidPlan(_) | E::InvalidTarget { .. } | E::InvalidMetadata(_) => {
                Self::Usage(text)
            }
            E::MessageTooLarge(_) => Self::Input(text),
            E::Connect { .. } | E::Tls { .. } | E::NotHttp2 { .. } => Self::Connect(text),
            E::Http2 { .. } | E::Worker(_) => Self::Rpc(text),
        }
    }
}
