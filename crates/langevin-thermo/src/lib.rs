//! langevin-thermo: thermodynamic computing.
//!
//! * [`ou`]: exact simulation of Ornstein-Uhlenbeck processes (also for non-normal drift),
//!   and the crate's one kernel layer: matrix exponential, Van Loan transition
//!   covariance, Lyapunov solve, inverses and covariance square roots. The other
//!   modules call it.
//! * [`linalg`]: thermodynamic linear algebra (solve, inverse, matrix exponential, determinant).
//! * [`spu`]: circuit-level model of the stochastic processing unit (coupled RLC cells).
//! * [`analog`]: analog Langevin posterior samplers with time and energy accounting.
//! * [`tngd`]: thermodynamic natural gradient descent (data, model, OU solver, training).
//! * [`error`]: the crate's one error type, [`error::ThermoError`].

pub mod analog;
pub mod error;
pub mod linalg;
pub mod ou;
pub mod spu;
pub mod tngd;
