//! Predictive metrics: classification NLL, accuracy, calibration (ECE with a
//! reliability diagram), Brier score, AUROC, regression RMSE and Gaussian NLL,
//! and the total / aleatoric / epistemic decomposition of predictive
//! uncertainty.
//!
//! **Conventions.**
//! * Classification probabilities are rows, `probs: &[Vec<f64>]`, one row per
//!   example and one column per class; every row has the same number of
//!   classes `K >= 1`, entries finite and `>= 0`, and sums to 1 within
//!   [`PROB_SUM_TOL`]. Labels are class indices `&[usize]` (`< K`), one per
//!   row.
//! * Every metric is a mean over examples (not a sum).
//! * Logarithms are natural (nats).
//! * Bad input (no rows, ragged rows, mismatched lengths, a label out of
//!   range, rows that are not probabilities, non-finite values) is an
//!   [`Error`], never a panic.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How far a probability row may sum away from 1.
pub const PROB_SUM_TOL: f64 = 1e-6;

/// Probabilities are clamped below at this value inside logarithms.
pub const PROB_FLOOR: f64 = 1e-12;

/// Checks rows of probabilities; returns the number of classes.
fn check_probs(probs: &[Vec<f64>], what: &'static str) -> Result<usize> {
    let Some(first) = probs.first() else {
        return Err(Error::Data(format!("{what}: no rows")));
    };
    let k = first.len();
    if k == 0 {
        return Err(Error::Data(format!("{what}: rows have no classes")));
    }
    for (i, row) in probs.iter().enumerate() {
        if row.len() != k {
            return Err(Error::DimensionMismatch {
                what: "classes per probability row",
                expected: k,
                got: row.len(),
            });
        }
        if row.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(Error::Data(format!(
                "{what}: row {i} has a negative or non-finite probability"
            )));
        }
        let s: f64 = row.iter().sum();
        if (s - 1.0).abs() > PROB_SUM_TOL {
            return Err(Error::Data(format!("{what}: row {i} sums to {s}, not 1")));
        }
    }
    Ok(k)
}

fn check_labels(labels: &[usize], n: usize, k: usize, what: &'static str) -> Result<()> {
    if labels.len() != n {
        return Err(Error::DimensionMismatch {
            what: "labels (one per probability row)",
            expected: n,
            got: labels.len(),
        });
    }
    if let Some(i) = labels.iter().position(|&l| l >= k) {
        return Err(Error::Data(format!(
            "{what}: label {} of row {i} is not below the number of classes {k}",
            labels[i]
        )));
    }
    Ok(())
}

fn check_classification(probs: &[Vec<f64>], labels: &[usize], what: &'static str) -> Result<usize> {
    let k = check_probs(probs, what)?;
    check_labels(labels, probs.len(), k, what)?;
    Ok(k)
}

/// Index of the largest probability (the first one on ties).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = i;
        }
    }
    best
}

/// Mean negative log likelihood `-(1/n) sum_i ln max(p_i[y_i], 1e-12)`.
pub fn nll_classification(probs: &[Vec<f64>], labels: &[usize]) -> Result<f64> {
    check_classification(probs, labels, "nll_classification")?;
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(row, &y)| -row[y].max(PROB_FLOOR).ln())
        .sum();
    Ok(s / probs.len() as f64)
}

/// Fraction of rows whose most probable class (first on ties) is the label.
pub fn accuracy(probs: &[Vec<f64>], labels: &[usize]) -> Result<f64> {
    check_classification(probs, labels, "accuracy")?;
    let hits = probs
        .iter()
        .zip(labels)
        .filter(|(row, &y)| argmax(row) == y)
        .count();
    Ok(hits as f64 / probs.len() as f64)
}

/// Multi-class Brier score: `(1/n) sum_i sum_k (p_ik - [k = y_i])^2`
/// (between 0 and 2).
pub fn brier(probs: &[Vec<f64>], labels: &[usize]) -> Result<f64> {
    check_classification(probs, labels, "brier")?;
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(row, &y)| {
            row.iter()
                .enumerate()
                .map(|(k, &p)| {
                    let t = if k == y { 1.0 } else { 0.0 };
                    (p - t) * (p - t)
                })
                .sum::<f64>()
        })
        .sum();
    Ok(s / probs.len() as f64)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the confidence bin (exclusive, except 0 for the first bin).
    pub lower: f64,
    /// Upper edge of the confidence bin (inclusive).
    pub upper: f64,
    /// Mean confidence (max probability) of the rows in the bin; 0 if empty.
    pub confidence: f64,
    /// Accuracy of the rows in the bin; 0 if empty.
    pub accuracy: f64,
    /// Number of rows in the bin.
    pub count: usize,
}

