//! Laplace approximations: `q = N(θ*, T P⁻¹)` around the given parameters θ*
//! (a mode found beforehand, e.g. with [`crate::optim`]), with a precision `P`
//! accumulated over minibatches.
//!
//! Every variant starts from `P = init_prec_diag · I` and each `step` adds the
//! curvature of one minibatch, so after a pass over the data `P` is the sum
//! over all examples. The mean is never changed.
//!
//! * [`diag_fisher`]: `P += Σᵢ gᵢ²` (per-example gradients of the user's
//!   per-example log posterior, [`PerExampleLogLik`](crate::curvature::PerExampleLogLik)).
//! * [`dense_fisher`]: `P += Σᵢ gᵢ gᵢᵀ`.
//! * [`diag_ggn`]: `P += diag(Σᵢ Jᵢᵀ Hᵢ Jᵢ)` ([`OutputModel`](crate::curvature::OutputModel)).
//! * [`dense_ggn`]: `P += Σᵢ Jᵢᵀ Hᵢ Jᵢ`.
//! * [`dense_hessian`]: `P += rescale · (−∇² log_posterior) + jitter · I`.
//! * [`kfac`]: per linear layer `P = (Σᵢ ãᵢãᵢᵀ / N) ⊗ Σᵢ gᵢgᵢᵀ + δ I` (KFAC GGN,
//!   laplace-torch's `hessian_structure="kron"`; a model implementing
//!   [`KronFactors`]), its own state [`KronLaplaceState`].
//!
//! **Subsets**: `subset: Some(names)` restricts the approximation to those
//! tensors (e.g. the last layer); `P` is then `m × m` over their flat indices
//! in ravel order, and samples keep every other parameter at θ*.
//!
//! **Sampling** at temperature T: `θ = θ* + sqrt(T) P^{-1/2} ξ` (diagonal) or
//! `θ* + sqrt(T) L⁻ᵀ ξ` with `P = L Lᵀ` (dense). `P` must be positive
//! definite there: zero curvature directions with `init_prec_diag = 0` give
//! [`Error::NotPositiveDefinite`].
//!
//! **Log posterior in the state**: the Fisher variants store the mean
//! per-example value of the last batch, the Hessian variant the last batch's
//! log posterior; the GGN variants never evaluate the log likelihood and leave
//! the field as it was (NaN from `init`, or whatever the caller stored, e.g.
//! the log posterior at the mode found beforehand). A NaN is written to JSON
//! as `null` and read back as NaN, so every state round-trips through serde_json.
//!
//! **Prior precision and noise by the evidence**: [`marglik`] (laplace-torch's
//! `optimize_prior_precision(method="marglik")`).
//!
//! Reference: posteriors' `laplace` module; Daxberger et al. (2021),
//! *Laplace redux*.
#![allow(clippy::needless_range_loop)]

