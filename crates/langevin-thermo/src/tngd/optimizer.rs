//! TNGD as an optimiser for any model: the caller supplies the gradient `g`
//! and a GGN/Fisher-vector product `v ↦ G v` (a closure), and [`Tngd`] runs
//! the simulated device on `(G + λI) d = g`, returning its state `d` as the
//! natural-gradient direction. Nothing here knows about the tanh MLP of
//! [`train`](super::train()).
//!
//! The device is the one of the module docs: its state follows
//! `dd = -((G + λI) d - g) dt + sqrt(2 κ₀) dW` for `time` τ per step,
//! started from the previous step's state (the device is not reset), so its
//! mean is `(G + λI)⁻¹ g + e^{-(G+λI) t}(d_prev - (G + λI)⁻¹ g)` and for long
//! times the direction is exact NGD's. With [`Integrator::Exact`] the matrix
//! `G + λI` is assembled from `dim` products (the device holds it; `O(dim²)`
//! memory, `O(dim³)` work to simulate) and the transition is exact; with
//! [`Integrator::EulerMaruyama`] only products are used (`⌈t/dt⌉` per step,
//! matrix-free; needs `dt λ_max(G + λI) < 2`). Analog time is accounted:
//! [`Tngd::analog_seconds`] is `steps × time × τ`.
//!
//! ```
//! use langevin_thermo::tngd::{OuConfig, Tngd};
//! // f(w) = ½ wᵀ A w - bᵀ w with A = [[2, 0.5], [0.5, 1]]: G = A, g = A w - b.
//! let a = [[2.0, 0.5], [0.5, 1.0]];
//! let b = [1.0, -1.0];
//! let gvp = |v: &[f64], out: &mut [f64]| {
//!     for i in 0..2 {
//!         out[i] = a[i][0] * v[0] + a[i][1] * v[1];
//!     }
//! };
//! let ou = OuConfig { time: 60.0, ..OuConfig::default() };
//! let mut opt = Tngd::new(2, 0.0, ou, 1e-6, 0).unwrap();
//! let mut w = vec![0.0, 0.0];
//! let mut g = vec![0.0; 2];
//! gvp(&w, &mut g);
//! g.iter_mut().zip(&b).for_each(|(gi, bi)| *gi -= bi);
//! opt.step(&mut w, &g, gvp, 1.0).unwrap(); // one Newton step: w = A⁻¹ b
//! assert!((2.0 * w[0] + 0.5 * w[1] - 1.0).abs() < 1e-9);
//! assert!((0.5 * w[0] + w[1] + 1.0).abs() < 1e-9);
//! assert!((opt.analog_seconds() - 60e-6).abs() < 1e-15);
//! ```

use faer::Mat;
use langevin_core::rng::{chain_rng, ChainRng};
use std::cell::Cell;

use super::solver::{euler_maruyama, ou_evolve, Integrator, OuConfig};
use crate::error::{Result, ThermoError as Error};

/// Thermodynamic natural gradient descent for a user's model (see the
/// [module docs](self)).
#[derive(Clone, Debug)]
pub struct Tngd {
    dim: usize,
    damping: f64,
    ou: OuConfig,
    tau_seconds: f64,
    state: Vec<f64>,
    rng: ChainRng,
    analog_tau: f64,
    steps: u64,
}

