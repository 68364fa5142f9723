//! Optimisers as transforms: SGD (with momentum and Nesterov), Adam, AdamW.
//!
//! Each optimiser is a kernel over flat `f64` buffers ([`Optimizer::apply`])
//! that *minimises*: it is given the gradient `g` of a loss. The transform
//! [`Optim`] wraps a [`LogDensity`] and an [`Objective`]: with
//! [`Objective::MaximiseLogPosterior`] (the default) the density is a log
//! posterior and the kernel is fed `−∇ log_posterior`; with
//! [`Objective::MinimiseLoss`] the density's value is a loss and is fed as is.
//! The same kernels drive the variational methods in [`crate::vi`].
//!
//! Update equations (PyTorch's conventions, step t = 1, 2, ..., learning rate
//! η (the `step_size` schedule), gradient g of the loss):
//!
//! ```text
//! SGD:      g ← g + λ x                       (weight decay λ, coupled)
//!           b ← μ b + g                       (momentum μ; b starts at 0)
//!           d = g + μ b  (Nesterov)  or  d = b
//!           x ← x − η d
//! Adam:     g ← g + λ x                       (only for Adam, not AdamW)
//!           x ← x (1 − η λ)                   (only for AdamW: decoupled)
//!           m ← β₁ m + (1 − β₁) g,  v ← β₂ v + (1 − β₂) g²
//!           x ← x − η (m / (1 − β₁ᵗ)) / (sqrt(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! Defaults: SGD η = 1e-2, μ = 0; Adam η = 1e-3, β = (0.9, 0.999), ε = 1e-8,
//! λ = 0; AdamW λ = 1e-2 (PyTorch's defaults).
//!
//! References: Kingma and Ba (2015), *Adam: a method for stochastic
//! optimization*; Loshchilov and Hutter (2019), *Decoupled weight decay
//! regularization*; Sutskever et al. (2013) for Nesterov momentum.

