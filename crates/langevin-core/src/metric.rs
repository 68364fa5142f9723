//! Preconditioners (mass matrices) and the per-chain tuning of a sampler.
//!
//! A [`Metric`] is a factor `L` of the inverse mass matrix, `M⁻¹ = L Lᵀ`.
//! A preconditioned sampler is the plain sampler run in the *whitened*
//! coordinates `z = L⁻¹ θ`, where the target is `π(L z)`: its gradient is
//! `∇_z = Lᵀ ∇_θ`, and a move `Δz` of the plain update is the move `L Δz` of
//! θ. The momenta are kept in the whitened coordinates, where their
//! stationary law `N(0, σ² T I)` does not depend on `L`, so a metric can be
//! changed between two steps without touching them. With `L = I` every
//! sampler is bit-for-bit the unpreconditioned one.
//!
//! A chain's [`Tuning`] (a step-size factor and a metric) lives in its
//! transform state, so that checkpoints carry it and chains adapt
//! independently (`langevin::adapt` sets it during warm-up).

use serde::{Deserialize, Serialize};

/// A factor `L` of the inverse mass matrix `L Lᵀ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metric {
    /// `L = I`.
    #[default]
    Identity,
    /// `L = diag(scale)`: the inverse mass is `diag(scale²)`.
    Diagonal { scale: Vec<f64> },
    /// `L` lower triangular, row-major `dim × dim` (entries above the
    /// diagonal are ignored and stored as 0).
    Dense { dim: usize, factor: Vec<f64> },
}

impl Metric {
    /// `L = I`?
    pub fn is_identity(&self) -> bool {
        matches!(self, Metric::Identity)
    }

    /// The dimension it was built for (`None` for the identity).
    pub fn dim(&self) -> Option<usize> {
        match self {
            Metric::Identity => None,
            Metric::Diagonal { scale } => Some(scale.len()),
            Metric::Dense { dim, .. } => Some(*dim),
        }
    }

    /// Consistent with `dim` parameters: lengths, finite entries, a strictly
    /// positive diagonal.
    pub fn check(&self, dim: usize) -> Result<(), String> {
        match self {
            Metric::Identity => Ok(()),
            Metric::Diagonal { scale } => {
                if scale.len() != dim {
                    return Err(format!(
                        "diagonal metric has {} entries for {dim} parameters",
                        scale.len()
                    ));
                }
                if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err("diagonal metric entries must be finite and > 0".into());
                }
                Ok(())
            }
            Metric::Dense { dim: d, factor } => {
                if *d != dim || factor.len() != d * d {
                    return Err(format!(
                        "dense metric of dimension {d} ({} entries) for {dim} parameters",
                        factor.len()
                    ));
                }
                if factor.iter().any(|x| !x.is_finite()) {
                    return Err("dense metric entries must be finite".into());
                }
                if (0..dim).any(|i| factor[i * dim + i] <= 0.0) {
                    return Err("dense metric factor must have a positive diagonal".into());
                }
                Ok(())
            }
        }
    }

    /// `g ← Lᵀ g` (a gradient in θ to one in the whitened coordinates).
    /// `tmp` is scratch of length `g.len()` (used by the dense metric only).
    pub fn whiten_gradient(&self, g: &mut [f64], tmp: &mut [f64]) {
        match self {
            Metric::Identity => {}
            Metric::Diagonal { scale } => g.iter_mut().zip(scale).for_each(|(x, s)| *x *= s),
            Metric::Dense { dim, factor } => {
                let d = *dim;
                tmp[..d].fill(0.0);
                // (Lᵀ g)_j = Σ_{i ≥ j} L_ij g_i, row by row of L.
                for (i, gi) in g.iter().enumerate().take(d) {
                    let row = &factor[i * d..i * d + i + 1];
                    for (t, l) in tmp[..=i].iter_mut().zip(row) {
                        *t += l * gi;
                    }
                }
                g[..d].copy_from_slice(&tmp[..d]);
            }
        }
    }

    /// `θ ← θ + L Δz` (a whitened move applied to θ).
    pub fn add_move(&self, theta: &mut [f64], dz: &[f64]) {
        match self {
            Metric::Identity => theta.iter_mut().zip(dz).for_each(|(t, z)| *t += z),
            Metric::Diagonal { scale } => theta
                .iter_mut()
                .zip(dz)
                .zip(scale)
                .for_each(|((t, z), s)| *t += s * z),
            Metric::Dense { dim, factor } => {
                let d = *dim;
                for (i, t) in theta.iter_mut().enumerate().take(d) {
                    let row = &factor[i * d..i * d + i + 1];
                    *t += row.iter().zip(&dz[..=i]).map(|(l, z)| l * z).sum::<f64>();
                }
            }
        }
    }

    /// `out = L v`.
    pub fn apply(&self, v: &[f64], out: &mut [f64]) {
        out.fill(0.0);
        self.add_move(out, v);
    }

    /// The diagonal of the inverse mass `L Lᵀ` (ones for the identity).
    pub fn inverse_mass_diagonal(&self, dim: usize) -> Vec<f64> {
        match self {
            Metric::Identity => vec![1.0; dim],
            Metric::Diagonal { scale } => scale.iter().map(|s| s * s).collect(),
            Metric::Dense { dim: d, factor } => (0..*d)
                .map(|i| factor[i * d..i * d + i + 1].iter().map(|l| l * l).sum())
                .collect(),
        }
    }

    /// A short name: `identity`, `diagonal` or `dense`.
    pub fn kind(&self) -> &'static str {
        match self {
            Metric::Identity => "identity",
            Metric::Diagonal { .. } => "diagonal",
            Metric::Dense { .. } => "dense",
        }
    }
}

