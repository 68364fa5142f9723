//! Optimisers as transforms: SGD (with momentum and Nesterov), Adam, AdamW,
//! RMSprop (optionally centred, with momentum), Adagrad;
//! and L-BFGS ([`Lbfgs`]) for deterministic full-batch optimisation (a MAP).
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
//! RMSprop:  g ← g + λ x
//!           v ← α v + (1 − α) g²              (α: `alpha`, smoothing)
//!           u ← u + (1 − α) (g − u)           (only when centred; u starts at 0)
//!           a = sqrt(v − u²) + ε  (centred)   or  a = sqrt(v) + ε
//!           b ← μ b + g / a,  x ← x − η b     (momentum μ > 0)
//!           x ← x − η g / a                   (μ = 0)
//! Adagrad:  η̃ = η / (1 + (t − 1) κ)          (learning-rate decay κ)
//!           g ← g + λ x
//!           s ← s + g²                        (s starts at τ, `initial_accumulator_value`)
//!           x ← x − η̃ g / (sqrt(s) + ε)
//! ```
//!
//! Defaults: SGD η = 1e-2, μ = 0; Adam η = 1e-3, β = (0.9, 0.999), ε = 1e-8,
//! λ = 0; AdamW λ = 1e-2; RMSprop η = 1e-2, α = 0.99, ε = 1e-8, μ = 0, not
//! centred; Adagrad η = 1e-2, κ = 0, ε = 1e-10, τ = 0 (PyTorch's defaults,
//! and its `torch.optim.RMSprop` / `torch.optim.Adagrad` update order: ε is
//! added after the square root). Centred RMSprop clamps `v − u²` at 0 (it is
//! ≥ 0 in exact arithmetic; rounding could make PyTorch's root NaN).
//!
//! L-BFGS minimises `f` (`−log posterior`, or the loss) with the two-loop
//! recursion over the last `m` pairs `sₖ = xₖ₊₁ − xₖ`, `yₖ = ∇fₖ₊₁ − ∇fₖ`
//! (`ρₖ = 1 / sₖᵀyₖ`), initial inverse Hessian `γ I` with
//! `γ = sᵀy / yᵀy` of the newest pair (`1 / max(‖∇f‖∞, 1)` before the
//! first), and a backtracking Armijo line search from step 1:
//!
//! ```text
//! d = −H ∇f(x)              (steepest descent scaled by 1 / max(‖∇f‖∞, 1),
//!                            memory cleared, when d is not a descent direction)
//! t = 1, 1/2, 1/4, …        first t with f(x + t d) ≤ f(x) + c₁ t ∇f(x)ᵀd
//! keep (s, y) only if sᵀy > max(0, 1e-12 ‖s‖ ‖y‖)
//! ```
//!
//! It stops when `‖∇f‖∞ ≤ tol`, after `max_iters` iterations, when no trial
//! step decreases `f` (as converged as rounding allows), or when `f` no
//! longer changes (`|Δf| ≤ 1e-16 max(|f|, 1)`) with `‖∇f‖∞ ≤ 1e3 tol`.
//! Defaults: m = 10, tol = 1e-9, c₁ = 1e-4, 60 trial steps, 1000 iterations.
//!
//! References: Kingma and Ba (2015), *Adam: a method for stochastic
//! optimization*; Loshchilov and Hutter (2019), *Decoupled weight decay
//! regularization*; Sutskever et al. (2013) for Nesterov momentum; Hinton,
//! Srivastava and Swersky (2012), *Neural networks for machine learning*,
//! lecture 6e (RMSprop), and Graves (2013), *Generating sequences with
//! recurrent neural networks* (centred); Duchi, Hazan and Singer (2011),
//! *Adaptive subgradient methods* (Adagrad); Nocedal
//! and Wright (2006), *Numerical optimization*, algorithms 7.4 and 7.5
//! (L-BFGS) and 3.1 (backtracking).

use langevin_core::{check_finite, Error, LogDensity, Params, Result, Schedule, Transform};
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

