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
}
