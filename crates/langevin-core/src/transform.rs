//! The `Transform` abstraction: a validated config with `init` and `update`.

use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::Result;
use crate::params::Params;

/// What every transform state exposes.
pub trait TransformState:
    Clone + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug
{
    /// The current parameters (for samplers: the current draw; for Gaussian
    /// approximations: the mean).
    fn params(&self) -> &Params;
    /// Number of updates applied so far.
    fn step(&self) -> u64;
    /// Log density at the parameters the last update evaluated
    /// (`NaN` before the first update).
    fn log_density(&self) -> f64;
    /// Check the state's internal consistency (a state read back from a
    /// checkpoint someone edited): the parameters match their layout, and
    /// per-parameter buffers (momenta, ...) have one entry per parameter.
    /// `Err` says what is wrong.
    fn check(&self) -> std::result::Result<(), String> {
        let p = self.params();
        if p.values().len() != p.layout().len() {
            return Err(format!(
                "{} parameter values for a layout of {}",
                p.values().len(),
                p.layout().len()
            ));
        }
        Ok(())
    }
    /// The chain's [`Tuning`](crate::Tuning) (step-size factor and metric),
    /// for the states of samplers that can be preconditioned; `None` for
    /// the others (the default).
    fn tuning(&self) -> Option<&crate::Tuning> {
        None
    }
    /// Mutable [`TransformState::tuning`].
    fn tuning_mut(&mut self) -> Option<&mut crate::Tuning> {
        None
    }
}

/// Implement [`TransformState`] for state structs by naming their fields:
/// the parameters (a [`Params`]), the step count (`u64`) and the log density
/// of the last update (`f64`), and optionally (`same_len: [a, b]`) the
/// per-parameter buffers that [`TransformState::check`] requires to have one
/// entry per parameter, and (`tuning: field`) a [`Tuning`](crate::Tuning)
/// field, checked too and exposed by [`TransformState::tuning`]. Several
/// types may be listed, separated by commas.
///
/// ```
/// use langevin_core::{impl_transform_state, Params, TransformState};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct MyState {
///     params: Params,
///     step: u64,
///     log_posterior: f64,
/// }
///
/// impl_transform_state!(MyState {
///     params: params,
///     step: step,
///     log_density: log_posterior,
/// });
///
/// let s = MyState { params: Params::from_vec(vec![1.0]), step: 3, log_posterior: -0.5 };
/// assert_eq!((s.params().values(), s.step(), s.log_density()), (&[1.0][..], 3, -0.5));
/// ```
#[macro_export]
macro_rules! impl_transform_state {
    ($($ty:ty { params: $params:ident, step: $step:ident, log_density: $log_density:ident
        $(, same_len: [$($buf:ident),* $(,)?])? $(, tuning: $tuning:ident)? $(,)? }),+ $(,)?) => {
        $(
            impl $crate::TransformState for $ty {
                fn params(&self) -> &$crate::Params {
                    &self.$params
                }
                fn step(&self) -> u64 {
                    self.$step
                }
                fn log_density(&self) -> f64 {
                    self.$log_density
                }
                fn check(&self) -> ::std::result::Result<(), String> {
                    let p = &self.$params;
                    if p.values().len() != p.layout().len() {
                        return Err(format!(
                            "{} parameter values for a layout of {}",
                            p.values().len(),
                            p.layout().len()
                        ));
                    }
                    $($(
                        if self.$buf.len() != p.len() {
                            return Err(format!(
                                "`{}` has {} entries for {} parameters",
                                stringify!($buf),
                                self.$buf.len(),
                                p.len()
                            ));
                        }
                    )*)?
                    $(
                        self.$tuning.check(p.len())?;
                    )?
                    Ok(())
                }
                $(
                    fn tuning(&self) -> Option<&$crate::Tuning> {
                        Some(&self.$tuning)
                    }
                    fn tuning_mut(&mut self) -> Option<&mut $crate::Tuning> {
                        Some(&mut self.$tuning)
                    }
                )?
            }
        )+
    };
}

/// An `init`/`update` transform over a parameter collection (optax / blackjax /
/// posteriors style). The transform value holds the validated hyper-parameters
/// and the log density; it is built once and shared (it is `Sync`), so many
/// chains can run one transform on many states.
///
/// Contract of [`Transform::step`]: on `Err` the state is left exactly as it
/// was (no partial update, RNG not advanced past the failing evaluation), so a
/// caller may skip a bad batch and go on.
pub trait Transform: Send + Sync {
    /// Plain serde data: a checkpoint of it resumes bit-identically.
    type State: TransformState;
    /// Per-step diagnostics (not part of the state).
    type Info: Clone + Send + std::fmt::Debug;
    /// What the log density reads.
    type Batch: ?Sized;

    /// The initial state at `params`.
    fn init<R: Rng + ?Sized>(&self, params: Params, rng: &mut R) -> Result<Self::State>;

    /// Advance `state` by one step in place.
    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut Self::State,
        batch: &Self::Batch,
        rng: &mut R,
    ) -> Result<Self::Info>;

    /// Functional form: a new state and the step's info, `state` untouched.
    fn update<R: Rng + ?Sized>(
        &self,
        state: &Self::State,
        batch: &Self::Batch,
        rng: &mut R,
    ) -> Result<(Self::State, Self::Info)> {
        let mut next = state.clone();
        let info = self.step(&mut next, batch, rng)?;
        Ok((next, info))
    }
}
