//! Variational inference with Gaussian families, by reparameterised stochastic
//! gradients of the negative evidence lower bound (NELBO).
//!
//! With the batch-averaged log posterior ℓ and temperature T (T = 1/N targets
//! the tempered posterior of a data set of size N; T = 1 fits
//! `exp(log_posterior)` itself),
//!
//! ```text
//! NELBO(q) = −(1/S) Σₛ [ ℓ(θₛ) − T log q(θₛ) ],   θₛ ~ q  (reparameterised)
//! ```
//!
//! minimised over q's parameters by an [`Optimizer`](crate::optim::Optimizer)
//! (Adam by default).
//!
//! * [`diag`]: `q = N(m, diag(s²))`, parameters `m` and `log s`.
//! * [`dense`]: `q = N(m, L Lᵀ)` with `L` an unconstrained lower-triangular matrix.
//! * [`ivon`]: `q = N(m, diag(1/(λ(h + δ))))` by IVON (improved variational
//!   online Newton), a natural-gradient method with Adam's cost per step.
//!
//! *Stick the landing* (Roeder, Wu and Duvenaud, 2017; on by default) detaches
//! q's parameters inside `log q` only, which removes the score term whose
//! expectation is zero: the gradient estimator then has zero variance when q
//! equals the target. The dense family detaches both the mean and `L` (the
//! reference implementation, posteriors, detaches only `L`).

pub mod dense;
pub mod diag;
pub mod ivon;

pub use dense::{DenseVi, DenseViConfig, DenseViState};
pub use diag::{DiagVi, DiagViConfig, DiagViState};
pub use ivon::{Ivon, IvonConfig, IvonInfo, IvonState};

/// Per-step information of a VI update.
#[derive(Debug, Clone)]
pub struct ViInfo<A> {
    /// The NELBO estimate at q before the update.
    pub nelbo: f64,
    /// Mean of ℓ(θₛ) over the S samples.
    pub log_posterior: f64,
    /// Temperature used.
    pub temperature: f64,
    /// The user's aux output of the first sample.
    pub aux: A,
}

pub(crate) const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;
