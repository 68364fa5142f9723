//! Posterior predictive and its metrics, for `fit` (test metrics) and `predict`.
//!
//! Classification metrics come from `langevin::metrics`; the regression
//! metrics here use the exact Gaussian-mixture predictive over draws (the
//! library's `gaussian_nll` takes one Gaussian per row), and the per-row
//! entropy decomposition works on the running sums of the draws' predictions
//! (the library's `uncertainty_decomposition` takes every draw's full table).

use anyhow::Result;
use langevin_models::{Model, PointPrediction, Task};

/// Posterior predictive over `S` draws for `n` rows.
pub enum Predictive {
    Classification {
        /// Mean class probabilities, row-major `n × k`.
        probs: Vec<f64>,
        k: usize,
        /// Mean over draws of the entropy of each draw's prediction (per row, nats).
        aleatoric: Vec<f64>,
    },
    Regression {
        /// Per draw: per-row means (model units), and the noise sd.
        means: Vec<Vec<f64>>,
        sds: Vec<f64>,
    },
}

/// Predict rows `x` (standardised, row-major) with every draw and average.
pub fn predictive(model: &Model, draws: &[&[f64]], x: &[f64]) -> Result<Predictive> {
    let n = x.len() / model.spec().feature_names.len();
    match model.spec().task {
        Task::Classification { n_classes: k } => {
            let mut probs = vec![0.0; n * k];
            let mut aleatoric = vec![0.0; n];
            for d in draws {
                if let PointPrediction::Probs { probs: p, .. } = model.predict(d, x)? {
                    for (a, b) in probs.iter_mut().zip(&p) {
                        *a += b;
                    }
                    for (i, row) in p.chunks_exact(k).enumerate() {
                        aleatoric[i] += entropy(row);
                    }
                }
            }
            let s = draws.len().max(1) as f64;
            probs.iter_mut().for_each(|p| *p /= s);
            aleatoric.iter_mut().for_each(|a| *a /= s);
            Ok(Predictive::Classification {
                probs,
                k,
                aleatoric,
            })
        }
        Task::Regression => {
            let mut means = Vec::with_capacity(draws.len());
            let mut sds = Vec::with_capacity(draws.len());
            for d in draws {
                if let PointPrediction::Gaussian { mean, sd } = model.predict(d, x)? {
                    means.push(mean);
                    sds.push(sd);
                }
            }
            Ok(Predictive::Regression { means, sds })
        }
    }
}

/// Entropy (nats) of a probability vector.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| q * q.ln())
        .sum::<f64>()
}

/// Expected calibration error with equal-width confidence bins, plus the
/// per-bin mean confidence, accuracy and count (for a reliability diagram).
pub struct Calibration {
    pub ece: f64,
    pub bin_confidence: Vec<f64>,
    pub bin_accuracy: Vec<f64>,
    pub bin_counts: Vec<usize>,
}

/// Classification metrics of mean probabilities `probs` (`n × k`) against class indices `y`.
pub struct ClassMetrics {
    pub nll: f64,
    pub accuracy: f64,
    pub brier: f64,
    pub calibration: Calibration,
}

/// NLL, accuracy, Brier and ECE from `langevin::metrics` (empty bins get
/// NaN confidence and accuracy, so plots skip them).
pub fn classification_metrics(
    probs: &[f64],
    k: usize,
    y: &[usize],
    bins: usize,
) -> Result<ClassMetrics> {
    use langevin::metrics;
    let rows: Vec<Vec<f64>> = probs.chunks_exact(k).map(|r| r.to_vec()).collect();
    let cal = metrics::ece(&rows, y, bins)?;
    let empty = |c: usize, v: f64| if c == 0 { f64::NAN } else { v };
    Ok(ClassMetrics {
        nll: metrics::nll_classification(&rows, y)?,
        accuracy: metrics::accuracy(&rows, y)?,
        brier: metrics::brier(&rows, y)?,
        calibration: Calibration {
            ece: cal.ece,
            bin_confidence: cal
                .bins
                .iter()
                .map(|b| empty(b.count, b.confidence))
                .collect(),
            bin_accuracy: cal
                .bins
                .iter()
                .map(|b| empty(b.count, b.accuracy))
                .collect(),
            bin_counts: cal.bins.iter().map(|b| b.count).collect(),
        },
    })
}