/// RMSprop hyper-parameters (PyTorch's `torch.optim.RMSprop`).
#[derive(Debug, Clone)]
pub struct RmspropConfig {
    /// η: learning rate.
    pub step_size: Schedule,
    /// α: smoothing constant of the squared-gradient average, in [0, 1).
    pub alpha: f64,
    /// ε: added to the root of the average (> 0).
    pub eps: f64,
    /// μ: momentum of the scaled step (0 = none), in [0, 1).
    pub momentum: f64,
    /// Centred: divide by an estimate of the gradient's variance
    /// (`v − u²`) instead of its raw second moment.
    pub centered: bool,
    /// λ: L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-2.into(),
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }
}

/// Adagrad hyper-parameters (PyTorch's `torch.optim.Adagrad`).
#[derive(Debug, Clone)]
pub struct AdagradConfig {
    /// η: learning rate.
    pub step_size: Schedule,
    /// κ: learning-rate decay, `η / (1 + (t − 1) κ)` at step t (≥ 0).
    pub lr_decay: f64,
    /// ε: added to the root of the accumulated squares (≥ 0; > 0 when τ = 0).
    pub eps: f64,
    /// τ: starting value of the accumulated squares (≥ 0).
    pub initial_accumulator_value: f64,
    /// λ: L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-2.into(),
            lr_decay: 0.0,
            eps: 1e-10,
            initial_accumulator_value: 0.0,
            weight_decay: 0.0,
        }
    }
}

/// An optimiser: the minimising kernel shared by [`Optim`] and [`crate::vi`].
#[derive(Debug, Clone)]
pub enum Optimizer {
    /// SGD with optional (Nesterov) momentum.
    Sgd(SgdConfig),
    /// Adam or AdamW.
    Adam(AdamConfig),
    /// RMSprop (optionally centred, with momentum).
    Rmsprop(RmspropConfig),
    /// Adagrad.
    Adagrad(AdagradConfig),
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

    /// RMSprop with PyTorch's defaults and learning rate `lr`.
    pub fn rmsprop(lr: impl Into<Schedule>) -> Self {
        Optimizer::Rmsprop(RmspropConfig {
            step_size: lr.into(),
            ..RmspropConfig::default()
        })
    }

