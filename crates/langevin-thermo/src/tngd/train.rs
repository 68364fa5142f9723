//! The TNGD training loop: the update rules, the methods compared (gradient,
//! NGD by Cholesky, NGD by conjugate gradients, TNGD) and the trace of a run.
//! The update rules are the library's optimiser kernels ([`langevin::optim`]),
//! the conjugate gradients the library's ([`langevin::curvature::cg`]).

use langevin::curvature::{cg, CgConfig};
use langevin::optim;
use langevin_core::rng::chain_rng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

use super::data::Dataset;
use super::model::{Curvature, Mlp};
use super::solver::{cholesky_solve, ou_evolve_factored, OuConfig};
use crate::error::{Result, ThermoError as Error};

/// The update rule applied to the (preconditioned) direction.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Optimizer {
    Sgd {
        lr: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl Optimizer {
    /// Adam with the usual β's.
    pub fn adam(lr: f64) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Sgd { lr } | Optimizer::Adam { lr, .. } => lr,
        }
    }

    /// The same rule with learning rate `lr`.
    pub fn with_lr(mut self, new: f64) -> Self {
        match &mut self {
            Optimizer::Sgd { lr } | Optimizer::Adam { lr, .. } => *lr = new,
        }
        self
    }

    /// The library's kernel for this rule ([`langevin::optim::Optimizer`]).
    fn kernel(&self) -> optim::Optimizer {
        match *self {
            Optimizer::Sgd { lr } => optim::Optimizer::sgd(lr),
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => optim::Optimizer::Adam(optim::AdamConfig {
                step_size: lr.into(),
                beta1,
                beta2,
                eps,
                ..optim::AdamConfig::default()
            }),
        }
    }

    fn validate(&self) -> Result<()> {
        let lr = match *self {
            Optimizer::Sgd { lr } => lr,
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0) {
                    return Err(Error::InvalidConfig {
                        field: "adam",
                        reason: "need 0 <= beta < 1 and eps > 0".into(),
                    });
                }
                lr
            }
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidConfig {
                field: "lr",
                reason: format!("must be finite and > 0, got {lr}"),
            });
        }
        Ok(())
    }
}

/// Which direction is fed to the optimiser.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Method {
    /// The plain gradient.
    Gradient,
    /// Exact NGD: `F⁻¹ g` by Cholesky.
    Ngd,
    /// NGD with `iters` conjugate-gradient iterations warm-started at the previous direction.
    NgdCg { iters: usize },
    /// Thermodynamic NGD.
    Tngd(OuConfig),
}

impl Method {
    /// A short label for tables and plots.
    pub fn label(&self, opt: &Optimizer) -> String {
        let o = match opt {
            Optimizer::Sgd { .. } => "SGD",
            Optimizer::Adam { .. } => "Adam",
        };
        match self {
            Method::Gradient => o.to_string(),
            Method::Ngd => format!("NGD-{o}"),
            Method::NgdCg { iters } => format!("NGD-CG{iters}-{o}"),
            Method::Tngd(c) => format!("TNGD(t={},k0={})-{o}", c.time, c.kappa),
        }
    }
}

/// Training configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub hidden: usize,
    pub batch: usize,
    pub iters: usize,
    pub eval_every: usize,
    /// GGN damping λ.
    pub damping: f64,
    pub optimizer: Optimizer,
    pub method: Method,
    pub seed: u64,
    /// τ = RC of the analog device in seconds (modelled time).
    pub tau_seconds: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hidden: 16,
            batch: 64,
            iters: 200,
            eval_every: 10,
            damping: 0.1,
            optimizer: Optimizer::adam(1e-2),
            method: Method::Gradient,
            seed: 0,
            tau_seconds: 1e-6,
        }
    }
}

