//! The model of the TNGD experiments: a one-hidden-layer tanh MLP with softmax
//! cross-entropy, its explicit gradient, per-example output Jacobians and the
//! damped generalised Gauss-Newton matrix in factored form.

#![allow(clippy::needless_range_loop)] // dense numerical kernels index several arrays at once

use faer::Mat;
use langevin_core::rng::{fill_standard_normal, ChainRng};
use serde::{Deserialize, Serialize};

use super::data::Dataset;
use crate::ou::{mat_vec, mul};

/// One-hidden-layer tanh MLP with softmax cross-entropy loss.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Mlp {
    pub d_in: usize,
    pub hidden: usize,
    pub k: usize,
}

/// Per-batch curvature: mean loss, mean gradient and the damped GGN.
pub struct Curvature {
    pub loss: f64,
    pub grad: Vec<f64>,
    /// Factor `G` (B·k × P) with `F = GᵀG + λI`.
    pub factor: Mat<f64>,
    pub damping: f64,
}

impl Curvature {
    /// The dense damped GGN `GᵀG + λI`.
    pub fn dense(&self) -> Mat<f64> {
        let pn = self.factor.ncols();
        let mut f = mul(self.factor.transpose(), self.factor.as_ref());
        for i in 0..pn {
            f[(i, i)] += self.damping;
        }
        f
    }

    /// `F v` without forming `F`.
    pub fn matvec(&self, v: &[f64]) -> Vec<f64> {
        let gv = mat_vec(self.factor.as_ref(), v);
        let mut out = mat_vec(self.factor.transpose(), &gv);
        for (o, x) in out.iter_mut().zip(v) {
            *o += self.damping * x;
        }
        out
    }
}