/// Index and value of the largest entry (first on ties).
pub fn argmax(row: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, &p) in row.iter().enumerate() {
        if p > best.1 {
            best = (i, p);
        }
    }
    best
}

/// Per-row predictive mean and variance of a Gaussian mixture over draws,
/// mapped to data units by `y = scale * v + shift`.
pub fn mixture_moments(
    means: &[Vec<f64>],
    sds: &[f64],
    scale: f64,
    shift: f64,
) -> (Vec<f64>, Vec<f64>) {
    let s = means.len().max(1) as f64;
    let n = means.first().map_or(0, |m| m.len());
    let mut mean = vec![0.0; n];
    let mut second = vec![0.0; n];
    for (m, sd) in means.iter().zip(sds) {
        for i in 0..n {
            mean[i] += m[i];
            second[i] += m[i] * m[i] + sd * sd;
        }
    }
    let mut var = vec![0.0; n];
    for i in 0..n {
        mean[i] /= s;
        var[i] = (second[i] / s - mean[i] * mean[i]).max(0.0) * scale * scale;
        mean[i] = mean[i] * scale + shift;
    }
    (mean, var)
}

/// Regression metrics: RMSE of the predictive mean, and the mean negative log
/// density of the exact Gaussian mixture predictive, in data units.
pub fn regression_metrics(
    means: &[Vec<f64>],
    sds: &[f64],
    y: &[f64],
    scale: f64,
    shift: f64,
) -> (f64, f64) {
    let (mean, _) = mixture_moments(means, sds, scale, shift);
    let n = y.len().max(1) as f64;
    let rmse = (mean
        .iter()
        .zip(y)
        .map(|(m, y)| (m - y).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let s = means.len() as f64;
    let mut nll = 0.0;
    let mut terms = vec![0.0; means.len()];
    for (i, &yi) in y.iter().enumerate() {
        let z = (yi - shift) / scale;
        for (t, (m, sd)) in terms.iter_mut().zip(means.iter().zip(sds)) {
            *t = -0.5 * (2.0 * std::f64::consts::PI).ln()
                - sd.ln()
                - 0.5 * ((z - m[i]) / sd).powi(2);
        }
        let mx = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + terms.iter().map(|t| (t - mx).exp()).sum::<f64>().ln() - s.ln();
        nll -= lse - scale.ln();
    }
    (rmse, nll / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics_by_hand() {
        // two rows, two classes: p = [0.8, 0.2] (y = 0), [0.4, 0.6] (y = 0)
        let m = classification_metrics(&[0.8, 0.2, 0.4, 0.6], 2, &[0, 0], 10).unwrap();
        assert!((m.nll - -(0.8f64.ln() + 0.4f64.ln()) / 2.0).abs() < 1e-12);
        assert_eq!(m.accuracy, 0.5);
        assert!((m.brier - (0.08 + 0.72) / 2.0).abs() < 1e-12);
        // bins: confidence 0.8 (hit), 0.6 (miss), one row each
        assert!((m.calibration.ece - (0.5 * 0.2 + 0.5 * 0.6)).abs() < 1e-12);
        assert_eq!(m.calibration.bin_counts.iter().sum::<usize>(), 2);
        assert_eq!(
            m.calibration.bin_counts.iter().filter(|&&c| c == 1).count(),
            2
        );
        assert!((entropy(&[0.5, 0.5]) - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn regression_metrics_single_gaussian() {
        let (rmse, nll) = regression_metrics(&[vec![0.0, 1.0]], &[1.0], &[0.0, 3.0], 2.0, 1.0);
        // predictive means in data units: 1, 3; errors -1, 0
        assert!((rmse - (0.5f64).sqrt()).abs() < 1e-12);
        // data-unit sd 2: nll of y=0 (z=-0.5 vs 0) and y=3 (z=1 vs 1)
        let l = |z: f64| 0.5 * (2.0 * std::f64::consts::PI).ln() + 0.5 * z * z + 2f64.ln();
        assert!((nll - (l(-0.5) + l(0.0)) / 2.0).abs() < 1e-12);
    }
}