use langevin_core::rng::fill_standard_normal;
use langevin_core::{Error, Params, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::curvature::{cholesky, solve_lower_t, spd_inverse, Subset};

pub mod dense_fisher;
pub mod dense_ggn;
pub mod dense_hessian;
pub mod diag_fisher;
pub mod diag_ggn;
pub mod kfac;
pub mod marglik;

pub use dense_fisher::DenseFisherLaplace;
pub use dense_ggn::DenseGgnLaplace;
pub use dense_hessian::{DenseHessianConfig, DenseHessianLaplace};
pub use diag_fisher::DiagFisherLaplace;
pub use diag_ggn::DiagGgnLaplace;
pub use kfac::{
    KronBatch, KronBlock, KronFactors, KronLaplace, KronLaplaceState, KronLayer, KronStructure,
};

/// Hyper-parameters shared by the Fisher and GGN variants.
#[derive(Debug, Clone, Default)]
pub struct LaplaceConfig {
    /// Initial precision on the diagonal (a Gaussian prior's precision if the
    /// per-example terms hold no prior). Default 0.
    pub init_prec_diag: f64,
    /// Tensor names to restrict to; `None` = every parameter.
    pub subset: Option<Vec<String>>,
}

impl LaplaceConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.init_prec_diag.is_finite() && self.init_prec_diag >= 0.0) {
            return Err(Error::config("init_prec_diag", "must be finite and >= 0"));
        }
        if let Some(s) = &self.subset {
            if s.is_empty() {
                return Err(Error::config(
                    "subset",
                    "is empty; use None for every parameter",
                ));
            }
        }
        Ok(())
    }

    /// Last-layer Laplace (laplace-torch's `subset_of_weights="last_layer"`): the
    /// approximation over the layout's last layer only, every other parameter fixed at
    /// θ*. The last layer is the last tensor whose name ends in `weight` together with the
    /// tensor right after it when that one's name ends in `bias` and shares its prefix
    /// (`layer2.weight`, `layer2.bias`); a layout without a `weight` tensor is an error.
    pub fn last_layer(layout: &langevin_core::ParamLayout, init_prec_diag: f64) -> Result<Self> {
        let specs = layout.specs();
        let Some(w) = specs.iter().rposition(|s| s.name.ends_with("weight")) else {
            return Err(Error::config(
                "subset",
                format!(
                    "last-layer Laplace needs a tensor named `...weight`; the layout has {:?}",
                    specs.iter().map(|s| &s.name).collect::<Vec<_>>()
                ),
            ));
        };
        let prefix = specs[w].name.trim_end_matches("weight");
        let mut names = vec![specs[w].name.clone()];
        if let Some(b) = specs.get(w + 1) {
            if b.name.ends_with("bias") && b.name.trim_end_matches("bias") == prefix {
                names.push(b.name.clone());
            }
        }
        let c = Self {
            init_prec_diag,
            subset: Some(names),
        };
        c.validate()?;
        Ok(c)
    }

    pub(crate) fn resolve(&self, params: &Params) -> Result<Subset> {
        match &self.subset {
            None => Ok(Subset::all(params.len())),
            Some(names) => Subset::from_names(params.layout(), names),
        }
    }
}

/// Per-step information of a Laplace update.
#[derive(Debug, Clone)]
pub struct LaplaceInfo {
    /// Examples in the batch (1 for the Hessian variant).
    pub n_examples: usize,
    /// Mean per-example value (Fisher), log posterior (Hessian) or NaN (GGN).
    pub log_posterior: f64,
}

/// A diagonal Laplace state: mean θ*, subset, diagonal precision over the subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagLaplaceState {
    pub params: Params,
    pub subset: Subset,
    pub prec_diag: Vec<f64>,
    pub step: u64,
    /// NaN when not evaluated (written to JSON as `null`, read back as NaN).
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
}

langevin_core::impl_transform_state!(DiagLaplaceState {
    params: params,
    step: step,
    log_density: log_posterior,
});

impl DiagLaplaceState {
    pub(crate) fn new(params: Params, subset: Subset, init: f64) -> Self {
        let m = subset.len();
        Self {
            params,
            subset,
            prec_diag: vec![init; m],
            step: 0,
            log_posterior: f64::NAN,
        }
    }

    /// Standard deviations `sqrt(T / P)` over the subset.
    pub fn sd(&self, temperature: f64) -> Result<Vec<f64>> {
        check_temperature(temperature)?;
        if let Some(j) = self
            .prec_diag
            .iter()
            .position(|p| !(*p > 0.0 && p.is_finite()))
        {
            return Err(Error::NotPositiveDefinite {
                context: Some(format!(
                    "diagonal Laplace precision entry {j} is {}",
                    self.prec_diag[j]
                )),
            });
        }
        Ok(self
            .prec_diag
            .iter()
            .map(|p| (temperature / p).sqrt())
            .collect())
    }

    /// `n` draws from `N(θ*, T diag(P)⁻¹)` (parameters outside the subset fixed).
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<Vec<Params>> {
        let sd = self.sd(temperature)?;
        let mut xi = vec![0.0; sd.len()];
        Ok((0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                let mut p = self.params.clone();
                let v = p.values_mut();
                for ((&j, s), z) in self.subset.indices().iter().zip(&sd).zip(&xi) {
                    v[j] += s * z;
                }
                p
            })
            .collect())
    }
}

