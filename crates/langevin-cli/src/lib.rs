//! The `langevin` program's pipelines as a library, for front ends that run
//! them in-process (the Python package runs `langevin fit` through
//! [`fit::run`], so its defaults, adaptation and convergence verdict are the
//! program's own). The binary (`src/main.rs`) is a thin command-line parser
//! over this crate.

#[macro_use]
pub mod exit;
pub mod evaluate;
pub mod fit;
pub mod glm;
pub mod rundir;
pub mod summary;
