//! The typed error of langevin-models.

use thiserror::Error;

/// Result alias with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What can go wrong loading data or building a model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Io { path: String, message: String },

    /// One cell is wrong (`line` is 1-based, counting the header as line 1).
    #[error("{path}:{line}: column `{column}`: {message}")]
    Cell {
        path: String,
        line: usize,
        column: String,
        message: String,
    },

    /// A whole row is wrong (ragged, unparsable).
    #[error("{path}:{line}: {message}")]
    Row {
        path: String,
        line: usize,
        message: String,
    },

    /// The data set as a whole is wrong (empty, missing target, one class).
    #[error("{path}: {message}")]
    Data { path: String, message: String },

    /// A model or data option is invalid.
    #[error("invalid configuration: `{field}` {reason}")]
    Config { field: &'static str, reason: String },

    /// An error from langevin-core.
    #[error(transparent)]
    Core(#[from] langevin_core::Error),

    /// An error from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// True when the error is the user's input being wrong (data or options),
    /// false for internal failures.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ModelError::Io { .. }
            | ModelError::Cell { .. }
            | ModelError::Row { .. }
            | ModelError::Data { .. }
            | ModelError::Config { .. } => true,
            ModelError::Core(e) => matches!(
                e,
                langevin_core::Error::InvalidConfig { .. }
                    | langevin_core::Error::DimensionMismatch { .. }
                    | langevin_core::Error::Io { .. }
                    | langevin_core::Error::Data(_)
            ),
            ModelError::Candle(_) => false,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        ModelError::Config {
            field,
            reason: reason.into(),
        }
    }
}