/// A dense Laplace state: mean θ*, subset, `m × m` precision (row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseLaplaceState {
    pub params: Params,
    pub subset: Subset,
    pub prec: Vec<f64>,
    pub step: u64,
    /// NaN when not evaluated (written to JSON as `null`, read back as NaN).
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
}

langevin_core::impl_transform_state!(DenseLaplaceState {
    params: params,
    step: step,
    log_density: log_posterior,
});

impl DenseLaplaceState {
    pub(crate) fn new(params: Params, subset: Subset, init: f64) -> Self {
        let m = subset.len();
        let mut prec = vec![0.0; m * m];
        for j in 0..m {
            prec[j * m + j] = init;
        }
        Self {
            params,
            subset,
            prec,
            step: 0,
            log_posterior: f64::NAN,
        }
    }

    /// `T P⁻¹` over the subset (row-major `m × m`).
    pub fn covariance(&self, temperature: f64) -> Result<Vec<f64>> {
        check_temperature(temperature)?;
        let m = self.subset.len();
        let mut c = spd_inverse(&self.prec, m, "dense Laplace precision")?;
        c.iter_mut().for_each(|x| *x *= temperature);
        Ok(c)
    }

    /// `n` draws from `N(θ*, T P⁻¹)` (parameters outside the subset fixed).
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<Vec<Params>> {
        check_temperature(temperature)?;
        let m = self.subset.len();
        let l = cholesky(&self.prec, m, "dense Laplace precision")?;
        let scale = temperature.sqrt();
        let mut xi = vec![0.0; m];
        Ok((0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                solve_lower_t(&l, m, &mut xi);
                let mut p = self.params.clone();
                let v = p.values_mut();
                for (&j, z) in self.subset.indices().iter().zip(&xi) {
                    v[j] += scale * z;
                }
                p
            })
            .collect())
    }
}

