//! The typed error of langevin's library crates.

use thiserror::Error;

/// Result alias with [`Error`](enum@Error).
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

    /// A numerical method failed (no convergence, a non-finite intermediate).
    #[error("numerical failure: {0}")]
    Numerical(String),

    /// An error from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// A saved run (checkpoint, draws file) is damaged or does not belong to
    /// this run: names the file and the field.
    #[error("{path}: {field}: {reason}")]
    InvalidCheckpoint {
        path: String,
        field: String,
        reason: String,
    },

    /// An error of one chain of a run. (The wrapped error is shown in the
    /// message and is not also the [`std::error::Error::source`], so that a
    /// report of the whole chain of causes names it once.)
    #[error("chain {chain}: {error}")]
    InChain { chain: usize, error: Box<Error> },

    /// Another process of a run split over processes failed (the message is
    /// its error's, `bad_input` its [`Error::is_bad_input`]); every process
    /// ends the run with it.
    #[error("rank {rank}: {message}")]
    Remote {
        rank: usize,
        message: String,
        bad_input: bool,
    },
}

impl Error {
    /// Whether the run can go on after this error (nuts-rs style): a
    /// non-finite log density is a *divergence*, the state is untouched and
    /// the run loop skips the step and counts it; every other error stops it.
    pub fn is_recoverable(&self) -> bool {
        matches!(self.root(), Error::NonFiniteLogDensity { .. })
    }

    /// The error itself, without [`Error::InChain`] wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::InChain { error, .. } => error.root(),
            e => e,
        }
    }

    /// Whether the error is the caller's input being wrong (a configuration,
    /// a size, a file, data, a saved run) rather than a failure of the
    /// computation: front ends map it to their "bad input" exit.
    pub fn is_bad_input(&self) -> bool {
        if let Error::Remote { bad_input, .. } = self.root() {
            return *bad_input;
        }
        matches!(
            self.root(),
            Error::InvalidConfig { .. }
                | Error::DimensionMismatch { .. }
                | Error::NotPositiveDefinite { .. }
                | Error::Io { .. }
                | Error::Data(_)
                | Error::InvalidCheckpoint { .. }
        )
    }

    /// Shorthand for [`Error::InvalidCheckpoint`].
    pub fn checkpoint(
        path: impl std::fmt::Display,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidCheckpoint {
            path: path.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`] on `path`.
    pub fn io(path: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.to_string(),
            line: None,
            message: e.to_string(),
        }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

/// A cell or field of an input file as shown in an error message: whole when
/// short, else its first 40 characters and its length (a 5 MB cell is not
/// echoed into a terminal).
pub fn shown_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 40;
    if cell.len() <= SHOWN {
        return std::borrow::Cow::Borrowed(cell);
    }
    let cut = (0..=SHOWN)
        .rev()
        .find(|&i| cell.is_char_boundary(i))
        .unwrap_or(0);
    std::borrow::Cow::Owned(format!("{}... ({} characters)", &cell[..cut], cell.len()))
}

#[cfg(test)]
mod shown_cell_tests {
    use super::shown_cell;

    #[test]
    fn long_cells_are_cut_at_a_character_boundary() {
        assert_eq!(shown_cell("1.5x"), "1.5x");
        let long = "é".repeat(30); // 60 bytes, boundaries every 2
        let s = shown_cell(&long);
        assert_eq!(s, format!("{}... (60 characters)", "é".repeat(20)));
    }
}
