//! The one error type of the `mpsae` crate.

use std::path::PathBuf;

/// Everything that can go wrong in mpsae, each variant saying what and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyper-parameter or option is invalid; the message names it and says why.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The argument's name (`k`, `dropout`, `batch size`, ...).
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Shapes that do not fit together (model and data dimensions, tensor lengths).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A file that cannot be used; the message says why.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A bad row of a data file.
    #[error("{}: row {row}: {message}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// Row index in that file (from 0).
        row: usize,
        /// What is wrong with the row.
        message: String,
    },
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Training could not go on (too many non-finite steps in a row, ...).
    #[error("training stopped: {0}")]
    Training(String),
    /// Training was interrupted between two steps (a signal, or an observer that asked to stop);
    /// the state after `step` steps is in the checkpoint when the run has a folder.
    #[error("interrupted after step {step}{}", if *.checkpointed { " (checkpoint written)" } else { "" })]
    Interrupted {
        /// Steps done.
        step: u64,
        /// Whether a checkpoint of that state was written.
        checkpointed: bool,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name: name.into(), reason: reason.into() }
    }

    /// An [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File { path: path.into(), message: message.into() }
    }

    /// An [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