/// Expected calibration error and the reliability diagram it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// `ECE = sum_b (count_b / n) |accuracy_b - confidence_b|`.
    pub ece: f64,
    /// The `n_bins` equal-width bins, in increasing confidence.
    pub bins: Vec<ReliabilityBin>,
}

/// Expected calibration error (Guo et al. 2017) with `n_bins` equal-width
/// confidence bins `(b/M, (b+1)/M]` (a confidence of exactly 0 goes into the
/// first bin). The confidence of a row is its largest probability, its
/// prediction the argmax (first on ties).
pub fn ece(probs: &[Vec<f64>], labels: &[usize], n_bins: usize) -> Result<Calibration> {
    check_classification(probs, labels, "ece")?;
    if n_bins == 0 {
        return Err(Error::config("n_bins", "must be at least 1"));
    }
    let m = n_bins as f64;
    let mut conf_sum = vec![0.0; n_bins];
    let mut hit_sum = vec![0.0; n_bins];
    let mut count = vec![0usize; n_bins];
    for (row, &y) in probs.iter().zip(labels) {
        let pred = argmax(row);
        let conf = row[pred].min(1.0);
        let b = ((conf * m).ceil() as usize)
            .saturating_sub(1)
            .min(n_bins - 1);
        conf_sum[b] += conf;
        hit_sum[b] += if pred == y { 1.0 } else { 0.0 };
        count[b] += 1;
    }
    let n = probs.len() as f64;
    let mut ece = 0.0;
    let bins = (0..n_bins)
        .map(|b| {
            let (confidence, accuracy) = if count[b] > 0 {
                let c = count[b] as f64;
                (conf_sum[b] / c, hit_sum[b] / c)
            } else {
                (0.0, 0.0)
            };
            ece += count[b] as f64 / n * (accuracy - confidence).abs();
            ReliabilityBin {
                lower: b as f64 / m,
                upper: (b + 1) as f64 / m,
                confidence,
                accuracy,
                count: count[b],
            }
        })
        .collect();
    Ok(Calibration { ece, bins })
}

/// Area under the ROC curve by the Mann-Whitney statistic with average ranks
/// for ties: `AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`, where
/// `R_pos` is the rank sum of the positives' scores. A higher score means
/// "more likely positive"; a tie between a positive and a negative counts
/// one half. Needs at least one positive and one negative.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    if scores.len() != labels.len() {
        return Err(Error::DimensionMismatch {
            what: "auroc labels (one per score)",
            expected: scores.len(),
            got: labels.len(),
        });
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::Data(format!("auroc: score {i} is not finite")));
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::Data(format!(
            "auroc needs both classes: {n_pos} positives, {n_neg} negatives"
        )));
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut start = 0;
    while start < idx.len() {
        let mut end = start;
        while end + 1 < idx.len() && scores[idx[end + 1]] == scores[idx[start]] {
            end += 1;
        }
        let rank = (start + end + 2) as f64 / 2.0;
        let pos_in_group = idx[start..=end].iter().filter(|&&i| labels[i]).count();
        rank_sum_pos += rank * pos_in_group as f64;
        start = end + 1;
    }
    let (p, q) = (n_pos as f64, n_neg as f64);
    Ok((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * q))
}

fn check_regression(pred: &[f64], y: &[f64], what: &'static str) -> Result<()> {
    if pred.is_empty() {
        return Err(Error::Data(format!("{what}: no predictions")));
    }
    if pred.len() != y.len() {
        return Err(Error::DimensionMismatch {
            what: "targets (one per prediction)",
            expected: pred.len(),
            got: y.len(),
        });
    }
    if pred.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "{what}: non-finite prediction or target"
        )));
    }
    Ok(())
}

/// Root mean squared error `sqrt((1/n) sum_i (pred_i - y_i)^2)`.
pub fn rmse(pred: &[f64], y: &[f64]) -> Result<f64> {
    check_regression(pred, y, "rmse")?;
    let s: f64 = pred.iter().zip(y).map(|(p, t)| (p - t) * (p - t)).sum();
    Ok((s / pred.len() as f64).sqrt())
}