impl TrainConfig {
    /// Validate.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.batch == 0 || self.eval_every == 0 {
            return Err(Error::InvalidConfig {
                field: "hidden/batch/eval_every",
                reason: "must be >= 1".into(),
            });
        }
        if !(self.damping.is_finite() && self.damping >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "damping",
                reason: format!("must be >= 0, got {}", self.damping),
            });
        }
        if !(self.tau_seconds.is_finite() && self.tau_seconds > 0.0) {
            return Err(Error::InvalidConfig {
                field: "tau_seconds",
                reason: "must be > 0".into(),
            });
        }
        self.optimizer.validate()?;
        match self.method {
            Method::Tngd(c) => {
                c.validate()?;
                if self.damping == 0.0 && c.kappa > 0.0 {
                    return Err(Error::InvalidConfig {
                        field: "damping",
                        reason: "noisy TNGD needs damping > 0 (F must be positive definite)".into(),
                    });
                }
            }
            Method::NgdCg { iters: 0 } => {
                return Err(Error::InvalidConfig {
                    field: "cg_iters",
                    reason: "must be >= 1".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// One evaluation point of a training run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TracePoint {
    pub iter: usize,
    /// Full training-set loss.
    pub train_loss: f64,
    pub test_accuracy: f64,
    /// Measured digital seconds + modelled analog seconds so far.
    pub wall_seconds: f64,
    /// Modelled analog seconds so far (part of `wall_seconds`).
    pub analog_seconds: f64,
}

/// A training run's trace and final parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainResult {
    pub label: String,
    pub trace: Vec<TracePoint>,
    pub params: Vec<f64>,
}

/// Train the MLP on `train` with `cfg`, evaluating on `test`. Same seed, same losses.
pub fn train(train: &Dataset, test: &Dataset, cfg: &TrainConfig) -> Result<TrainResult> {
    cfg.validate()?;
    if train.n == 0 || test.d != train.d {
        return Err(Error::Data(
            "empty training set or train/test feature sizes differ".into(),
        ));
    }
    let mlp = Mlp {
        d_in: train.d,
        hidden: cfg.hidden,
        k: train.k.max(test.k),
    };
    let pn = mlp.n_params();
    let mut rng = chain_rng(cfg.seed, 0);
    let mut noise_rng = chain_rng(cfg.seed, 1);
    let mut th = mlp.init(&mut rng);
    let opt = cfg.optimizer.kernel();
    let mut opt_state = opt.init_state(pn);
    let mut dir_prev = vec![0.0; pn];
    let mut prev_c: Option<Curvature> = None;
    let mut trace = Vec::new();
    let (mut digital, mut analog) = (0.0f64, 0.0f64);
    let batch = cfg.batch.min(train.n);
    let mut perm: Vec<usize> = (0..train.n).collect();
    let mut pos = train.n;
    let eval = |it: usize, th: &[f64], digital: f64, analog: f64, trace: &mut Vec<TracePoint>| {
        trace.push(TracePoint {
            iter: it,
            train_loss: mlp.loss(th, train),
            test_accuracy: mlp.accuracy(th, test),
            wall_seconds: digital + analog,
            analog_seconds: analog,
        });
    };
    eval(0, &th, 0.0, 0.0, &mut trace);
    for it in 1..=cfg.iters {
        if pos + batch > train.n {
            for i in (1..perm.len()).rev() {
                let j = rng.random_range(0..=i);
                perm.swap(i, j);
            }
            pos = 0;
        }
        let rows = &perm[pos..pos + batch];
        pos += batch;
        let t0 = Instant::now();
        let dir = match cfg.method {
            Method::Gradient => {
                let (_, g) = mlp.loss_grad(&th, train, rows);
                digital += t0.elapsed().as_secs_f64();
                g
            }
            Method::Ngd => {
                let c = mlp.curvature(&th, train, rows, cfg.damping);
                let d = cholesky_solve(&c.dense(), &c.grad)?;
                digital += t0.elapsed().as_secs_f64();
                d
            }
            Method::NgdCg { iters } => {
                let c = mlp.curvature(&th, train, rows, cfg.damping);
                let d = cg_warm(&c, &dir_prev, iters)?;
                digital += t0.elapsed().as_secs_f64();
                d
            }
            Method::Tngd(ou) => {
                let c = mlp.curvature(&th, train, rows, cfg.damping);
                digital += t0.elapsed().as_secs_f64();
                let mut x = dir_prev.clone();
                if ou.delay > 0.0 {
                    if let Some(cp) = &prev_c {
                        x = ou_evolve_factored(
                            cp,
                            &x,
                            ou.delay,
                            ou.kappa,
                            ou.integrator,
                            &mut noise_rng,
                        )?;
                    }
                }
                let x =
                    ou_evolve_factored(&c, &x, ou.time, ou.kappa, ou.integrator, &mut noise_rng)?;
                analog += (ou.time + ou.delay) * cfg.tau_seconds;
                if ou.delay > 0.0 {
                    prev_c = Some(c);
                }
                x
            }
        };
        if dir.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFiniteDirection {
                step: it as u64,
                bad: dir.iter().filter(|x| !x.is_finite()).count(),
            });
        }
        let t1 = Instant::now();
        opt.apply(&mut opt_state, &mut th, &dir)
            .map_err(|e| Error::InvalidConfig {
                field: "optimizer",
                reason: e.to_string(),
            })?;
        digital += t1.elapsed().as_secs_f64();
        dir_prev = dir;
        if it % cfg.eval_every == 0 || it == cfg.iters {
            eval(it, &th, digital, analog, &mut trace);
        }
    }
    Ok(TrainResult {
        label: cfg.method.label(&cfg.optimizer),
        trace,
        params: th,
    })
}