    /// Adagrad with PyTorch's defaults and learning rate `lr`.
    pub fn adagrad(lr: impl Into<Schedule>) -> Self {
        Optimizer::Adagrad(AdagradConfig {
            step_size: lr.into(),
            ..AdagradConfig::default()
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
            Optimizer::Rmsprop(c) => {
                c.step_size.validate_positive("step_size")?;
                unit_interval("alpha", c.alpha, true)?;
                unit_interval("momentum", c.momentum, true)?;
                if !(c.eps.is_finite() && c.eps > 0.0) {
                    return Err(Error::config(
                        "eps",
                        format!("must be finite and > 0, got {}", c.eps),
                    ));
                }
                non_negative("weight_decay", c.weight_decay)?;
            }
            Optimizer::Adagrad(c) => {
                c.step_size.validate_positive("step_size")?;
                non_negative("lr_decay", c.lr_decay)?;
                non_negative("eps", c.eps)?;
                non_negative("initial_accumulator_value", c.initial_accumulator_value)?;
                non_negative("weight_decay", c.weight_decay)?;
                if c.eps == 0.0 && c.initial_accumulator_value == 0.0 {
                    return Err(Error::config(
                        "eps",
                        "must be > 0 when initial_accumulator_value is 0 (a zero gradient would \
                         divide 0 by 0)",
                    ));
                }
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
                u: Vec::new(),
            },
            Optimizer::Adam(_) => OptimizerState {
                t: 0,
                m: vec![0.0; dim],
                v: vec![0.0; dim],
                u: Vec::new(),
            },
            Optimizer::Rmsprop(c) => OptimizerState {
                t: 0,
                m: if c.momentum > 0.0 {
                    vec![0.0; dim]
                } else {
                    Vec::new()
                },
                v: vec![0.0; dim],
                u: if c.centered {
                    vec![0.0; dim]
                } else {
                    Vec::new()
                },
            },
            Optimizer::Adagrad(c) => OptimizerState {
                t: 0,
                m: Vec::new(),
                v: vec![c.initial_accumulator_value; dim],
                u: Vec::new(),
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
        // The buffers each optimiser needs (an unused one must be empty).
        let (need_m, need_v, need_u) = match self {
            Optimizer::Sgd(_) => (true, false, false),
            Optimizer::Adam(_) => (true, true, false),
            Optimizer::Rmsprop(c) => (c.momentum > 0.0, true, c.centered),
            Optimizer::Adagrad(_) => (false, true, false),
        };
        for (what, buf, need) in [
            ("optimiser state", &state.m, need_m),
            ("optimiser second moment", &state.v, need_v),
            ("optimiser gradient average", &state.u, need_u),
        ] {
            let expected = if need { d } else { 0 };
            if buf.len() != expected {
                return Err(Error::DimensionMismatch {
                    what,
                    expected,
                    got: buf.len(),
                });
            }
        }
        match self {
            Optimizer::Sgd(c) => {
                let lr = c.step_size.at_checked("step_size", state.t, true)?;
                let (mu, wd) = (c.momentum, c.weight_decay);
                for_parts(
                    parts,
                    [&mut state.m[..], &mut [], &mut []],
                    grad,
                    |x, [m, _, _], grad| {
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
                    },
                );
            }
            Optimizer::Adam(c) => {
                let lr = c.step_size.at_checked("step_size", state.t, true)?;
                let t = (state.t + 1) as i32;
                // Reciprocal bias corrections: one division per scalar
                // instead of three (divisions bound this loop).
                let inv_bc1 = 1.0 / (1.0 - c.beta1.powi(t));
                let inv_bc2 = 1.0 / (1.0 - c.beta2.powi(t));
                let (b1, b2, wd) = (c.beta1, c.beta2, c.weight_decay);
                let decay = if c.decoupled { 1.0 - lr * wd } else { 1.0 };
                let l2 = if c.decoupled { 0.0 } else { wd };
                let bufs = [&mut state.m[..], &mut state.v[..], &mut []];
                for_parts(parts, bufs, grad, |x, [m, v, _], grad| {
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
            Optimizer::Rmsprop(c) => {
                let lr = c.step_size.at_checked("step_size", state.t, true)?;
                let (alpha, mu, wd, eps) = (c.alpha, c.momentum, c.weight_decay, c.eps);
                let bufs = [&mut state.m[..], &mut state.v[..], &mut state.u[..]];
                for_parts(parts, bufs, grad, |x, [m, v, u], grad| {
                    for (j, (xi, &g0)) in x.iter_mut().zip(grad).enumerate() {
                        let g = g0 + wd * *xi;
                        let sq = &mut v[j];
                        *sq = alpha * *sq + (1.0 - alpha) * g * g;
                        let avg = if c.centered {
                            let ga = &mut u[j];
                            // torch: grad_avg.lerp_(grad, 1 − α)
                            *ga += (1.0 - alpha) * (g - *ga);
                            (*sq - *ga * *ga).max(0.0).sqrt() + eps
                        } else {
                            sq.sqrt() + eps
                        };
                        if mu > 0.0 {
                            let b = &mut m[j];
                            *b = mu * *b + g / avg;
                            *xi -= lr * *b;
                        } else {
                            *xi -= lr * (g / avg);
                        }
                    }
                });
            }
            Optimizer::Adagrad(c) => {
                let lr = c.step_size.at_checked("step_size", state.t, true)?;
                // state.t = t − 1 before this step.
                let clr = lr / (1.0 + state.t as f64 * c.lr_decay);
                let (wd, eps) = (c.weight_decay, c.eps);
                let bufs = [&mut [][..], &mut state.v[..], &mut []];
                for_parts(parts, bufs, grad, |x, [_, v, _], grad| {
                    for ((xi, s), &g0) in x.iter_mut().zip(v.iter_mut()).zip(grad) {
                        let g = g0 + wd * *xi;
                        *s += g * g;
                        *xi -= clr * (g / (s.sqrt() + eps));
                    }
                });
            }
        }
        state.t += 1;
        Ok(())
    }
}

/// Run `f` on each part of a concatenation with its slices of the three
/// state buffers (an empty buffer stays empty) and of `grad`; the lengths
/// were checked by the caller.
fn for_parts(
    parts: &mut [&mut [f64]],
    mut bufs: [&mut [f64]; 3],
    grad: &[f64],
    mut f: impl FnMut(&mut [f64], [&mut [f64]; 3], &[f64]),
) {
    let mut off = 0;
    for x in parts.iter_mut() {
        let n = x.len();
        let [a, b, c] = &mut bufs;
        f(
            x,
            [sub(a, off, n), sub(b, off, n), sub(c, off, n)],
            &grad[off..off + n],
        );
        off += n;
    }
}

/// `buf[off..off + n]`, or `buf` itself when it is empty.
fn sub(buf: &mut [f64], off: usize, n: usize) -> &mut [f64] {
    if buf.is_empty() {
        buf
    } else {
        &mut buf[off..off + n]
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

/// Optimiser buffers: step count `t`, momentum / first moment `m` (empty for
/// Adagrad and RMSprop without momentum), second moment `v` (Adam, RMSprop;
/// Adagrad's sum of squares; empty for SGD), gradient average `u` (centred
/// RMSprop only, else empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    /// Steps taken.
    pub t: u64,
    /// Momentum buffer or first moment.
    pub m: Vec<f64>,
    /// Second moment or sum of squares.
    pub v: Vec<f64>,
    /// Gradient average of centred RMSprop (absent from older checkpoints).
    #[serde(default)]
    pub u: Vec<f64>,
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
    /// last update, before the update (NaN before the first: written as
    /// JSON `null`).
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub value: f64,
}

langevin_core::impl_transform_state!(OptimState {
    params: params,
    step: step,
    log_density: value,
});

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

// ---------------------------------------------------------------------------
// L-BFGS
// ---------------------------------------------------------------------------

/// Hyper-parameters of [`Lbfgs`] (checked by [`Lbfgs::new`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsConfig {
    /// m: number of `(s, y)` pairs kept (≥ 1).
    pub memory: usize,
    /// Most iterations (one line search each); 0 returns the start.
    pub max_iters: usize,
    /// Stop once the largest absolute gradient entry is at most `tol` (≥ 0).
    pub tol: f64,
    /// c₁ of the Armijo condition, in (0, 1).
    pub armijo: f64,
    /// Trial steps of the backtracking line search: 1, 1/2, 1/4, … (≥ 1).
    pub line_search_trials: usize,
    /// Whether the density is a log posterior to ascend (the default) or a
    /// loss to descend.
    pub objective: Objective,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            memory: 10,
            max_iters: 1000,
            tol: 1e-9,
            armijo: 1e-4,
            line_search_trials: 60,
            objective: Objective::MaximiseLogPosterior,
        }
    }
}

impl LbfgsConfig {
    /// Check every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        if self.memory == 0 {
            return Err(Error::config("memory", "must be >= 1, got 0"));
        }
        non_negative("tol", self.tol)?;
        if !(self.armijo > 0.0 && self.armijo < 1.0) {
            return Err(Error::config(
                "armijo",
                format!("must lie in (0, 1), got {}", self.armijo),
            ));
        }
        if self.line_search_trials == 0 {
            return Err(Error::config("line_search_trials", "must be >= 1, got 0"));
        }
        Ok(())
    }
}

/// Why [`Lbfgs::run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LbfgsStop {
    /// The largest absolute gradient entry is at most `tol`.
    GradientTolerance,
    /// The objective no longer changed (`|Δf| ≤ 1e-16 max(|f|, 1)`) with the
    /// gradient within `1e3 · tol`.
    NoProgress,
    /// No trial step of the line search decreased the objective: as
    /// converged as rounding allows (or a direction into non-finite values).
    LineSearchFailed,
    /// `max_iters` iterations were done.
    MaxIters,
}

/// What [`Lbfgs::run`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsResult {
    /// The last accepted point (the start if no step was accepted).
    pub params: Params,
    /// The density's value there (log posterior, or loss with
    /// [`Objective::MinimiseLoss`]).
    pub value: f64,
    /// Iterations done (line searches started).
    pub iterations: usize,
    /// Largest absolute entry of the density's gradient at `params`.
    pub max_abs_grad: f64,
    /// Why it stopped.
    pub stop: LbfgsStop,
}