/// Mean Gaussian negative log likelihood of targets `y` under
/// `N(mean_i, var_i)`: `(1/n) sum_i [ln(2 pi var_i) + (y_i - mean_i)^2 / var_i] / 2`.
/// Every variance must be finite and > 0.
pub fn gaussian_nll(mean: &[f64], var: &[f64], y: &[f64]) -> Result<f64> {
    check_regression(mean, y, "gaussian_nll")?;
    if var.len() != mean.len() {
        return Err(Error::DimensionMismatch {
            what: "variances (one per prediction)",
            expected: mean.len(),
            got: var.len(),
        });
    }
    if let Some(i) = var.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Error::Data(format!(
            "gaussian_nll: variance {i} is {}, must be finite and > 0",
            var[i]
        )));
    }
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    let s: f64 = mean
        .iter()
        .zip(var)
        .zip(y)
        .map(|((m, v), t)| 0.5 * (ln2pi + v.ln() + (t - m) * (t - m) / v))
        .sum();
    Ok(s / mean.len() as f64)
}

/// Predictive uncertainty of one example, in nats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Uncertainty {
    /// Entropy of the mean predictive `H[(1/S) sum_s p_s]`.
    pub total: f64,
    /// Mean entropy of the samples `(1/S) sum_s H[p_s]` (expected data noise).
    pub aleatoric: f64,
    /// `total - aleatoric`: the mutual information between the label and the
    /// parameters (disagreement between samples); >= 0, clamped at 0 against
    /// round-off.
    pub epistemic: f64,
}

fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v * v.ln())
        .sum::<f64>()
}

