//! The typed error of langevin's library crates.

use thiserror::Error;

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library. Structured so callers can
/// react (for example count a [`Error::NonFiniteLogDensity`] as a divergence).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A hyper-parameter is invalid; raised at construction.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// Two sizes that must agree do not.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// The log density or its gradient was NaN or infinite. The state passed
    /// to `update` is left untouched.
    #[error("non-finite log density at step {step}: value {value}, {bad_grad} non-finite gradient entries")]
    NonFiniteLogDensity {
        step: u64,
        value: f64,
        bad_grad: usize,
    },

    /// A matrix that must be symmetric positive definite is not.
    #[error("matrix is not positive definite{}", context.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    NotPositiveDefinite { context: Option<String> },

    /// Reading or writing a file failed; `line` is 1-based when known.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Io {
        path: String,
        line: Option<usize>,
        message: String,
    },

    /// Bad data (not a file error): names what is wrong.
    #[error("invalid data: {0}")]
    Data(String),

    /// The user's density or model raised an error.
    #[error("log density evaluation failed: {0}")]
    Density(String),

    /// An error from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}