fn check_temperature(t: f64) -> Result<()> {
    if !(t.is_finite() && t >= 0.0) {
        return Err(Error::config(
            "temperature",
            format!("must be finite and >= 0, got {t}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::{chain_rng, ParamLayout};

    fn moments(draws: &[Params], j: usize) -> (f64, f64) {
        let xs: Vec<f64> = draws.iter().map(|p| p.values()[j]).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
        (m, v.sqrt())
    }

    /// The one-liner picks the last weight and its bias (the MLP's output layer, whose
    /// flat indices come last in ravel order), or the weight alone, and refuses a layout
    /// with no weight.
    #[test]
    fn last_layer_is_the_output_weight_and_its_bias() {
        let mlp = ParamLayout::new([
            ("layer0.weight", vec![3, 4]),
            ("layer0.bias", vec![4]),
            ("layer1.weight", vec![4, 2]),
            ("layer1.bias", vec![2]),
        ])
        .unwrap();
        let c = LaplaceConfig::last_layer(&mlp, 1.0).unwrap();
        assert_eq!(
            c.subset.as_deref(),
            Some(&["layer1.weight".to_string(), "layer1.bias".to_string()][..])
        );
        let p = Params::new(mlp.clone(), vec![0.0; mlp.len()]).unwrap();
        let sub = c.resolve(&p).unwrap();
        assert_eq!(sub.indices(), (16..26).collect::<Vec<_>>().as_slice());
        // A weight with no bias after it, then a tensor of another layer.
        let odd = ParamLayout::new([
            ("enc.weight", vec![2, 2]),
            ("head.weight", vec![2]),
            ("log_noise_sd", vec![]),
        ])
        .unwrap();
        let c = LaplaceConfig::last_layer(&odd, 0.0).unwrap();
        assert_eq!(c.subset.as_deref(), Some(&["head.weight".to_string()][..]));
        let none = ParamLayout::new([("a", vec![2]), ("b", vec![])]).unwrap();
        assert!(LaplaceConfig::last_layer(&none, 1.0).is_err());
        assert!(LaplaceConfig::last_layer(&mlp, -1.0).is_err());
    }

    /// GGN states never evaluate the log posterior (NaN): they must still
    /// round-trip through JSON, before and after an update.
    #[test]
    fn ggn_states_round_trip_through_json() {
        use crate::curvature::{FnOutputModel, OutputLikelihood};
        use langevin_core::Transform;
        // f(θ, x) = θ₀ x + θ₁ for x in the batch, Bernoulli output.
        let model = FnOutputModel::new(
            1,
            OutputLikelihood::Bernoulli,
            |t: &[f64], xs: &Vec<f64>| {
                let out = xs.iter().map(|x| t[0] * x + t[1]).collect();
                let jac = xs.iter().flat_map(|&x| [x, 1.0]).collect();
                (out, jac)
            },
        )
        .unwrap();
        let batch = vec![-1.0, 0.5, 2.0];
        let cfg = LaplaceConfig {
            init_prec_diag: 1.0,
            subset: None,
        };
        let diag = DiagGgnLaplace::new(&model, cfg.clone()).unwrap();
        let dense = DenseGgnLaplace::new(&model, cfg).unwrap();
        let p = Params::from_vec(vec![0.3, -0.2]);
        let mut rng = chain_rng(0, 0);
        let mut s = diag.init(p.clone(), &mut rng).unwrap();
        let mut t = dense.init(p, &mut rng).unwrap();
        for k in 0..2 {
            if k == 1 {
                diag.step(&mut s, &batch, &mut rng).unwrap();
                dense.step(&mut t, &batch, &mut rng).unwrap();
            }
            assert!(s.log_posterior.is_nan() && t.log_posterior.is_nan());
            let js = serde_json::to_string(&s).unwrap();
            let back: DiagLaplaceState = serde_json::from_str(&js).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), js);
            assert_eq!(back.prec_diag, s.prec_diag);
            assert!(back.log_posterior.is_nan());
            let jt = serde_json::to_string(&t).unwrap();
            let back: DenseLaplaceState = serde_json::from_str(&jt).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), jt);
            assert_eq!(back.prec, t.prec);
        }
        // A stored value (e.g. the log posterior at the mode) is kept.
        s.log_posterior = -1.25;
        let back: DiagLaplaceState =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.log_posterior, -1.25);
    }

    #[test]
    fn diag_and_dense_samples_match_the_state_on_a_subset() {
        let layout = ParamLayout::new([("a", vec![2]), ("b", vec![2])]).unwrap();
        let params = Params::new(layout.clone(), vec![1.0, 2.0, -1.0, 0.5]).unwrap();
        let subset = Subset::from_names(&layout, &["b"]).unwrap();
        let mut diag = DiagLaplaceState::new(params.clone(), subset.clone(), 0.0);
        diag.prec_diag = vec![4.0, 0.25];
        let mut dense = DenseLaplaceState::new(params.clone(), subset, 0.0);
        dense.prec = vec![4.0, 1.0, 1.0, 0.5];
        let cov = dense.covariance(0.5).unwrap();
        for seed in 0..3 {
            let t = 0.5;
            let d = diag.sample(10_000, t, &mut chain_rng(seed, 0)).unwrap();
            let e = dense.sample(10_000, t, &mut chain_rng(seed, 1)).unwrap();
            for j in 0..2 {
                assert_eq!(moments(&d, j), (params.values()[j], 0.0));
            }
            for (k, j) in [2usize, 3].into_iter().enumerate() {
                let sd = (t / diag.prec_diag[k]).sqrt();
                let (m, s) = moments(&d, j);
                assert!((m - params.values()[j]).abs() < (5.0 * sd / 100.0).min(0.1));
                assert!((s - sd).abs() < 5.0 * sd / 141.0);
                let sd = cov[k * 2 + k].sqrt();
                let (m, s) = moments(&e, j);
                assert!((m - params.values()[j]).abs() < (5.0 * sd / 100.0).min(0.1));
                assert!((s - sd).abs() < 5.0 * sd / 141.0);
            }
        }
        diag.prec_diag[0] = 0.0;
        assert!(diag.sample(1, 1.0, &mut chain_rng(0, 0)).is_err());
        dense.prec = vec![1.0, 2.0, 2.0, 1.0];
        assert!(matches!(
            dense.sample(1, 1.0, &mut chain_rng(0, 0)),
            Err(Error::NotPositiveDefinite { .. })
        ));
    }
}