/// Decomposes predictive uncertainty from `S` posterior samples of class
/// probabilities: `per_sample_probs[s][i][k]` is the probability of class `k`
/// for example `i` under sample `s` (every sample has the same `n` rows of
/// `K` classes). Returns one [`Uncertainty`] per example (`0 ln 0 = 0`).
pub fn uncertainty_decomposition(per_sample_probs: &[Vec<Vec<f64>>]) -> Result<Vec<Uncertainty>> {
    let Some(first) = per_sample_probs.first() else {
        return Err(Error::Data("uncertainty_decomposition: no samples".into()));
    };
    let k = check_probs(first, "uncertainty_decomposition")?;
    let n = first.len();
    for sample in per_sample_probs {
        if sample.len() != n {
            return Err(Error::DimensionMismatch {
                what: "rows per sample",
                expected: n,
                got: sample.len(),
            });
        }
        let ks = check_probs(sample, "uncertainty_decomposition")?;
        if ks != k {
            return Err(Error::DimensionMismatch {
                what: "classes per sample",
                expected: k,
                got: ks,
            });
        }
    }
    let s = per_sample_probs.len() as f64;
    let out = (0..n)
        .map(|i| {
            let mut mean = vec![0.0; k];
            let mut aleatoric = 0.0;
            for sample in per_sample_probs {
                let row = &sample[i];
                for (m, &p) in mean.iter_mut().zip(row) {
                    *m += p / s;
                }
                aleatoric += entropy(row) / s;
            }
            let total = entropy(&mean);
            Uncertainty {
                total,
                aleatoric,
                epistemic: (total - aleatoric).max(0.0),
            }
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_rng;
    use rand::Rng;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn example() -> (Vec<Vec<f64>>, Vec<usize>) {
        (
            vec![
                vec![0.7, 0.2, 0.1],
                vec![0.1, 0.5, 0.4],
                vec![0.3, 0.3, 0.4],
                vec![0.0, 1.0, 0.0],
            ],
            vec![0, 2, 2, 0],
        )
    }

    #[test]
    fn hand_computed_classification_metrics() {
        let (p, y) = example();
        // NLL: -(ln 0.7 + ln 0.4 + ln 0.4 + ln 1e-12) / 4.
        let want = -(0.7f64.ln() + 2.0 * 0.4f64.ln() + 1e-12f64.ln()) / 4.0;
        assert!(close(nll_classification(&p, &y).unwrap(), want, 1e-12));
        // Argmax 0, 1, 2, 1 against labels 0, 2, 2, 0: two hits.
        assert_eq!(accuracy(&p, &y).unwrap(), 0.5);
        // Brier rows: 0.09+0.04+0.01, 0.01+0.25+0.36, 0.09+0.09+0.36, 1+1+0.
        let want = (0.14 + 0.62 + 0.54 + 2.0) / 4.0;
        assert!(close(brier(&p, &y).unwrap(), want, 1e-12));
    }

    #[test]
    fn hand_computed_ece() {
        let (p, y) = example();
        // Confidences 0.7 (hit), 0.5 (miss), 0.4 (hit), 1.0 (miss).
        // Bins of width 0.5: (0, 0.5] holds 0.5 and 0.4 -> conf 0.45, acc 0.5;
        // (0.5, 1] holds 0.7 and 1.0 -> conf 0.85, acc 0.5.
        let cal = ece(&p, &y, 2).unwrap();
        let want = 0.5 * 0.05 + 0.5 * 0.35;
        assert!(close(cal.ece, want, 1e-12), "{cal:?}");
        assert_eq!(cal.bins.len(), 2);
        assert_eq!(cal.bins[0].count, 2);
        assert!(close(cal.bins[0].confidence, 0.45, 1e-12));
        assert!(close(cal.bins[1].confidence, 0.85, 1e-12));
        assert!(close(cal.bins[1].accuracy, 0.5, 1e-12));
        // Ten bins: 0.4 -> (0.3, 0.4], 0.5 -> (0.4, 0.5], 0.7 -> (0.6, 0.7], 1.0 -> (0.9, 1].
        let cal = ece(&p, &y, 10).unwrap();
        let counts: Vec<usize> = cal.bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![0, 0, 0, 1, 1, 0, 1, 0, 0, 1]);
        let want = (0.6 + 0.5 + 0.3 + 1.0) / 4.0;
        assert!(close(cal.ece, want, 1e-12), "{cal:?}");
        assert!(matches!(ece(&p, &y, 0), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn ece_of_calibrated_predictions_is_small() {
        // Binary predictions with confidence c ~ U(0.5, 1) and a label drawn
        // so that the predicted class is right with probability c: calibrated
        // by construction. With n = 20 000 and 10 bins the ECE is a sum of
        // |binomial noise|, about sum_b (n_b/n) sqrt(c(1-c)/n_b) ~ 0.008.
        let mut rng = chain_rng(5, 0);
        let n = 20_000;
        let mut probs = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let c: f64 = rng.random_range(0.5..1.0);
            let pred_class = usize::from(rng.random::<bool>());
            let mut row = vec![1.0 - c; 2];
            row[pred_class] = c;
            probs.push(row);
            let right = rng.random::<f64>() < c;
            labels.push(if right { pred_class } else { 1 - pred_class });
        }
        let cal = ece(&probs, &labels, 10).unwrap();
        assert!(cal.ece < 0.02, "{}", cal.ece);
        // Overconfident: the same predictions pushed to confidence 1 are miscalibrated.
        let sharp: Vec<Vec<f64>> = probs
            .iter()
            .map(|r| {
                if r[0] >= r[1] {
                    vec![1.0, 0.0]
                } else {
                    vec![0.0, 1.0]
                }
            })
            .collect();
        let cal = ece(&sharp, &labels, 10).unwrap();
        assert!(cal.ece > 0.15, "{}", cal.ece);
    }

    #[test]
    fn auroc_hand_examples() {
        // Perfect and perfectly wrong rankings.
        let l = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &l).unwrap(), 1.0);
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &l).unwrap(), 0.0);
        // Scores 0.1(-), 0.4(+), 0.4(-), 0.8(+): of the 4 (pos, neg) pairs,
        // (0.4, 0.1) win, (0.4, 0.4) tie, (0.8, *) two wins -> 3.5 / 4.
        let got = auroc(&[0.1, 0.4, 0.4, 0.8], &[false, true, false, true]).unwrap();
        assert!(close(got, 0.875, 1e-15), "{got}");
        // All tied -> 0.5.
        assert_eq!(
            auroc(&[1.0; 6], &[true, false, true, false, false, true]).unwrap(),
            0.5
        );
        assert!(matches!(
            auroc(&[0.1, 0.2], &[true, true]),
            Err(Error::Data(_))
        ));
        assert!(matches!(
            auroc(&[0.1, 0.2], &[true]),
            Err(Error::DimensionMismatch { .. })
        ));
    }

    #[test]
    fn regression_metrics() {
        // Errors 1, -2, 0, 1: mean square 6/4.
        let pred = [1.0, 0.0, 3.0, 5.0];
        let y = [0.0, 2.0, 3.0, 4.0];
        assert!(close(rmse(&pred, &y).unwrap(), 1.5f64.sqrt(), 1e-15));
        // var 1 everywhere: 0.5 ln(2 pi) + mean(e^2)/2 = 0.9189385 + 0.75.
        let nll = gaussian_nll(&pred, &[1.0; 4], &y).unwrap();
        assert!(close(nll, 0.918_938_533_204_672_7 + 0.75, 1e-12), "{nll}");
        // var 4 on one point with error 2: 0.5 (ln(8 pi) + 1).
        let nll = gaussian_nll(&[0.0], &[4.0], &[2.0]).unwrap();
        assert!(close(
            nll,
            0.5 * ((8.0 * std::f64::consts::PI).ln() + 1.0),
            1e-12
        ));
        assert!(matches!(
            gaussian_nll(&[0.0], &[0.0], &[1.0]),
            Err(Error::Data(_))
        ));
        assert!(matches!(rmse(&[], &[]), Err(Error::Data(_))));
        assert!(matches!(
            rmse(&[1.0], &[1.0, 2.0]),
            Err(Error::DimensionMismatch { .. })
        ));
    }

    #[test]
    fn uncertainty_decomposition_cases() {
        // Identical samples: no epistemic uncertainty.
        let s = vec![vec![vec![0.7, 0.3], vec![0.5, 0.5]]; 4];
        let u = uncertainty_decomposition(&s).unwrap();
        let h07 = -(0.7f64 * 0.7f64.ln() + 0.3 * 0.3f64.ln());
        assert!(close(u[0].total, h07, 1e-12) && close(u[0].aleatoric, h07, 1e-12));
        assert_eq!(u[0].epistemic, 0.0);
        assert!(close(u[1].total, 2f64.ln(), 1e-12) && u[1].epistemic == 0.0);
        // Two confident samples that disagree: aleatoric 0, epistemic ln 2.
        let s = vec![vec![vec![1.0, 0.0]], vec![vec![0.0, 1.0]]];
        let u = uncertainty_decomposition(&s).unwrap();
        assert_eq!(u[0].aleatoric, 0.0);
        assert!(close(u[0].epistemic, 2f64.ln(), 1e-12) && close(u[0].total, 2f64.ln(), 1e-12));
        // Partly disagreeing: 0 < epistemic < total.
        let s = vec![vec![vec![0.9, 0.1]], vec![vec![0.2, 0.8]]];
        let u = uncertainty_decomposition(&s).unwrap()[0];
        assert!(u.epistemic > 0.1 && u.epistemic < u.total, "{u:?}");
        assert!(close(u.total, u.aleatoric + u.epistemic, 1e-15));
        // Shapes.
        let bad = vec![vec![vec![0.5, 0.5]], vec![vec![0.5, 0.5], vec![1.0, 0.0]]];
        assert!(matches!(
            uncertainty_decomposition(&bad),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            uncertainty_decomposition(&[]),
            Err(Error::Data(_))
        ));
    }

    #[test]
    fn bad_classification_input() {
        let (p, y) = example();
        assert!(matches!(accuracy(&[], &[]), Err(Error::Data(_))));
        assert!(matches!(
            accuracy(&p, &y[..3]),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(accuracy(&p, &[0, 1, 3, 0]), Err(Error::Data(_))));
        let ragged = vec![vec![0.5, 0.5], vec![1.0]];
        assert!(matches!(
            brier(&ragged, &[0, 0]),
            Err(Error::DimensionMismatch { .. })
        ));
        let unnormalised = vec![vec![0.5, 0.6]];
        assert!(matches!(
            nll_classification(&unnormalised, &[0]),
            Err(Error::Data(_))
        ));
        let negative = vec![vec![1.5, -0.5]];
        assert!(matches!(ece(&negative, &[0], 5), Err(Error::Data(_))));
        let nan = vec![vec![f64::NAN, 1.0]];
        assert!(matches!(brier(&nan, &[0]), Err(Error::Data(_))));
    }
}