/// The per-chain tuning of a sampler: the step size is `step_scale` times
/// the configured schedule's value, and the update runs in the coordinates
/// whitened by `metric`. The default (`1`, identity) is the plain sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    pub step_scale: f64,
    pub metric: Metric,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            step_scale: 1.0,
            metric: Metric::Identity,
        }
    }
}

impl Tuning {
    /// The plain sampler's tuning (skipped when a state is saved).
    pub fn is_default(&self) -> bool {
        self.step_scale == 1.0 && self.metric.is_identity()
    }

    /// Consistent with `dim` parameters.
    pub fn check(&self, dim: usize) -> Result<(), String> {
        if !(self.step_scale.is_finite() && self.step_scale > 0.0) {
            return Err(format!(
                "step_scale must be finite and > 0, got {}",
                self.step_scale
            ));
        }
        self.metric.check(dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense() -> Metric {
        // L = [[2, 0, 0], [1, 3, 0], [-1, 0.5, 1]]
        Metric::Dense {
            dim: 3,
            factor: vec![2.0, 0.0, 0.0, 1.0, 3.0, 0.0, -1.0, 0.5, 1.0],
        }
    }

    #[test]
    fn dense_products_are_l_and_l_transpose() {
        let m = dense();
        let v = [1.0, -2.0, 0.5];
        let mut out = [0.0; 3];
        m.apply(&v, &mut out);
        assert_eq!(out, [2.0, 1.0 - 6.0, -1.0 - 1.0 + 0.5]);
        let mut g = v;
        let mut tmp = [0.0; 3];
        m.whiten_gradient(&mut g, &mut tmp);
        // Lᵀ v: columns of L dotted with v.
        assert_eq!(g, [2.0 - 2.0 - 0.5, -6.0 + 0.25, 0.5]);
        assert_eq!(m.inverse_mass_diagonal(3), vec![4.0, 10.0, 2.25]);
        assert!(m.check(3).is_ok());
        assert!(m.check(2).is_err());
    }

    #[test]
    fn diagonal_and_identity() {
        let m = Metric::Diagonal {
            scale: vec![2.0, 0.5],
        };
        let mut g = [1.0, 4.0];
        m.whiten_gradient(&mut g, &mut [0.0; 2]);
        assert_eq!(g, [2.0, 2.0]);
        let mut t = [1.0, 1.0];
        m.add_move(&mut t, &[1.0, 2.0]);
        assert_eq!(t, [3.0, 2.0]);
        assert!(Metric::Diagonal { scale: vec![0.0] }.check(1).is_err());
        assert!(Tuning::default().is_default());
        let bad = Tuning {
            step_scale: f64::NAN,
            metric: Metric::Identity,
        };
        assert!(bad.check(1).is_err());
    }
}
