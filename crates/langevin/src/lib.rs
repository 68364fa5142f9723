//! langevin: Bayesian learning with Langevin dynamics.
//!
//! Every method is a [`Transform`] built from a
//! validated config and a [`LogDensity`].
//! [`run`] is the one run loop that turns a transform into draws: chains in
//! rounds, observers (draws streamed to CSV, checkpoints, progress), one
//! divergence policy, checkpoint and byte-identical resume. Every front end
//! (the `langevin` program, the Python package) drives it.

pub use langevin_core as core;
pub use langevin_core::{
    chain_rng, ChainRng, Error, FnDensity, LogDensity, ParamLayout, Params, Result, Schedule,
    Transform, TransformState,
};
/// rsmpi (cargo feature `mpi`): `langevin::mpi::initialize()` starts MPI.
#[cfg(feature = "mpi")]
pub use mpi;

pub mod adapt;
pub mod curvature;
pub mod diagnostics;
pub mod ekf;
pub mod ensemble;
pub mod laplace;
pub mod metrics;
pub mod nuts;
pub mod optim;
pub mod predictive;
pub mod run;
pub mod samples;
mod scratch;
pub mod sgmcmc;
pub mod shard;
pub mod tune;
pub mod vi;