impl Mlp {
    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.hidden * self.d_in + self.hidden + self.k * self.hidden + self.k
    }

    /// Glorot-style initialisation (biases zero).
    pub fn init(&self, rng: &mut ChainRng) -> Vec<f64> {
        let mut th = vec![0.0; self.n_params()];
        let (o1, o2, o3) = self.offsets();
        let s1 = (1.0 / self.d_in as f64).sqrt();
        let s2 = (1.0 / self.hidden as f64).sqrt();
        fill_standard_normal(rng, &mut th[..o1]);
        th[..o1].iter_mut().for_each(|v| *v *= s1);
        fill_standard_normal(rng, &mut th[o2..o3]);
        th[o2..o3].iter_mut().for_each(|v| *v *= s2);
        th
    }

    /// Offsets of b1, W2, b2 in the ravelled parameter vector.
    fn offsets(&self) -> (usize, usize, usize) {
        let o1 = self.hidden * self.d_in;
        let o2 = o1 + self.hidden;
        let o3 = o2 + self.k * self.hidden;
        (o1, o2, o3)
    }

    /// Forward pass for one input: hidden activations `z` and softmax probabilities `p`.
    fn forward_one(&self, th: &[f64], x: &[f64], z: &mut [f64], p: &mut [f64]) {
        let (o1, o2, o3) = self.offsets();
        for j in 0..self.hidden {
            let w = &th[j * self.d_in..(j + 1) * self.d_in];
            let a: f64 = w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + th[o1 + j];
            z[j] = a.tanh();
        }
        let mut m = f64::NEG_INFINITY;
        for c in 0..self.k {
            let w = &th[o2 + c * self.hidden..o2 + (c + 1) * self.hidden];
            p[c] = w.iter().zip(z.iter()).map(|(a, b)| a * b).sum::<f64>() + th[o3 + c];
            m = m.max(p[c]);
        }
        let mut s = 0.0;
        for v in p.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        p.iter_mut().for_each(|v| *v /= s);
    }

    /// Raw outputs (logits) for one input (used by the finite-difference tests).
    pub fn logits_one(&self, th: &[f64], x: &[f64]) -> Vec<f64> {
        let (_, o2, o3) = self.offsets();
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        self.forward_one(th, x, &mut z, &mut p);
        (0..self.k)
            .map(|c| {
                th[o2 + c * self.hidden..o2 + (c + 1) * self.hidden]
                    .iter()
                    .zip(&z)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    + th[o3 + c]
            })
            .collect()
    }

    /// Output Jacobian `∂o/∂θ` (k × P, row-major) for one input, given its hidden activations.
    pub fn jacobian_one(&self, th: &[f64], x: &[f64], jac: &mut [f64]) {
        let p_n = self.n_params();
        let (o1, o2, o3) = self.offsets();
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        self.forward_one(th, x, &mut z, &mut p);
        jac.iter_mut().for_each(|v| *v = 0.0);
        for c in 0..self.k {
            let row = &mut jac[c * p_n..(c + 1) * p_n];
            for j in 0..self.hidden {
                let w2 = th[o2 + c * self.hidden + j];
                let dz = w2 * (1.0 - z[j] * z[j]);
                for (r, xi) in row[j * self.d_in..(j + 1) * self.d_in].iter_mut().zip(x) {
                    *r = dz * xi;
                }
                row[o1 + j] = dz;
                row[o2 + c * self.hidden + j] = z[j];
            }
            row[o3 + c] = 1.0;
        }
    }

    /// Mean cross-entropy and its gradient over `rows` of `data` (backprop).
    pub fn loss_grad(&self, th: &[f64], data: &Dataset, rows: &[usize]) -> (f64, Vec<f64>) {
        let (o1, o2, o3) = self.offsets();
        let mut g = vec![0.0; self.n_params()];
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut dz = vec![0.0; self.hidden];
        let mut loss = 0.0;
        let inv = 1.0 / rows.len().max(1) as f64;
        for &r in rows {
            let x = data.row(r);
            self.forward_one(th, x, &mut z, &mut p);
            let y = data.y[r];
            loss -= p[y].max(1e-300).ln();
            dz.iter_mut().for_each(|v| *v = 0.0);
            for c in 0..self.k {
                let e = (p[c] - if c == y { 1.0 } else { 0.0 }) * inv;
                for j in 0..self.hidden {
                    g[o2 + c * self.hidden + j] += e * z[j];
                    dz[j] += e * th[o2 + c * self.hidden + j];
                }
                g[o3 + c] += e;
            }
            for j in 0..self.hidden {
                let da = dz[j] * (1.0 - z[j] * z[j]);
                for (gi, xi) in g[j * self.d_in..(j + 1) * self.d_in].iter_mut().zip(x) {
                    *gi += da * xi;
                }
                g[o1 + j] += da;
            }
        }
        (loss * inv, g)
    }

    /// Mean cross-entropy over the whole data set.
    pub fn loss(&self, th: &[f64], data: &Dataset) -> f64 {
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut l = 0.0;
        for i in 0..data.n {
            self.forward_one(th, data.row(i), &mut z, &mut p);
            l -= p[data.y[i]].max(1e-300).ln();
        }
        l / data.n.max(1) as f64
    }

    /// Classification accuracy over the whole data set.
    pub fn accuracy(&self, th: &[f64], data: &Dataset) -> f64 {
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut ok = 0usize;
        for i in 0..data.n {
            self.forward_one(th, data.row(i), &mut z, &mut p);
            let arg = (0..self.k)
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0);
            ok += usize::from(arg == data.y[i]);
        }
        ok as f64 / data.n.max(1) as f64
    }

    /// Loss, gradient and damped GGN `F = (1/B) Σ J_bᵀ H_b J_b + λ I` on `rows`.
    ///
    /// Built as `F = GᵀG + λI` with `G` stacking `S_bᵀ J_b / sqrt(B)`, where
    /// `H_b = S_b S_bᵀ`, `S = (I - p 1ᵀ) diag(sqrt p)`.
    pub fn curvature(&self, th: &[f64], data: &Dataset, rows: &[usize], damping: f64) -> Curvature {
        let pn = self.n_params();
        let b = rows.len().max(1);
        let mut gmat = Mat::<f64>::zeros(b * self.k, pn);
        let mut jac = vec![0.0; self.k * pn];
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut grad = vec![0.0; pn];
        let mut loss = 0.0;
        let sb = 1.0 / (b as f64).sqrt();
        for (bi, &r) in rows.iter().enumerate() {
            let x = data.row(r);
            self.forward_one(th, x, &mut z, &mut p);
            self.jacobian_one(th, x, &mut jac);
            let y = data.y[r];
            loss -= p[y].max(1e-300).ln();
            for c in 0..self.k {
                let e = (p[c] - if c == y { 1.0 } else { 0.0 }) / b as f64;
                for (gi, ji) in grad.iter_mut().zip(&jac[c * pn..(c + 1) * pn]) {
                    *gi += e * ji;
                }
            }
            // Row j of S_bᵀ J_b: sqrt(p_j) (J_j - Σ_c p_c J_c).
            let mut pj = vec![0.0; pn];
            for c in 0..self.k {
                for (a, ji) in pj.iter_mut().zip(&jac[c * pn..(c + 1) * pn]) {
                    *a += p[c] * ji;
                }
            }
            for j in 0..self.k {
                let s = p[j].sqrt() * sb;
                let jr = &jac[j * pn..(j + 1) * pn];
                let mut row = gmat.row_mut(bi * self.k + j);
                for q in 0..pn {
                    row[q] = s * (jr[q] - pj[q]);
                }
            }
        }
        Curvature {
            loss: loss / b as f64,
            grad,
            factor: gmat,
            damping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tngd::data::toy_data;
    use langevin_core::rng::chain_rng;

    #[test]
    fn gradient_and_jacobian_match_finite_differences() {
        let data = toy_data(7, 3, 3, 1);
        let mlp = Mlp {
            d_in: 3,
            hidden: 4,
            k: 3,
        };
        let th = mlp.init(&mut chain_rng(2, 0));
        let rows: Vec<usize> = (0..7).collect();
        let (_, g) = mlp.loss_grad(&th, &data, &rows);
        let pn = mlp.n_params();
        let mut jac = vec![0.0; 3 * pn];
        mlp.jacobian_one(&th, data.row(0), &mut jac);
        let h = 1e-6;
        for q in 0..pn {
            let mut tp = th.clone();
            tp[q] += h;
            let mut tm = th.clone();
            tm[q] -= h;
            let fd = (mlp.loss_grad(&tp, &data, &rows).0 - mlp.loss_grad(&tm, &data, &rows).0)
                / (2.0 * h);
            assert!((fd - g[q]).abs() < 1e-6, "grad {q}: {fd} vs {}", g[q]);
            let (lp, lm) = (
                mlp.logits_one(&tp, data.row(0)),
                mlp.logits_one(&tm, data.row(0)),
            );
            for c in 0..3 {
                let fdj = (lp[c] - lm[c]) / (2.0 * h);
                assert!((fdj - jac[c * pn + q]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn ggn_matches_naive_sum_and_gradient_matches_backprop() {
        let data = toy_data(5, 2, 3, 3);
        let mlp = Mlp {
            d_in: 2,
            hidden: 3,
            k: 3,
        };
        let th = mlp.init(&mut chain_rng(4, 0));
        let rows: Vec<usize> = (0..5).collect();
        let c = mlp.curvature(&th, &data, &rows, 0.5);
        let (l, g) = mlp.loss_grad(&th, &data, &rows);
        assert!((c.loss - l).abs() < 1e-12);
        for (a, b) in c.grad.iter().zip(&g) {
            assert!((a - b).abs() < 1e-12);
        }
        let pn = mlp.n_params();
        let dense = c.dense();
        let mut naive = vec![0.0; pn * pn];
        let mut jac = vec![0.0; 3 * pn];
        for &r in &rows {
            mlp.jacobian_one(&th, data.row(r), &mut jac);
            let lg = mlp.logits_one(&th, data.row(r));
            let m = lg.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = lg.iter().map(|v| (v - m).exp()).sum();
            let p: Vec<f64> = lg.iter().map(|v| (v - m).exp() / s).collect();
            for a in 0..pn {
                for b in 0..pn {
                    let mut acc = 0.0;
                    for i in 0..3 {
                        for j in 0..3 {
                            let h = if i == j { p[i] } else { 0.0 } - p[i] * p[j];
                            acc += jac[i * pn + a] * h * jac[j * pn + b];
                        }
                    }
                    naive[a * pn + b] += acc / 5.0;
                }
            }
        }
        for a in 0..pn {
            for b in 0..pn {
                let want = naive[a * pn + b] + if a == b { 0.5 } else { 0.0 };
                assert!((dense[(a, b)] - want).abs() < 1e-12);
            }
        }
    }
}