impl Tngd {
    /// A device for `dim` parameters with damping `λ` (`G + λI`), analog run
    /// `ou` per step (`ou.delay` must be 0: the previous curvature is not
    /// kept), time constant `tau_seconds` (τ = RC, for the accounting) and the
    /// noise stream `seed` (used only when `ou.kappa > 0`).
    pub fn new(
        dim: usize,
        damping: f64,
        ou: OuConfig,
        tau_seconds: f64,
        seed: u64,
    ) -> Result<Self> {
        ou.validate()?;
        if dim == 0 {
            return Err(Error::InvalidConfig {
                field: "dim",
                reason: "must be >= 1".into(),
            });
        }
        if !(damping.is_finite() && damping >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "damping",
                reason: format!("must be finite and >= 0, got {damping}"),
            });
        }
        if damping == 0.0 && ou.kappa > 0.0 {
            return Err(Error::InvalidConfig {
                field: "damping",
                reason: "noisy TNGD needs damping > 0 (G + λI must be positive definite)".into(),
            });
        }
        if ou.delay != 0.0 {
            return Err(Error::InvalidConfig {
                field: "delay",
                reason: format!(
                    "must be 0 for Tngd (the device would run on the previous curvature, which is not kept), got {}",
                    ou.delay
                ),
            });
        }
        if !(tau_seconds.is_finite() && tau_seconds > 0.0) {
            return Err(Error::InvalidConfig {
                field: "tau_seconds",
                reason: format!("must be finite and > 0, got {tau_seconds}"),
            });
        }
        Ok(Self {
            dim,
            damping,
            ou,
            tau_seconds,
            state: vec![0.0; dim],
            rng: chain_rng(seed, 0),
            analog_tau: 0.0,
            steps: 0,
        })
    }

    /// Run the device on `(G + λI) d = grad` for `ou.time` τ from its current
    /// state and return the new state: the natural-gradient direction.
    /// `gvp(v, out)` must write `G v` into `out` (`G` symmetric positive
    /// semi-definite, e.g. a GGN or Fisher at the current parameters).
    pub fn direction<F>(&mut self, grad: &[f64], gvp: F) -> Result<&[f64]>
    where
        F: Fn(&[f64], &mut [f64]),
    {
        if grad.len() != self.dim {
            return Err(Error::DimensionMismatch {
                what: "gradient",
                expected: self.dim,
                got: grad.len(),
            });
        }
        if grad.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: "gradient" });
        }
        let (n, lam, t, kappa) = (self.dim, self.damping, self.ou.time, self.ou.kappa);
        let next = match self.ou.integrator {
            Integrator::Exact => {
                let f = self.assemble(&gvp)?;
                ou_evolve(
                    &f,
                    grad,
                    &self.state,
                    t,
                    kappa,
                    Integrator::Exact,
                    &mut self.rng,
                )?
            }
            Integrator::EulerMaruyama { dt } => {
                let bad = Cell::new(false);
                let fmul = |v: &[f64]| {
                    let mut out = vec![0.0; n];
                    gvp(v, &mut out);
                    for (o, vi) in out.iter_mut().zip(v) {
                        *o += lam * vi;
                    }
                    if out.iter().any(|x| !x.is_finite()) {
                        bad.set(true);
                    }
                    out
                };
                let r = if t == 0.0 {
                    Ok(self.state.clone())
                } else {
                    euler_maruyama(fmul, grad, &self.state, t, dt, kappa, &mut self.rng)
                };
                if bad.get() {
                    return Err(Error::NonFinite {
                        what: "GGN-vector product",
                    });
                }
                r?
            }
        };
        self.state = next;
        self.analog_tau += t;
        self.steps += 1;
        Ok(&self.state)
    }

    /// One TNGD step with plain SGD on the direction: `params -= lr · d`.
    pub fn step<F>(&mut self, params: &mut [f64], grad: &[f64], gvp: F, lr: f64) -> Result<()>
    where
        F: Fn(&[f64], &mut [f64]),
    {
        if params.len() != self.dim {
            return Err(Error::DimensionMismatch {
                what: "parameters",
                expected: self.dim,
                got: params.len(),
            });
        }
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidConfig {
                field: "lr",
                reason: format!("must be finite and > 0, got {lr}"),
            });
        }
        let d = self.direction(grad, gvp)?;
        for (p, di) in params.iter_mut().zip(d) {
            *p -= lr * di;
        }
        Ok(())
    }

    /// `G + λI` from `dim` products with the unit vectors, checked symmetric
    /// (relative tolerance 1e-8) and finite, then symmetrised.
    fn assemble<F: Fn(&[f64], &mut [f64])>(&self, gvp: &F) -> Result<Mat<f64>> {
        let n = self.dim;
        let mut f = Mat::<f64>::zeros(n, n);
        let mut e = vec![0.0; n];
        let mut col = vec![0.0; n];
        for j in 0..n {
            e[j] = 1.0;
            col.iter_mut().for_each(|c| *c = 0.0);
            gvp(&e, &mut col);
            e[j] = 0.0;
            for i in 0..n {
                f[(i, j)] = col[i];
            }
        }
        let mut scale = 0.0f64;
        for j in 0..n {
            for i in 0..n {
                let v = f[(i, j)];
                if !v.is_finite() {
                    return Err(Error::NonFinite {
                        what: "GGN-vector product",
                    });
                }
                scale = scale.max(v.abs());
            }
        }
        for j in 0..n {
            for i in 0..j {
                let asym = (f[(i, j)] - f[(j, i)]).abs();
                if asym > 1e-8 * scale.max(f64::MIN_POSITIVE) {
                    return Err(Error::NotSymmetric {
                        what: "the GGN-vector product's matrix",
                        i,
                        j,
                        asym,
                    });
                }
                let m = 0.5 * (f[(i, j)] + f[(j, i)]);
                f[(i, j)] = m;
                f[(j, i)] = m;
            }
            f[(j, j)] += self.damping;
        }
        Ok(f)
    }

    /// The analog run of each step.
    pub fn ou(&self) -> &OuConfig {
        &self.ou
    }

    /// Change the analog run of the next steps (for example a smaller
    /// Euler-Maruyama step after the curvature grew), checked as in
    /// [`Tngd::new`]; the device state and the accounting are kept.
    pub fn set_ou(&mut self, ou: OuConfig) -> Result<()> {
        Self::new(self.dim, self.damping, ou, self.tau_seconds, 0)?;
        self.ou = ou;
        Ok(())
    }

    /// The damping λ of the next steps.
    pub fn damping(&self) -> f64 {
        self.damping
    }

    /// Change the damping λ of the next steps (for example adapted
    /// Levenberg-Marquardt style from how well the last step did), checked as
    /// in [`Tngd::new`]; the device state and the accounting are kept.
    pub fn set_damping(&mut self, damping: f64) -> Result<()> {
        Self::new(self.dim, damping, self.ou, self.tau_seconds, 0)?;
        self.damping = damping;
        Ok(())
    }

    /// The device state (the last direction).
    pub fn state(&self) -> &[f64] {
        &self.state
    }

    /// Set the device state to zero (the next step then starts from rest).
    pub fn reset(&mut self) {
        self.state.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Modelled analog time so far, in units of τ: `steps × time`.
    pub fn analog_time(&self) -> f64 {
        self.analog_tau
    }

    /// Modelled analog time so far, in seconds: `steps × time × τ`.
    pub fn analog_seconds(&self) -> f64 {
        self.analog_tau * self.tau_seconds
    }

    /// Number of directions computed.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tngd::solver::{cholesky_solve, ou_mean};
    use langevin_core::rng::fill_standard_normal;

    fn dense_plus(g: &Mat<f64>, lam: f64) -> Mat<f64> {
        Mat::from_fn(g.nrows(), g.ncols(), |i, j| {
            g[(i, j)] + if i == j { lam } else { 0.0 }
        })
    }

    fn matvec(m: &Mat<f64>) -> impl Fn(&[f64], &mut [f64]) + '_ {
        move |v: &[f64], out: &mut [f64]| {
            for i in 0..m.nrows() {
                out[i] = (0..m.ncols()).map(|j| m[(i, j)] * v[j]).sum();
            }
        }
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    /// A random symmetric positive semi-definite `BᵀB` (rank `r`) and a vector.
    fn quadratic(n: usize, r: usize, seed: u64) -> (Mat<f64>, Vec<f64>) {
        let mut rng = chain_rng(seed, 0);
        let mut b = vec![0.0; r * n];
        fill_standard_normal(&mut rng, &mut b);
        let g = Mat::from_fn(n, n, |i, j| {
            (0..r).map(|k| b[k * n + i] * b[k * n + j]).sum::<f64>() / r as f64
        });
        let mut v = vec![0.0; n];
        fill_standard_normal(&mut rng, &mut v);
        (g, v)
    }

    #[test]
    fn quadratic_directions_follow_the_ou_mean_and_tend_to_the_exact_solve() {
        let (n, lam) = (6, 0.1);
        let (gm, g) = quadratic(n, 3, 1); // rank 3: G alone is singular
        let f = dense_plus(&gm, lam);
        let exact = cholesky_solve(&f, &g).unwrap();
        for integrator in [Integrator::Exact, Integrator::EulerMaruyama { dt: 0.01 }] {
            // Short runs: the device is not reset, so the second direction
            // starts from the first (the OU mean, exactly for `Exact`).
            let ou = OuConfig {
                time: 2.0,
                integrator,
                ..Default::default()
            };
            let mut opt = Tngd::new(n, lam, ou, 1e-6, 0).unwrap();
            let d1 = opt.direction(&g, matvec(&gm)).unwrap().to_vec();
            let m1 = ou_mean(&f, &g, &vec![0.0; n], 2.0).unwrap();
            let g2: Vec<f64> = g.iter().map(|x| -0.5 * x).collect();
            let d2 = opt.direction(&g2, matvec(&gm)).unwrap().to_vec();
            let m2 = ou_mean(&f, &g2, &m1, 2.0).unwrap();
            let tol = if integrator == Integrator::Exact {
                1e-10
            } else {
                5e-2
            };
            assert!(rel(&d1, &m1) < tol, "{integrator:?}: {}", rel(&d1, &m1));
            assert!(rel(&d2, &m2) < tol, "{integrator:?}: {}", rel(&d2, &m2));
            // The short run is far from the solve: the test can tell them apart.
            assert!(rel(&d1, &exact) > 0.1, "{}", rel(&d1, &exact));
            assert_eq!(opt.steps(), 2);
            assert!((opt.analog_time() - 4.0).abs() < 1e-12);
            assert!((opt.analog_seconds() - 4e-6).abs() < 1e-18);
            // Long runs: exact NGD (λ_min >= 0.1, e^{-0.1·400} ≈ 4e-18).
            let long = OuConfig {
                time: 400.0,
                integrator,
                ..Default::default()
            };
            let mut opt = Tngd::new(n, lam, long, 1e-6, 0).unwrap();
            let d = opt.direction(&g, matvec(&gm)).unwrap();
            assert!(rel(d, &exact) < 1e-9, "{integrator:?}: {}", rel(d, &exact));
        }
    }

    /// Logistic regression: loss, gradient and the matrix-free GGN product.
    struct Logistic {
        x: Vec<f64>,
        y: Vec<f64>,
        n: usize,
        d: usize,
    }

    impl Logistic {
        fn new(n: usize, d: usize, seed: u64) -> Self {
            let mut rng = chain_rng(seed, 0);
            let mut x = vec![0.0; n * d];
            fill_standard_normal(&mut rng, &mut x);
            let mut e = vec![0.0; n];
            fill_standard_normal(&mut rng, &mut e);
            let y = (0..n)
                .map(|i| f64::from(x[i * d] - 0.5 * x[i * d + 1] + e[i] > 0.0))
                .collect();
            Self { x, y, n, d }
        }
        fn probs(&self, w: &[f64]) -> Vec<f64> {
            (0..self.n)
                .map(|i| {
                    let z: f64 = (0..self.d).map(|j| self.x[i * self.d + j] * w[j]).sum();
                    1.0 / (1.0 + (-z).exp())
                })
                .collect()
        }
        fn grad(&self, w: &[f64]) -> Vec<f64> {
            let p = self.probs(w);
            let mut g = vec![0.0; self.d];
            for i in 0..self.n {
                for j in 0..self.d {
                    g[j] += (p[i] - self.y[i]) * self.x[i * self.d + j] / self.n as f64;
                }
            }
            g
        }
        /// `Xᵀ diag(p(1-p)) X v / n` without forming the matrix.
        fn ggn(&self, w: &[f64]) -> impl Fn(&[f64], &mut [f64]) + '_ {
            let p = self.probs(w);
            move |v: &[f64], out: &mut [f64]| {
                out.iter_mut().for_each(|o| *o = 0.0);
                for i in 0..self.n {
                    let row = &self.x[i * self.d..(i + 1) * self.d];
                    let xv: f64 = row.iter().zip(v).map(|(a, b)| a * b).sum();
                    let h = p[i] * (1.0 - p[i]) * xv / self.n as f64;
                    for j in 0..self.d {
                        out[j] += h * row[j];
                    }
                }
            }
        }
        fn ggn_dense(&self, w: &[f64], lam: f64) -> Mat<f64> {
            let p = self.probs(w);
            Mat::from_fn(self.d, self.d, |a, b| {
                let s: f64 = (0..self.n)
                    .map(|i| p[i] * (1.0 - p[i]) * self.x[i * self.d + a] * self.x[i * self.d + b])
                    .sum();
                s / self.n as f64 + if a == b { lam } else { 0.0 }
            })
        }
    }

    #[test]
    fn logistic_tngd_steps_match_exact_ngd_steps() {
        let m = Logistic::new(60, 4, 3);
        let (lam, lr) = (1e-2, 0.8);
        for integrator in [Integrator::Exact, Integrator::EulerMaruyama { dt: 0.5 }] {
            let ou = OuConfig {
                time: 4000.0,
                integrator,
                ..Default::default()
            };
            let mut opt = Tngd::new(m.d, lam, ou, 1e-6, 0).unwrap();
            let mut w = vec![0.0; m.d];
            let mut w_ngd = vec![0.0; m.d];
            for _ in 0..5 {
                let g = m.grad(&w);
                let w0 = w.clone();
                opt.step(&mut w, &g, m.ggn(&w0), lr).unwrap();
                let g = m.grad(&w_ngd);
                let d = cholesky_solve(&m.ggn_dense(&w_ngd, lam), &g).unwrap();
                for (wi, di) in w_ngd.iter_mut().zip(&d) {
                    *wi -= lr * di;
                }
                assert!(rel(&w, &w_ngd) < 1e-8, "{integrator:?}: {w:?} vs {w_ngd:?}");
            }
            // The steps moved: five NGD steps are far from the start and
            // from five plain gradient steps of the same size.
            let norm = w_ngd.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(norm > 0.5, "{norm}");
            let mut w_gd = vec![0.0; m.d];
            for _ in 0..5 {
                let g = m.grad(&w_gd);
                w_gd.iter_mut().zip(&g).for_each(|(wi, gi)| *wi -= lr * gi);
            }
            assert!(rel(&w_gd, &w_ngd) > 0.1, "{}", rel(&w_gd, &w_ngd));
            assert!((opt.analog_seconds() - 5.0 * 4000.0 * 1e-6).abs() < 1e-12);
        }
    }

    #[test]
    fn noisy_runs_repeat_with_the_seed_and_bad_inputs_are_typed_errors() {
        let (gm, g) = quadratic(4, 4, 2);
        let ou = OuConfig {
            time: 1.0,
            kappa: 1e-2,
            ..Default::default()
        };
        let run = |seed| {
            let mut opt = Tngd::new(4, 0.1, ou, 1e-6, seed).unwrap();
            opt.direction(&g, matvec(&gm)).unwrap().to_vec()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut opt = Tngd::new(4, 0.1, ou, 1e-6, 0).unwrap();
        assert!(matches!(
            opt.direction(&g[..3], matvec(&gm)),
            Err(Error::DimensionMismatch { .. })
        ));
        let skew = |v: &[f64], out: &mut [f64]| {
            out.iter_mut().for_each(|o| *o = 0.0);
            out[0] = v[1];
        };
        assert!(matches!(
            opt.direction(&g, skew),
            Err(Error::NotSymmetric { .. })
        ));
        let nan = |_: &[f64], out: &mut [f64]| out.iter_mut().for_each(|o| *o = f64::NAN);
        assert!(matches!(
            opt.direction(&g, nan),
            Err(Error::NonFinite { .. })
        ));
        let mut em = Tngd::new(
            4,
            0.1,
            OuConfig {
                integrator: Integrator::EulerMaruyama { dt: 0.1 },
                ..ou
            },
            1e-6,
            0,
        )
        .unwrap();
        assert!(matches!(
            em.direction(&g, nan),
            Err(Error::NonFinite { .. })
        ));
        // Failed calls neither count as steps nor as analog time.
        assert_eq!((opt.steps(), opt.analog_time()), (0, 0.0));
        let bad = |o: OuConfig, lam: f64| Tngd::new(4, lam, o, 1e-6, 0).unwrap_err();
        assert!(matches!(
            bad(OuConfig { delay: 1.0, ..ou }, 0.1),
            Error::InvalidConfig { field: "delay", .. }
        ));
        assert!(matches!(
            bad(ou, 0.0),
            Error::InvalidConfig {
                field: "damping",
                ..
            }
        ));
        assert!(matches!(
            bad(ou, -1.0),
            Error::InvalidConfig {
                field: "damping",
                ..
            }
        ));
        assert!(matches!(
            bad(OuConfig { time: -1.0, ..ou }, 0.1),
            Error::InvalidConfig { field: "time", .. }
        ));
        let mut w = vec![0.0; 4];
        assert!(matches!(
            opt.step(&mut w, &g, matvec(&gm), f64::NAN),
            Err(Error::InvalidConfig { field: "lr", .. })
        ));
        // set_ou checks as new does and keeps the state and the accounting.
        let mut em = Tngd::new(4, 0.1, ou, 1e-6, 0).unwrap();
        em.direction(&g, matvec(&gm)).unwrap();
        let before = em.state().to_vec();
        assert!(matches!(
            em.set_ou(OuConfig { delay: 1.0, ..ou }),
            Err(Error::InvalidConfig { field: "delay", .. })
        ));
        let em_ou = OuConfig {
            time: 2.0,
            integrator: Integrator::EulerMaruyama { dt: 0.05 },
            ..ou
        };
        em.set_ou(em_ou).unwrap();
        assert_eq!(em.ou().time, 2.0);
        assert_eq!(em.state(), &before[..]);
        em.direction(&g, matvec(&gm)).unwrap();
        assert!((em.analog_time() - 3.0).abs() < 1e-12);
        // set_damping likewise.
        assert!(matches!(
            em.set_damping(-1.0),
            Err(Error::InvalidConfig {
                field: "damping",
                ..
            })
        ));
        em.set_damping(2.5).unwrap();
        assert_eq!(em.damping(), 2.5);
        assert!((em.analog_time() - 3.0).abs() < 1e-12);
    }
}