use langevin_core::{
    check_finite, Error, LogDensity, Params, Result, Schedule, Transform, TransformState,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which way the density is optimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Objective {
    /// The density is a log posterior: ascend it.
    #[default]
    MaximiseLogPosterior,
    /// The density's value is a loss: descend it.
    MinimiseLoss,
}

/// SGD hyper-parameters.
#[derive(Debug, Clone)]
pub struct SgdConfig {
    /// η: learning rate.
    pub step_size: Schedule,
    /// μ: momentum (0 = plain SGD).
    pub momentum: f64,
    /// Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// λ: L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-2.into(),
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// Adam / AdamW hyper-parameters.
#[derive(Debug, Clone)]
pub struct AdamConfig {
    /// η: learning rate.
    pub step_size: Schedule,
    /// β₁: decay of the first moment.
    pub beta1: f64,
    /// β₂: decay of the second moment.
    pub beta2: f64,
    /// ε: added to the root of the second moment.
    pub eps: f64,
    /// λ: weight decay.
    pub weight_decay: f64,
    /// `true` = AdamW (decoupled decay `x ← x(1 − ηλ)`), `false` = L2 in the gradient.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-3.into(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

/// An optimiser: the minimising kernel shared by [`Optim`] and [`crate::vi`].
#[derive(Debug, Clone)]
pub enum Optimizer {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Adam(AdamConfig::default())
    }
}

impl Optimizer {
    /// Plain SGD with learning rate `lr`.
    pub fn sgd(lr: impl Into<Schedule>) -> Self {
        Optimizer::Sgd(SgdConfig {
            step_size: lr.into(),
            ..SgdConfig::default()
        })
    }

    /// SGD with (optionally Nesterov) momentum.
    pub fn sgd_momentum(lr: impl Into<Schedule>, momentum: f64, nesterov: bool) -> Self {
        Optimizer::Sgd(SgdConfig {
            step_size: lr.into(),
            momentum,
            nesterov,
            weight_decay: 0.0,
        })
    }

    /// Adam with PyTorch's defaults and learning rate `lr`.
    pub fn adam(lr: impl Into<Schedule>) -> Self {
        Optimizer::Adam(AdamConfig {
            step_size: lr.into(),
            ..AdamConfig::default()
        })
    }

    /// AdamW with learning rate `lr` and decoupled weight decay `weight_decay`.
    pub fn adamw(lr: impl Into<Schedule>, weight_decay: f64) -> Self {
        Optimizer::Adam(AdamConfig {
            step_size: lr.into(),
            weight_decay,
            decoupled: true,
            ..AdamConfig::default()
        })
    }

    /// Check every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => {
                c.step_size.validate_positive("step_size")?;
                unit_interval("momentum", c.momentum, true)?;
                non_negative("weight_decay", c.weight_decay)?;
                if c.nesterov && c.momentum <= 0.0 {
                    return Err(Error::config(
                        "nesterov",
                        "Nesterov momentum needs momentum > 0",
                    ));
                }
            }
            Optimizer::Adam(c) => {
                c.step_size.validate_positive("step_size")?;
                unit_interval("beta1", c.beta1, true)?;
                unit_interval("beta2", c.beta2, true)?;
                if !(c.eps.is_finite() && c.eps >= 0.0) {
                    return Err(Error::config(
                        "eps",
                        format!("must be finite and >= 0, got {}", c.eps),
                    ));
                }
                non_negative("weight_decay", c.weight_decay)?;
            }
        }
        Ok(())
    }

    /// A fresh optimiser state for `dim` scalars.
    pub fn init_state(&self, dim: usize) -> OptimizerState {
        match self {
            Optimizer::Sgd(_) => OptimizerState {
                t: 0,
                m: vec![0.0; dim],
                v: Vec::new(),
            },
            Optimizer::Adam(_) => OptimizerState {
                t: 0,
                m: vec![0.0; dim],
                v: vec![0.0; dim],
            },
        }
    }

    /// One minimising step on `x` given the loss gradient `grad`. Checks
    /// sizes and the learning rate before touching anything.
    pub fn apply(&self, state: &mut OptimizerState, x: &mut [f64], grad: &[f64]) -> Result<()> {
        self.apply_parts(state, &mut [x], grad)
    }

    /// [`apply`](Self::apply) to the concatenation of `parts` (for example
    /// a variational mean and log standard deviation held in two buffers),
    /// without copying them into one vector: `grad` and the optimiser state
    /// are indexed by the position in the concatenation. Checks sizes and the
    /// learning rate before touching anything, so an error leaves `state` and
    /// `parts` as they were.
    pub fn apply_parts(
        &self,
        state: &mut OptimizerState,
        parts: &mut [&mut [f64]],
        grad: &[f64],
    ) -> Result<()> {
        let d: usize = parts.iter().map(|p| p.len()).sum();
        if grad.len() != d {
            return Err(Error::DimensionMismatch {
                what: "optimiser gradient",
                expected: d,
                got: grad.len(),
            });
        }
        if state.m.len() != d {
            return Err(Error::DimensionMismatch {
                what: "optimiser state",
                expected: d,
                got: state.m.len(),
            });
        }
        match self {
            Optimizer::Sgd(c) => {
                let lr = c.step_size.at_checked("step_size", state.t, true)?;
                let (mu, wd) = (c.momentum, c.weight_decay);
                for_parts(parts, &mut state.m, &mut [], grad, |x, m, _, grad| {
                    for ((xi, b), &g0) in x.iter_mut().zip(m.iter_mut()).zip(grad) {
                        let g = g0 + wd * *xi;
                        let dir = if mu == 0.0 {
                            g
                        } else {
                            *b = mu * *b + g;
                            if c.nesterov {
                                g + mu * *b
                            } else {
                                *b
                            }
                        };
                        *xi -= lr * dir;
                    }
                });
            }
            Optimizer::Adam(c) => {
                if state.v.len() != d {
                    return Err(Error::DimensionMismatch {
                        what: "Adam second moment",
                        expected: d,
                        got: state.v.len(),
                    });
                }
                let lr = c.step_size.at_checked("step_size", state.t, true)?;
                let t = (state.t + 1) as i32;
                // Reciprocal bias corrections: one division per scalar
                // instead of three (divisions bound this loop).
                let inv_bc1 = 1.0 / (1.0 - c.beta1.powi(t));
                let inv_bc2 = 1.0 / (1.0 - c.beta2.powi(t));
                let (b1, b2, wd) = (c.beta1, c.beta2, c.weight_decay);
                let decay = if c.decoupled { 1.0 - lr * wd } else { 1.0 };
                let l2 = if c.decoupled { 0.0 } else { wd };
                for_parts(parts, &mut state.m, &mut state.v, grad, |x, m, v, grad| {
                    for (((xi, m), v), &g0) in
                        x.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grad)
                    {
                        let g = g0 + l2 * *xi;
                        *xi *= decay;
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        *xi -= lr * (*m * inv_bc1) / ((*v * inv_bc2).sqrt() + c.eps);
                    }
                });
            }
        }
        state.t += 1;
        Ok(())
    }
}