/// One learning rate tried by [`tune_lr`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LrCandidate {
    pub lr: f64,
    /// Mean cross-entropy of the final parameters on the validation set
    /// (`None` when the run failed).
    pub val_loss: Option<f64>,
    /// Accuracy on the validation set (`None` when the run failed).
    pub val_accuracy: Option<f64>,
    /// Why the run failed (a non-finite direction, a curvature matrix that
    /// lost positive definiteness): a learning rate too large.
    pub failure: Option<String>,
}

/// The outcome of a learning-rate search ([`tune_lr`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LrSearch {
    /// The method's label ([`Method::label`]).
    pub label: String,
    /// The learning rate with the lowest validation loss.
    pub chosen: f64,
    /// Whether `chosen` is the smallest or the largest value of a grid of more
    /// than one value (the optimum may lie outside the grid).
    pub at_edge: bool,
    /// Every value tried, in the grid's order.
    pub candidates: Vec<LrCandidate>,
}

/// Choose `cfg.optimizer`'s learning rate from `grid` by validation loss:
/// for each value, train on `fit` with `cfg` (same seed, same iterations) and
/// score the final parameters by their mean cross-entropy on `val`; the value
/// with the lowest loss wins. Runs that diverge (a non-finite direction, a
/// numerical failure, a curvature matrix that is no longer positive definite)
/// are recorded as failed candidates; when every value fails, the error of
/// the first is returned. The test set plays no part: evaluate the chosen rate
/// on it afterwards with [`train`].
pub fn tune_lr(fit: &Dataset, val: &Dataset, cfg: &TrainConfig, grid: &[f64]) -> Result<LrSearch> {
    if grid.is_empty() {
        return Err(Error::InvalidConfig {
            field: "lr_grid",
            reason: "must hold at least one learning rate".into(),
        });
    }
    if let Some(bad) = grid.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::InvalidConfig {
            field: "lr_grid",
            reason: format!("learning rates must be finite and > 0, got {bad}"),
        });
    }
    if val.n == 0 {
        return Err(Error::Data("empty validation set".into()));
    }
    let mlp = Mlp {
        d_in: fit.d,
        hidden: cfg.hidden,
        k: fit.k.max(val.k),
    };
    let mut candidates = Vec::with_capacity(grid.len());
    let mut first_err = None;
    for &lr in grid {
        let c = TrainConfig {
            optimizer: cfg.optimizer.with_lr(lr),
            eval_every: cfg.iters.max(1),
            ..cfg.clone()
        };
        match train(fit, val, &c) {
            Ok(r) => {
                let loss = mlp.loss(&r.params, val);
                let finite = loss.is_finite() && r.params.iter().all(|p| p.is_finite());
                candidates.push(LrCandidate {
                    lr,
                    val_loss: finite.then_some(loss),
                    val_accuracy: finite.then(|| mlp.accuracy(&r.params, val)),
                    failure: (!finite).then(|| "non-finite parameters or loss".to_string()),
                });
            }
            Err(
                e @ (Error::NonFiniteDirection { .. }
                | Error::Numerical(_)
                | Error::NotPositiveDefinite { .. }),
            ) => {
                candidates.push(LrCandidate {
                    lr,
                    val_loss: None,
                    val_accuracy: None,
                    failure: Some(e.to_string()),
                });
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    let best = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.val_loss.map(|l| (i, l)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let Some((i, _)) = best else {
        return Err(first_err
            .unwrap_or_else(|| Error::Numerical("every learning rate of the grid failed".into())));
    };
    let chosen = candidates[i].lr;
    let lo = grid.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = grid.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Ok(LrSearch {
        label: cfg.method.label(&cfg.optimizer),
        chosen,
        at_edge: grid.len() > 1 && (chosen == lo || chosen == hi),
        candidates,
    })
}

/// `n` log-spaced values from `lo` to `hi` (both included).
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![lo];
    }
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

/// A preconditioner of [`cg`] (none is used).
type Precond = fn(&[f64], &mut [f64]) -> langevin_core::Result<()>;

/// `iters` conjugate-gradient iterations on `F x = g` (the library's
/// [`langevin::curvature::cg`], matrix-free through the GGN factor), warm-started
/// at `x0`; stops early once `‖r‖ ≤ 1e-15`.
fn cg_warm(c: &Curvature, x0: &[f64], iters: usize) -> Result<Vec<f64>> {
    let cfg = CgConfig {
        max_iters: Some(iters),
        tol: 0.0,
        atol: 1e-15,
        damping: 0.0,
    };
    let matvec = |v: &[f64], out: &mut [f64]| -> langevin_core::Result<()> {
        out.copy_from_slice(&c.matvec(v));
        Ok(())
    };
    cg(matvec, &c.grad, Some(x0), None::<Precond>, &cfg)
        .map(|r| r.x)
        .map_err(|e| Error::NotPositiveDefinite {
            what: "GGN",
            semi: false,
            detail: Some(format!("conjugate gradients: {e}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tngd::data::toy_data;

    #[test]
    fn tngd_tends_to_ngd_and_bad_config_errors() {
        let data = toy_data(80, 3, 2, 5);
        let (tr, te) = data.split(0.25, 0).unwrap();
        let base = TrainConfig {
            hidden: 4,
            batch: 16,
            iters: 15,
            eval_every: 5,
            damping: 0.1,
            optimizer: Optimizer::Sgd { lr: 0.5 },
            ..Default::default()
        };
        let ngd = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Ngd,
                ..base.clone()
            },
        )
        .unwrap();
        let tngd = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Tngd(OuConfig {
                    time: 200.0,
                    ..Default::default()
                }),
                ..base.clone()
            },
        )
        .unwrap();
        for (a, b) in ngd.params.iter().zip(&tngd.params) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let tngd_run = || {
            let method = Method::Tngd(OuConfig {
                time: 1.0,
                kappa: 0.01,
                ..Default::default()
            });
            let cfg = TrainConfig {
                method,
                ..base.clone()
            };
            train(&tr, &te, &cfg).unwrap()
        };
        assert_eq!(tngd_run().params, tngd_run().params);
        assert!(train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Tngd(OuConfig {
                    time: -1.0,
                    ..Default::default()
                }),
                ..base.clone()
            }
        )
        .is_err());
        assert!(train(
            &tr,
            &te,
            &TrainConfig {
                optimizer: Optimizer::Sgd { lr: f64::NAN },
                ..base
            }
        )
        .is_err());
    }

    #[test]
    fn cg_method_matches_cholesky_ngd_with_enough_iterations() {
        let data = toy_data(60, 3, 2, 7);
        let (tr, te) = data.split(0.25, 0).unwrap();
        let base = TrainConfig {
            hidden: 3,
            batch: 8,
            iters: 5,
            eval_every: 5,
            damping: 0.5,
            optimizer: Optimizer::adam(1e-2),
            ..Default::default()
        };
        let ngd = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Ngd,
                ..base.clone()
            },
        )
        .unwrap();
        // P = 3·3 + 3 + 2·3 + 2 = 20 parameters: 40 iterations solve to round-off.
        let cg = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::NgdCg { iters: 40 },
                ..base
            },
        )
        .unwrap();
        for (a, b) in ngd.params.iter().zip(&cg.params) {
            assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        }
    }

    #[test]
    fn tune_lr_picks_the_lowest_validation_loss_and_records_divergence() {
        // Every fifth label flipped: no rate can reach zero loss, and an
        // exploding rate is punished by confident mistakes.
        let mut data = toy_data(200, 3, 2, 11);
        for i in (0..data.n).step_by(5) {
            data.y[i] = 1 - data.y[i];
        }
        let (tr, val) = data.split(0.25, 1).unwrap();
        let cfg = TrainConfig {
            hidden: 4,
            batch: 16,
            iters: 30,
            eval_every: 5,
            optimizer: Optimizer::Sgd { lr: 1.0 },
            ..Default::default()
        };
        let grid = [1e-4, 0.3, 1e12];
        let s = tune_lr(&tr, &val, &cfg, &grid).unwrap();
        assert_eq!(s.candidates.len(), 3);
        // A rate of 1e-4 barely moves from the start; 1e12 blows up.
        let losses: Vec<_> = s.candidates.iter().map(|c| c.val_loss).collect();
        assert!(losses[0].unwrap() > losses[1].unwrap(), "{losses:?}");
        assert!(
            s.candidates[2].failure.is_some() || losses[2].unwrap() > losses[1].unwrap(),
            "{:?}",
            s.candidates[2]
        );
        assert_eq!(s.chosen, 0.3);
        assert!(!s.at_edge);
        assert!(s.label == "SGD");
        // The chosen value is the arg-min of the recorded losses.
        let again = tune_lr(&tr, &val, &cfg, &[1e-4, 0.3]).unwrap();
        assert_eq!((again.chosen, again.at_edge), (0.3, true));
        assert!(tune_lr(&tr, &val, &cfg, &[]).is_err());
        assert!(tune_lr(&tr, &val, &cfg, &[0.1, -1.0]).is_err());
        let g = log_grid(1e-3, 1e-1, 5);
        assert_eq!(g.len(), 5);
        assert!((g[2] - 1e-2).abs() < 1e-15 && (g[4] - 1e-1).abs() < 1e-15);
    }
}
