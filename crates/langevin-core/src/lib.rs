//! Core abstractions of langevin.
//!
//! * [`Params`]: a named collection of tensors stored in one flat `f64` buffer
//!   (the *ravel order* is documented on [`ParamLayout`]).
//! * [`LogDensity`]: the user's `log_posterior(params, batch)`, returning value
//!   and gradient. Build one from a closure with [`FnDensity`] or from a candle
//!   computation with [`CandleDensity`].
//! * [`Transform`]: a validated config with `init` and `update`
//!   (optax / blackjax / posteriors style), whose `State` is plain serde data.
//! * [`Schedule`]: a step size or temperature that is a constant or any `Fn(step) -> f64`.
//! * [`Error`]: the typed error enum of the whole library.
//! * [`rng`]: explicit seedable generators; one stream per chain.
//!
//! Numbers are `f64` in the sampler state whatever the model's dtype: small
//! SGLD/SGHMC increments (ε·g of order 1e-8 relative) vanish in `f32` rounding,
//! and the conversion at the model boundary is a single copy.

pub mod batches;
pub mod candle_density;
pub mod density;
pub mod error;
pub mod metric;
pub mod params;
pub mod rng;
pub mod schedule;
pub mod serde_nan;
pub mod transform;
pub mod vecmath;

pub use batches::{BatchRef, BatchSource, FnBatches, FullBatch, RowBatches, ShuffledIndices};
pub use candle_density::CandleDensity;
pub use density::{check_finite, FnDensity, LogDensity};
pub use error::{Error, Result};
pub use metric::{Metric, Tuning};
pub use params::{ParamLayout, ParamSpec, Params};
pub use rng::{chain_rng, ChainRng};
pub use schedule::{Schedule, CYCLICAL_FLOOR};
pub use transform::{Transform, TransformState};