/// Run `f` on each part of a concatenation with its slices of `m`, `v`
/// (empty when `v` is) and `grad`; the lengths were checked by the caller.
fn for_parts(
    parts: &mut [&mut [f64]],
    m: &mut [f64],
    v: &mut [f64],
    grad: &[f64],
    mut f: impl FnMut(&mut [f64], &mut [f64], &mut [f64], &[f64]),
) {
    let mut off = 0;
    for x in parts.iter_mut() {
        let n = x.len();
        let vs = if v.is_empty() {
            &mut [][..]
        } else {
            &mut v[off..off + n]
        };
        f(x, &mut m[off..off + n], vs, &grad[off..off + n]);
        off += n;
    }
}

fn unit_interval(field: &'static str, v: f64, allow_zero: bool) -> Result<()> {
    let ok = v.is_finite() && v < 1.0 && (v > 0.0 || (allow_zero && v == 0.0));
    if !ok {
        return Err(Error::config(field, format!("must lie in [0, 1), got {v}")));
    }
    Ok(())
}

fn non_negative(field: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::config(
            field,
            format!("must be finite and >= 0, got {v}"),
        ));
    }
    Ok(())
}

/// Optimiser buffers: step count `t`, momentum / first moment `m`, second
/// moment `v` (empty for SGD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    pub t: u64,
    pub m: Vec<f64>,
    pub v: Vec<f64>,
}

/// Config of the [`Optim`] transform.
#[derive(Debug, Clone, Default)]
pub struct OptimConfig {
    pub optimizer: Optimizer,
    pub objective: Objective,
}

/// State of [`Optim`]: parameters, optimiser buffers, step, last density value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimState {
    pub params: Params,
    pub opt: OptimizerState,
    pub step: u64,
    /// The density's value (log posterior or loss) at the parameters of the
    /// last update, before the update.
    pub value: f64,
}

impl TransformState for OptimState {
    fn params(&self) -> &Params {
        &self.params
    }
    fn step(&self) -> u64 {
        self.step
    }
    fn log_density(&self) -> f64 {
        self.value
    }
}

/// Per-step information of [`Optim`].
#[derive(Debug, Clone)]
pub struct OptimInfo<A> {
    /// The density's value before the update.
    pub value: f64,
    /// Euclidean norm of the density's gradient.
    pub grad_norm: f64,
    pub aux: A,
}

/// An optimiser as a transform over a density.
pub struct Optim<D> {
    config: OptimConfig,
    density: D,
}

impl<D: LogDensity> Optim<D> {
    /// Build with validated hyper-parameters.
    pub fn new(density: D, config: OptimConfig) -> Result<Self> {
        config.optimizer.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }
}

