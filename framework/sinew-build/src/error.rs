//! The one error type of sinew-build.

use std::{fmt, io, path::PathBuf};

/// Why a build of the contracts failed.
///
/// Its `Display` (and its `Debug`, so that a `build.rs` returning
/// `Result<(), sinew_build::Error>` prints it well) reads
/// `path/to/file.proto:LINE:COLUMN: reason`, the form editors and terminals
/// turn into a link.
pub struct Error {
    kind: Box<ErrorKind>,
}

#[derive(Debug)]
enum ErrorKind {
    /// A contract is wrong: a syntax error, an unresolved type, a bad option.
    Contract {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        reason: String,
    },
    /// A file or folder could not be read.
    Io { path: PathBuf, source: io::Error },
    /// Writing the generated code failed.
    Generate(io::Error),
}

// === impl Error ===

impl Error {
    pub(crate) fn contract(
        file: impl Into<String>,
        line: Option<usize>,
        column: Option<usize>,
        reason: impl Into<String>,
    ) -> Self {
        Self::from_kind(ErrorKind::Contract {
            file: file.into(),
            line,
            column,
            reason: reason.into(),
        })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::from_kind(ErrorKind::Io {
            path: path.into(),
            source,
        })
    }

    pub(crate) fn generate(source: io::Error) -> Self {
        Self::from_kind(ErrorKind::Generate(source))
    }

    fn from_kind(kind: ErrorKind) -> Self {
        Self {
            kind: Box::new(kind),
        }
    }

    /// The contract file the error is in, as found on disk, if the error is
    /// about a contract.
    pub fn file(&self) -> Option<&str> {
        match &*self.kind {
            ErrorKind::Contract { file, .. } => Some(file),
            _ => None,
        }
    }

    /// The 1-based line the error is on, where known.
    pub fn line(&self) -> Option<usize> {
        match &*self.kind {
            ErrorKind::Contract { line, .. } => *line,
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            ErrorKind::Contract {
                file,
                line,
                column,
                reason,
            } => {
                write!(f, "{file}")?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                    if let Some(column) = column {
                        write!(f, ":{column}")?;
                    }
                }
                write!(f, ": {reason}")
            }
            ErrorKind::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ErrorKind::Generate(source) => write!(f, "cannot write generated code: {source}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A build script that returns this error prints its Debug form; make
        // that the readable message rather than a struct dump.
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            ErrorKind::Io { source, .. } | ErrorKind::Generate(source) => Some(source),
            ErrorKind::Contract { .. } => None,
        }
    }
}