impl LbfgsResult {
    /// `true` when the gradient tolerance was reached.
    pub fn converged(&self) -> bool {
        self.stop == LbfgsStop::GradientTolerance
    }
}

/// L-BFGS with a backtracking Armijo line search on one batch (full-batch,
/// deterministic); the update is described in the [module docs](self).
///
/// ```
/// use langevin::optim::{Lbfgs, LbfgsConfig};
/// use langevin::{FnDensity, Params};
///
/// // log N(x; (1, -2), I)
/// let density = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
///     g[0] = 1.0 - x[0];
///     g[1] = -2.0 - x[1];
///     -0.5 * (g[0] * g[0] + g[1] * g[1])
/// });
/// let lbfgs = Lbfgs::new(LbfgsConfig { tol: 1e-10, ..LbfgsConfig::default() }).unwrap();
/// let r = lbfgs.run(&density, Params::from_vec(vec![0.0, 0.0]), &()).unwrap();
/// assert!(r.converged());
/// assert!((r.params.values()[1] + 2.0).abs() < 1e-9);
/// ```
#[derive(Debug, Clone)]
pub struct Lbfgs {
    config: LbfgsConfig,
}

impl Lbfgs {
    /// Build with validated hyper-parameters.
    pub fn new(config: LbfgsConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &LbfgsConfig {
        &self.config
    }

    /// Optimise `density` on `batch` from `start`. A non-finite value or
    /// gradient at `start` is [`Error::NonFiniteLogDensity`] (step 0); a
    /// non-finite trial point of the line search is backtracked from; any
    /// other error of the density is returned.
    pub fn run<D: LogDensity>(
        &self,
        density: &D,
        start: Params,
        batch: &D::Batch,
    ) -> Result<LbfgsResult> {
        let c = &self.config;
        let maximise = c.objective == Objective::MaximiseLogPosterior;
        let p = start.len();
        let mut theta = start;
        // Minimise f = −log posterior (or the loss), with gradient ∇f.
        let eval = |t: &Params, g: &mut [f64]| -> Result<f64> {
            let (v, _) = density.value_and_grad(t, batch, g)?;
            if maximise {
                g.iter_mut().for_each(|x| *x = -*x);
                Ok(-v)
            } else {
                Ok(v)
            }
        };
        let mut g = vec![0.0; p];
        let mut f = eval(&theta, &mut g)?;
        if let Err(e) = check_finite(f, &g, 0) {
            // Report the density's own value.
            return Err(match e {
                Error::NonFiniteLogDensity {
                    step,
                    value,
                    bad_grad,
                } if maximise => Error::NonFiniteLogDensity {
                    step,
                    value: -value,
                    bad_grad,
                },
                e => e,
            });
        }
        let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
            std::collections::VecDeque::with_capacity(c.memory);
        let max_abs = |g: &[f64]| g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut it = 0;
        let mut g_new = vec![0.0; p];
        let mut stop = None;
        while it < c.max_iters && max_abs(&g) > c.tol {
            it += 1;
            // Two-loop recursion: d = −H g.
            let mut q = g.clone();
            let mut alphas = Vec::with_capacity(hist.len());
            for (s, y, rho) in hist.iter().rev() {
                let a = rho * dot(s, &q);
                q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
                alphas.push(a);
            }
            if let Some((s, y, _)) = hist.back() {
                let gamma = dot(s, y) / dot(y, y);
                q.iter_mut().for_each(|x| *x *= gamma);
            } else {
                let scale = 1.0 / max_abs(&g).max(1.0);
                q.iter_mut().for_each(|x| *x *= scale);
            }
            for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
                let b = rho * dot(y, &q);
                q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
            }
            let mut d: Vec<f64> = q.iter().map(|x| -x).collect();
            let mut slope = dot(&g, &d);
            if slope.is_nan() || slope >= 0.0 {
                hist.clear();
                let scale = 1.0 / max_abs(&g).max(1.0);
                d = g.iter().map(|x| -x * scale).collect();
                slope = dot(&g, &d);
            }
            // Backtracking (Armijo).
            let mut step = 1.0;
            let mut accepted = None;
            for _ in 0..c.line_search_trials {
                let trial: Vec<f64> = theta
                    .values()
                    .iter()
                    .zip(&d)
                    .map(|(t, di)| t + step * di)
                    .collect();
                let tp = theta.with_values(trial)?;
                match eval(&tp, &mut g_new) {
                    Ok(fv) if fv.is_finite() && g_new.iter().all(|x| x.is_finite()) => {
                        if fv <= f + c.armijo * step * slope {
                            accepted = Some((tp, fv));
                            break;
                        }
                    }
                    Ok(_) | Err(Error::NonFiniteLogDensity { .. }) => {}
                    Err(e) => return Err(e),
                }
                step *= 0.5;
            }
            let Some((tp, fv)) = accepted else {
                stop = Some(LbfgsStop::LineSearchFailed);
                break;
            };
            let s: Vec<f64> = tp
                .values()
                .iter()
                .zip(theta.values())
                .map(|(a, b)| a - b)
                .collect();
            let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
            let sy = dot(&s, &y);
            if sy > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() && sy > 0.0 {
                if hist.len() == c.memory {
                    hist.pop_front();
                }
                hist.push_back((s, y, 1.0 / sy));
            }
            let done = (f - fv).abs() <= 1e-16 * f.abs().max(1.0) && max_abs(&g_new) <= 1e3 * c.tol;
            theta = tp;
            f = fv;
            std::mem::swap(&mut g, &mut g_new);
            if done {
                stop = Some(LbfgsStop::NoProgress);
                break;
            }
        }
        let max_abs_grad = max_abs(&g);
        let stop = if max_abs_grad <= c.tol {
            LbfgsStop::GradientTolerance
        } else {
            stop.unwrap_or(LbfgsStop::MaxIters)
        };
        Ok(LbfgsResult {
            params: theta,
            value: if maximise { -f } else { f },
            iterations: it,
            max_abs_grad,
            stop,
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
            Optimizer::rmsprop(0.01),
            Optimizer::adagrad(0.5),
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
            Optimizer::Rmsprop(RmspropConfig {
                momentum: 0.9,
                centered: true,
                weight_decay: 0.01,
                ..RmspropConfig::default()
            }),
            Optimizer::Adagrad(AdagradConfig {
                lr_decay: 0.1,
                initial_accumulator_value: 0.1,
                ..AdagradConfig::default()
            }),
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

    /// log N(x; m, A⁻¹) with a badly conditioned A (condition number ~ 5e3).
    fn correlated_gaussian() -> impl LogDensity<Batch = (), Aux = ()> {
        let a = [[100.0, 9.9], [9.9, 1.0]];
        let m = [1.0, -2.0];
        FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
            let r = [x[0] - m[0], x[1] - m[1]];
            let ar = [
                a[0][0] * r[0] + a[0][1] * r[1],
                a[1][0] * r[0] + a[1][1] * r[1],
            ];
            g[0] = -ar[0];
            g[1] = -ar[1];
            -0.5 * (r[0] * ar[0] + r[1] * ar[1])
        })
    }

    fn lbfgs(max_iters: usize, tol: f64) -> Lbfgs {
        Lbfgs::new(LbfgsConfig {
            max_iters,
            tol,
            ..LbfgsConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn lbfgs_finds_the_mode_of_a_correlated_gaussian() {
        let r = lbfgs(200, 1e-10)
            .run(
                &correlated_gaussian(),
                Params::from_vec(vec![0.0, 0.0]),
                &(),
            )
            .unwrap();
        assert!(r.max_abs_grad <= 1e-10, "{}", r.max_abs_grad);
        assert!(r.converged(), "{r:?}");
        assert!((r.params.values()[0] - 1.0).abs() < 1e-8);
        assert!((r.params.values()[1] + 2.0).abs() < 1e-8);
        // The value is the log density at the mode (0), not its negation.
        assert!(r.value <= 0.0 && r.value > -1e-15, "{}", r.value);
        assert!(r.iterations < 50, "{} iterations", r.iterations);
    }

    /// Rosenbrock's function f(x) = Σ 100 (xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)², minimum 0
    /// at (1, …, 1), from the classic start (−1.2, 1, −1.2, 1, …).
    #[test]
    fn lbfgs_minimises_rosenbrock() {
        let rosenbrock = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g.fill(0.0);
            let mut f = 0.0;
            for i in 0..x.len() - 1 {
                let (a, b) = (x[i + 1] - x[i] * x[i], 1.0 - x[i]);
                f += 100.0 * a * a + b * b;
                g[i] += -400.0 * x[i] * a - 2.0 * b;
                g[i + 1] += 200.0 * a;
            }
            f
        });
        for dim in [2usize, 10] {
            let start: Vec<f64> = (0..dim)
                .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
                .collect();
            let t = Lbfgs::new(LbfgsConfig {
                max_iters: 1000,
                tol: 1e-8,
                objective: Objective::MinimiseLoss,
                ..LbfgsConfig::default()
            })
            .unwrap();
            let r = t.run(&rosenbrock, Params::from_vec(start), &()).unwrap();
            // Rounding stalls f near 0 before ‖∇f‖∞ reaches 1e-8 in 10-D.
            assert!(
                matches!(r.stop, LbfgsStop::GradientTolerance | LbfgsStop::NoProgress),
                "dim {dim}: {r:?}"
            );
            assert!(r.max_abs_grad <= 1e3 * 1e-8, "dim {dim}: {r:?}");
            assert!(r.value < 1e-14, "dim {dim}: f = {}", r.value);
            for v in r.params.values() {
                assert!((v - 1.0).abs() < 1e-6, "dim {dim}: {:?}", r.params.values());
            }
            assert!(r.iterations < 200, "dim {dim}: {} iterations", r.iterations);
        }
    }

    #[test]
    fn lbfgs_stops_at_max_iters_and_reports_why() {
        let d = correlated_gaussian();
        let start = Params::from_vec(vec![0.0, 0.0]);
        let r = lbfgs(0, 1e-10).run(&d, start.clone(), &()).unwrap();
        assert_eq!((r.iterations, r.stop), (0, LbfgsStop::MaxIters));
        assert_eq!(r.params, start);
        let r = lbfgs(2, 1e-10).run(&d, start.clone(), &()).unwrap();
        assert_eq!((r.iterations, r.stop), (2, LbfgsStop::MaxIters));
        assert!(!r.converged());
        // Already at the mode: nothing to do.
        let mode = Params::from_vec(vec![1.0, -2.0]);
        let r = lbfgs(10, 1e-10).run(&d, mode.clone(), &()).unwrap();
        assert_eq!(
            (r.iterations, r.stop, &r.params),
            (0, LbfgsStop::GradientTolerance, &mode)
        );
    }

    #[test]
    fn lbfgs_backtracks_from_non_finite_points_and_rejects_a_bad_start() {
        // log N(x; 2, 1) with a NaN hole on (−0.1, 0.1): from −1 the first
        // trial point is 0 (a unit step along the scaled gradient), in the
        // hole, so the line search backtracks to −0.5 and then jumps to 2.
        let hits = std::sync::atomic::AtomicUsize::new(0);
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = -(x[0] - 2.0);
            if x[0].abs() < 0.1 {
                hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                f64::NAN
            } else {
                -0.5 * (x[0] - 2.0).powi(2)
            }
        });
        let r = lbfgs(100, 1e-10)
            .run(&d, Params::from_vec(vec![-1.0]), &())
            .unwrap();
        assert!(r.converged(), "{r:?}");
        assert!((r.params.values()[0] - 2.0).abs() < 1e-9);
        assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1);
        match lbfgs(100, 1e-10).run(&d, Params::from_vec(vec![0.05]), &()) {
            Err(Error::NonFiniteLogDensity { step: 0, value, .. }) => assert!(value.is_nan()),
            other => panic!("expected NonFiniteLogDensity, got {other:?}"),
        }
        // An error other than a non-finite value is returned as is.
        struct Failing;
        impl LogDensity for Failing {
            type Batch = ();
            type Aux = ();
            fn value_and_grad(&self, p: &Params, _: &(), g: &mut [f64]) -> Result<(f64, ())> {
                if p.values()[0] > 0.0 {
                    return Err(Error::Data("boom".into()));
                }
                g[0] = 1.0;
                Ok((p.values()[0], ()))
            }
        }
        assert!(matches!(
            lbfgs(10, 1e-10).run(&Failing, Params::from_vec(vec![-0.5]), &()),
            Err(Error::Data(_))
        ));
    }

    #[test]
    fn bad_lbfgs_configs_are_rejected() {
        let ok = LbfgsConfig::default();
        assert!(Lbfgs::new(ok.clone()).is_ok());
        for bad in [
            LbfgsConfig {
                memory: 0,
                ..ok.clone()
            },
            LbfgsConfig {
                tol: -1.0,
                ..ok.clone()
            },
            LbfgsConfig {
                tol: f64::NAN,
                ..ok.clone()
            },
            LbfgsConfig {
                armijo: 0.0,
                ..ok.clone()
            },
            LbfgsConfig {
                armijo: 1.0,
                ..ok.clone()
            },
            LbfgsConfig {
                line_search_trials: 0,
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(Lbfgs::new(bad.clone()), Err(Error::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
    }
}