impl<D: LogDensity> Transform for Optim<D> {
    type State = OptimState;
    type Info = OptimInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<OptimState> {
        let opt = self.config.optimizer.init_state(params.len());
        Ok(OptimState {
            params,
            opt,
            step: 0,
            value: f64::NAN,
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut OptimState,
        batch: &D::Batch,
        _rng: &mut R,
    ) -> Result<Self::Info> {
        let mut grad = vec![0.0; state.params.len()];
        let (value, aux) = self
            .density
            .value_and_grad(&state.params, batch, &mut grad)?;
        check_finite(value, &grad, state.step)?;
        let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if self.config.objective == Objective::MaximiseLogPosterior {
            grad.iter_mut().for_each(|g| *g = -*g);
        }
        // `apply` validates before mutating, so an error leaves the state intact.
        self.config
            .optimizer
            .apply(&mut state.opt, state.params.values_mut(), &grad)?;
        state.step += 1;
        state.value = value;
        Ok(OptimInfo {
            value,
            grad_norm,
            aux,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::{chain_rng, FnDensity};

    fn square_loss() -> impl LogDensity<Batch = (), Aux = ()> {
        FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = 2.0 * x[0];
            x[0] * x[0]
        })
    }

    fn minimise(opt: Optimizer) -> (f64, usize) {
        let t = Optim::new(
            square_loss(),
            OptimConfig {
                optimizer: opt,
                objective: Objective::MinimiseLoss,
            },
        )
        .unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(Params::from_vec(vec![1.0]), &mut rng).unwrap();
        for k in 0..200 {
            t.step(&mut s, &(), &mut rng).unwrap();
            let x = s.params.values()[0];
            if x * x < 1e-3 {
                return (x * x, k + 1);
            }
        }
        let x = s.params.values()[0];
        (x * x, 200)
    }

    #[test]
    fn every_optimiser_minimises_a_square_within_200_steps() {
        for opt in [
            Optimizer::sgd(0.1),
            Optimizer::sgd_momentum(0.1, 0.9, false),
            Optimizer::sgd_momentum(0.1, 0.9, true),
            Optimizer::adam(0.1),
            Optimizer::adamw(0.1, 0.01),
        ] {
            let (loss, steps) = minimise(opt.clone());
            assert!(loss < 1e-3, "{opt:?}: loss {loss} after {steps} steps");
        }
    }

    #[test]
    fn maximising_a_log_posterior_ascends() {
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = -(x[0] - 3.0);
            -0.5 * (x[0] - 3.0).powi(2)
        });
        let t = Optim::new(
            d,
            OptimConfig {
                optimizer: Optimizer::sgd(0.1),
                objective: Objective::MaximiseLogPosterior,
            },
        )
        .unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(Params::from_vec(vec![0.0]), &mut rng).unwrap();
        for _ in 0..200 {
            t.step(&mut s, &(), &mut rng).unwrap();
        }
        assert!((s.params.values()[0] - 3.0).abs() < 1e-6);
    }

    /// Adam's first three steps on loss(x) = sum_i c_i x_i^2 + x_0 x_1 from
    /// x = (1, -2), lr = 0.1, PyTorch defaults otherwise. The reference values
    /// were computed by hand from the published algorithm (Kingma and Ba,
    /// Algorithm 1, as implemented by `torch.optim.Adam` with
    /// `eps` added after the bias-corrected square root) with this script
    /// (plain Python, no torch):
    ///
    /// ```text
    /// import math
    /// x=[1.0,-2.0]; m=[0,0]; v=[0,0]; lr,b1,b2,eps=0.1,0.9,0.999,1e-8
    /// for t in range(1,4):
    ///     g=[2*1.5*x[0]+x[1], 2*0.5*x[1]+x[0]]
    ///     for i in range(2):
    ///         m[i]=b1*m[i]+(1-b1)*g[i]; v[i]=b2*v[i]+(1-b2)*g[i]**2
    ///         x[i]-=lr*(m[i]/(1-b1**t))/(math.sqrt(v[i]/(1-b2**t))+eps)
    ///     print(repr(x[0]),repr(x[1]))
    /// ```
    #[test]
    fn adam_matches_reference_first_three_steps() {
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = 3.0 * x[0] + x[1];
            g[1] = x[1] + x[0];
            1.5 * x[0] * x[0] + 0.5 * x[1] * x[1] + x[0] * x[1]
        });
        let t = Optim::new(
            d,
            OptimConfig {
                optimizer: Optimizer::adam(0.1),
                objective: Objective::MinimiseLoss,
            },
        )
        .unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(Params::from_vec(vec![1.0, -2.0]), &mut rng).unwrap();
        let reference = ADAM_REFERENCE;
        for r in reference {
            t.step(&mut s, &(), &mut rng).unwrap();
            let x = s.params.values();
            assert!(
                (x[0] - r[0]).abs() < 1e-12 && (x[1] - r[1]).abs() < 1e-12,
                "{x:?} vs {r:?}"
            );
        }
    }

    // Output of the script above.
    const ADAM_REFERENCE: [[f64; 2]; 3] = [
        [0.900000001, -1.900000001],
        [0.8011874216591668, -1.8000000020000007],
        [0.7048520956209192, -1.7000042163105675],
    ];

    /// Updating two buffers as parts is the same as updating their
    /// concatenation, bit for bit; a size error touches nothing.
    #[test]
    fn apply_parts_equals_apply_on_the_concatenation() {
        for opt in [
            Optimizer::sgd_momentum(0.1, 0.9, true),
            Optimizer::adam(0.05),
            Optimizer::adamw(0.05, 0.01),
        ] {
            let (mut a, mut b) = (vec![1.0, -2.0, 0.5], vec![3.0, 0.25]);
            let mut whole: Vec<f64> = a.iter().chain(&b).copied().collect();
            let (mut s1, mut s2) = (opt.init_state(5), opt.init_state(5));
            for t in 0..4 {
                let g: Vec<f64> = (0..5).map(|i| (i as f64 - 2.0) * 0.3 + t as f64).collect();
                opt.apply(&mut s1, &mut whole, &g).unwrap();
                opt.apply_parts(&mut s2, &mut [&mut a, &mut b], &g).unwrap();
                assert_eq!(&whole[..3], &a[..], "{opt:?}");
                assert_eq!(&whole[3..], &b[..], "{opt:?}");
                assert_eq!(s1, s2);
            }
            let (a0, b0, s0) = (a.clone(), b.clone(), s2.clone());
            assert!(opt
                .apply_parts(&mut s2, &mut [&mut a, &mut b], &[0.0; 4])
                .is_err());
            assert_eq!((a, b, s2), (a0, b0, s0));
        }
    }

    #[test]
    fn bad_configs_are_rejected_and_errors_leave_state_untouched() {
        assert!(Optimizer::sgd(-1.0).validate().is_err());
        assert!(Optimizer::sgd_momentum(0.1, 0.0, true).validate().is_err());
        assert!(Optimizer::sgd_momentum(0.1, 1.5, false).validate().is_err());
        let a = AdamConfig {
            beta2: 1.0,
            ..AdamConfig::default()
        };
        assert!(Optimizer::Adam(a).validate().is_err());
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = f64::NAN;
            x[0]
        });
        let t = Optim::new(d, OptimConfig::default()).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(Params::from_vec(vec![1.0]), &mut rng).unwrap();
        let before = s.clone();
        assert!(matches!(
            t.step(&mut s, &(), &mut rng),
            Err(Error::NonFiniteLogDensity { .. })
        ));
        assert_eq!(
            (&s.params, &s.opt, s.step),
            (&before.params, &before.opt, before.step)
        );
        assert!(s.value.is_nan());
    }
}
