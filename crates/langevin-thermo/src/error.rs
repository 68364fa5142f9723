//! The one error type of the crate: the exact OU simulator, thermodynamic linear
//! algebra, the SPU and analog circuit models, and TNGD.

use thiserror::Error;

/// Result alias of the crate's fallible functions.
pub type Result<T> = std::result::Result<T, ThermoError>;

/// Why a call of this crate was refused or failed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ThermoError {
    /// A matrix that must be square is not.
    #[error("{what} must be square, got {rows}x{cols}")]
    NotSquare {
        what: &'static str,
        rows: usize,
        cols: usize,
    },

    /// Two sizes that must agree do not.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// A matrix that must be symmetric positive definite (or semi-definite) is not.
    #[error("{what} is not {}positive definite{}", if *.semi { "semi-" } else { "" }, .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NotPositiveDefinite {
        what: &'static str,
        semi: bool,
        detail: Option<String>,
    },

    /// A matrix that must be symmetric is not (beyond a relative tolerance).
    #[error("{what} is not symmetric: |a_ij - a_ji| = {asym:.3e} at ({i}, {j})")]
    NotSymmetric {
        what: &'static str,
        i: usize,
        j: usize,
        asym: f64,
    },

    /// The drift matrix has an eigenvalue with non-positive real part, so the
    /// process has no stationary distribution.
    #[error("unstable drift: eigenvalue {re:+.4e}{im:+.4e}i of A has non-positive real part")]
    UnstableDrift { re: f64, im: f64 },

    /// Time grid not strictly increasing.
    #[error("time grid must be strictly increasing: t[{index}] = {t} after {prev}")]
    NonIncreasingTimes { index: usize, prev: f64, t: f64 },

    /// A hyper-parameter or argument is invalid.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// An input contains NaN or infinity.
    #[error("{what} contains a non-finite value")]
    NonFinite { what: &'static str },

    /// A numerical kernel failed (e.g. an eigenvalue iteration did not converge).
    #[error("numerical failure: {0}")]
    Numerical(String),

    /// A matrix that must be invertible is singular to working precision.
    #[error("{what} is singular")]
    Singular { what: &'static str },

    /// A matrix the simulated circuit cannot realise (e.g. the SPU needs an H-matrix).
    #[error("not realisable on the device: {0}")]
    NotRealisable(String),

    /// Bad data: a data set, its labels or its file (the message names the file and line).
    #[error("invalid data: {0}")]
    Data(String),

    /// A training step produced a non-finite update direction.
    #[error("non-finite update direction at step {step}: {bad} non-finite entries")]
    NonFiniteDirection { step: u64, bad: usize },
}

impl ThermoError {
    /// Whether the error is the caller's input being wrong (bad matrices, data or
    /// settings), as opposed to a numerical failure or a divergence.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            ThermoError::Numerical(_) | ThermoError::NonFiniteDirection { .. }
        )
    }
}

impl From<ThermoError> for langevin_core::Error {
    fn from(e: ThermoError) -> Self {
        use langevin_core::Error as E;
        match e {
            ThermoError::DimensionMismatch {
                what,
                expected,
                got,
            } => E::DimensionMismatch {
                what,
                expected,
                got,
            },
            ThermoError::NotPositiveDefinite { .. } => E::NotPositiveDefinite {
                context: Some(e.to_string()),
            },
            ThermoError::InvalidConfig { field, reason } => E::InvalidConfig { field, reason },
            ThermoError::NonFiniteDirection { step, bad } => E::NonFiniteLogDensity {
                step,
                value: f64::NAN,
                bad_grad: bad,
            },
            other => E::Data(other.to_string()),
        }
    }
}
