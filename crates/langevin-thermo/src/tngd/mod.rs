//! Thermodynamic natural gradient descent (TNGD).
//!
//! Natural gradient descent preconditions the gradient `g` with the inverse of
//! a curvature matrix, here the generalised Gauss-Newton (GGN)
//! `F = (1/B) Σ_b J_bᵀ H_b J_b + λ I` of a batch (for softmax cross-entropy
//! `H_b = diag(p_b) - p_b p_bᵀ`). TNGD (Donatella et al., "Thermodynamic
//! natural gradient descent", 2024) leaves the solve `F⁻¹ g` to an analog
//! device whose state follows the Ornstein-Uhlenbeck process
//!
//! ```text
//!     dg̃ = -(F g̃ - g) dt + sqrt(2 κ₀) dW,        t in units of τ = RC,
//! ```
//!
//! whose mean relaxes from its start to `F⁻¹ g` (`E g̃(t) = F⁻¹g + e^{-Ft}(g̃(0) - F⁻¹g)`)
//! and whose stationary covariance is `κ₀ F⁻¹`. Each step:
//!
//! 1. compute `g` and `F` on a batch (digital);
//! 2. (optional delay `t_d`: the device keeps running on the previous `(F, g)`
//!    while the new one is uploaded);
//! 3. run the OU process for analog time `t` *starting from the previous g̃*
//!    (the device is not reset, so at `t = 0` TNGD is SGD on the stale
//!    preconditioned direction and for `t → ∞` it is NGD plus noise of
//!    covariance `κ₀ F⁻¹`);
//! 4. update θ with SGD or Adam using g̃.
//!
//! The OU step is simulated exactly (eigendecomposition of the symmetric
//! `F`; [`Integrator::Exact`]) or with Euler-Maruyama with a stated step
//! ([`Integrator::EulerMaruyama`], the "simulation step" of the paper; it
//! must satisfy `dt λ_max(F) < 2`). The update rules are the library's
//! optimiser kernels ([`langevin::optim`]) and the NGD-CG baseline the
//! library's conjugate gradients ([`langevin::curvature::cg`]).
//!
//! The model is a self-contained tanh MLP with one hidden layer ([`Mlp`]):
//! explicit forward, backward and per-example output Jacobians (tested
//! against finite differences). Parameter ravel order: `W1` (hidden × d_in,
//! row-major), `b1`, `W2` (k × hidden, row-major), `b2`.
//!
//! **Modelled wall time.** Digital work (gradient, GGN build, Cholesky
//! solve, CG iterations) is *measured* with a monotonic clock on the host;
//! analog work is *modelled* as `(t + t_d) τ` seconds with `τ = RC`
//! ([`TrainConfig::tau_seconds`], default 1 µs: R = 1 kΩ, C = 1 nF, the
//! order of magnitude of the SPU's RC constant). Upload of `F` to the device
//! is not modelled (stated in the results).

#![allow(clippy::needless_range_loop)] // dense numerical kernels index several arrays at once
//!
//! # Modules
//! * [`data`]: the data set ([`Dataset`], read with the models crate's CSV loader);
//! * [`model`]: the MLP, its gradient, Jacobians and factored GGN ([`Mlp`], [`Curvature`]);
//! * [`optimizer`]: TNGD for any model, from a gradient and a GGN-vector product closure ([`Tngd`]);
//! * [`solver`]: the device's OU process ([`ou_mean`], [`ou_evolve`], [`ou_evolve_factored`]);
//! * [`train`](mod@train): update rules, methods and the training loop ([`train()`]).

pub mod data;
pub mod model;
pub mod optimizer;
pub mod solver;
pub mod train;

pub use data::Dataset;
pub use model::{Curvature, Mlp};
pub use optimizer::Tngd;
pub use solver::{ou_evolve, ou_evolve_factored, ou_mean, Integrator, OuConfig};
pub use train::{
    log_grid, train, tune_lr, LrCandidate, LrSearch, Method, Optimizer, TracePoint, TrainConfig,
    TrainResult,
};
