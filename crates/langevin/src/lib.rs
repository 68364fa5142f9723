//! langevin: Bayesian learning with Langevin dynamics.
//!
//! Every method is a [`Transform`](langevin_core::Transform) built from a
//! validated config and a [`LogDensity`](langevin_core::LogDensity).

pub use langevin_core as core;
pub use langevin_core::{
    chain_rng, ChainRng, Error, FnDensity, LogDensity, ParamLayout, Params, Result, Schedule,
    Transform, TransformState,
};

pub mod curvature;
pub mod diagnostics;
pub mod ekf;
pub mod ensemble;
pub mod laplace;
pub mod metrics;
pub mod optim;
pub mod predictive;
pub mod samples;
mod scratch;
pub mod sgmcmc;
pub mod vi;
