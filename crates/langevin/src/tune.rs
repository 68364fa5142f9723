//! Step-size tuning from the curvature of the log posterior.

use langevin_core::{chain_rng, LogDensity, Params, Result};

/// Largest eigenvalue of the Hessian of the negative log density near its
/// mode, on one batch: from `start`, 300 steps of gradient ascent with
/// learning rate 1/c (c re-estimated every 100 steps by 20 power
/// iterations), then 30 power iterations with central finite differences of
/// the gradient (h = 1e-4). The curvature at a random starting point can be
/// far from the curvature where chains spend their time (a regression's
/// noise scale), hence the ascent. Deterministic for a given `seed` (the
/// power iteration starts from `chain_rng(seed, u64::MAX - 1)`'s normals).
/// The ascent stops early at a non-finite value or gradient; an evaluation
/// error is returned.
pub fn max_curvature<D: LogDensity>(
    density: &D,
    start: &Params,
    batch: &D::Batch,
    seed: u64,
) -> Result<f64> {
    let layout = start.layout().clone();
    let p = start.len();
    let at = |values: Vec<f64>| Params::new(layout.clone(), values);
    let mut rng = chain_rng(seed, u64::MAX - 1);
    let mut v0 = vec![0.0; p];
    langevin_core::rng::fill_standard_normal(&mut rng, &mut v0);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let power = |theta: &[f64], iters: usize| -> Result<f64> {
        let mut v = v0.clone();
        let mut lambda = 0.0;
        let h = 1e-4;
        let mut gp = vec![0.0; p];
        let mut gm = vec![0.0; p];
        for _ in 0..iters {
            let n = norm(&v);
            if !(n > 0.0 && n.is_finite()) {
                break;
            }
            v.iter_mut().for_each(|x| *x /= n);
            let plus: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t + h * d).collect();
            let minus: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t - h * d).collect();
            density.value_and_grad(&at(plus)?, batch, &mut gp)?;
            density.value_and_grad(&at(minus)?, batch, &mut gm)?;
            for i in 0..p {
                v[i] = -(gp[i] - gm[i]) / (2.0 * h);
            }
            lambda = norm(&v);
        }
        Ok(lambda)
    };
    let mut theta = start.values().to_vec();
    let mut g = vec![0.0; p];
    let mut c = power(&theta, 20)?;
    for it in 0..300 {
        if it > 0 && it % 100 == 0 {
            c = power(&theta, 20)?;
        }
        if !(c.is_finite() && c > 0.0) {
            break;
        }
        let (value, _) = density.value_and_grad(&at(theta.clone())?, batch, &mut g)?;
        if !value.is_finite() || g.iter().any(|x| !x.is_finite()) {
            break;
        }
        for (t, gi) in theta.iter_mut().zip(&g) {
            *t += gi / c;
        }
    }
    power(&theta, 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::{FnDensity, ParamLayout};

    /// A Gaussian with precision diag(1, 9, 4): the largest curvature is 9.
    #[test]
    fn finds_the_largest_curvature_of_a_gaussian() {
        let prec = [1.0, 9.0, 4.0];
        let d = FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
            let mut v = 0.0;
            for i in 0..3 {
                g[i] = -prec[i] * (x[i] - 1.0);
                v -= 0.5 * prec[i] * (x[i] - 1.0).powi(2);
            }
            v
        });
        let layout = ParamLayout::new([("x", vec![3])]).unwrap();
        let start = Params::new(layout, vec![5.0, -3.0, 0.5]).unwrap();
        let c = max_curvature(&d, &start, &(), 1).unwrap();
        assert!((c - 9.0).abs() < 1e-6, "{c}");
    }
}
