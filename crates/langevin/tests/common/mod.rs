//! Shared test harness: Gaussian targets (the conformance suite is `tests/conformance.rs`).
#![allow(dead_code)]

use langevin::{LogDensity, Params};

/// A Gaussian log density `-0.5 (x - mu)^T P (x - mu)` with precision `P` (row-major).
pub struct Gaussian {
    pub mean: Vec<f64>,
    pub precision: Vec<f64>,
}

impl Gaussian {
    /// Isotropic N(mu, s^2 I).
    pub fn isotropic(mean: Vec<f64>, sd: f64) -> Self {
        let d = mean.len();
        let mut precision = vec![0.0; d * d];
        for i in 0..d {
            precision[i * d + i] = 1.0 / (sd * sd);
        }
        Self { mean, precision }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn eval(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let d = self.dim();
        let r: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let mut v = 0.0;
        for i in 0..d {
            let row = &self.precision[i * d..(i + 1) * d];
            let pr: f64 = row.iter().zip(&r).map(|(p, ri)| p * ri).sum();
            g[i] = -pr;
            v += r[i] * pr;
        }
        -0.5 * v
    }
}

impl LogDensity for Gaussian {
    type Batch = ();
    type Aux = ();
    fn value_and_grad(
        &self,
        params: &Params,
        _: &(),
        grad: &mut [f64],
    ) -> langevin::Result<(f64, ())> {
        Ok((self.eval(params.values(), grad), ()))
    }
}

pub fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}
