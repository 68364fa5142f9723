//! Kronecker-factored (KFAC) generalised Gauss-Newton Laplace approximation of the
//! linear layers of a network: laplace-torch's `hessian_structure="kron"`
//! (`KronLaplace`), with the exact-GGN factors of BackPACK's KFLR (laplace-torch's
//! default GGN backend for `kron`).
//!
//! **A layer.** A linear layer `z = a W + b` (`a ∈ ℝ^{n_in}` the layer's input, `W` of
//! shape `[n_in, n_out]`, `b ∈ ℝ^{n_out}`) whose weight is immediately followed by its
//! bias in ravel order ([`KronLayer`]) is one `(n_in + 1) × n_out` row-major matrix
//! `W̃ = [W; b]` over a contiguous block of flat indices, with input `ã = (a, 1)`. The
//! Jacobian of the network output `f` with respect to that block is, per example,
//! `ãᵢ ⊗ Jᵢ` (`Jᵢ = ∂f/∂z`, `k × n_out`), so the layer's GGN block is
//! `Σᵢ ãᵢãᵢᵀ ⊗ JᵢᵀHᵢJᵢ` and KFAC replaces it by a product of sums:
//!
//! ```text
//! A = Σᵢ ãᵢ ãᵢᵀ                       ((n_in+1) × (n_in+1))
//! G = Σᵢ Σ_c (Jᵢᵀ sᵢ_c)(Jᵢᵀ sᵢ_c)ᵀ     (n_out × n_out),   Hᵢ = Σ_c sᵢ_c sᵢ_cᵀ
//! P_layer = (A / N) ⊗ G + δ I         (N: the examples accumulated)
//! ```
//!
//! with `Hᵢ` the Hessian of `−log p(yᵢ | f)` in the output and `sᵢ_c` its square-root
//! columns, backpropagated through the network (KFLR: exact GGN factors, no Monte Carlo;
//! for a softmax `sᵢ_c = √p_c (e_c − p)`, for a Gaussian `1/σ`). The Kronecker product
//! is in ravel order: `P[(j,k), (j',k')] = A[j,j'] G[k,k'] / N` for the entries
//! `W̃[j,k]`, `W̃[j',k']`.
//!
//! **Scaling (laplace-torch's convention).** Both factors are *summed* over the examples
//! and the product divided by N once: BackPACK's KFLR returns per batch of M rows the
//! batch *mean* of `ããᵀ` and the batch *sum* of the backpropagated square roots;
//! laplace-torch's `_rescale_kron_factors` multiplies the input factor by `M/N` and
//! `Kron.__add__` sums the factors over batches, giving `(Σ ããᵀ / N) ⊗ Σ ggᵀ`, the
//! same matrix. It is the standard KFAC estimate `N · E[ããᵀ] ⊗ E[ggᵀ]` of the
//! sum-over-examples GGN, exact when one factor is constant over the examples (e.g. a
//! single linear layer with a Gaussian likelihood and one output: `A ⊗ G / N = X̃ᵀX̃/σ²`).
//! The state stores the sums and N ([`KronLaplaceState::n_examples`]), so more
//! batches can be added later.
//!
//! **Bias.** Unlike laplace-torch (which splits each layer into a weight block
//! `A_W ⊗ G` and a bias block `G`), the bias is the last row of `W̃` (Martens & Grosse's
//! homogeneous coordinates, as ASDL computes it before laplace-torch splits it), so
//! the weight–bias correlations of a layer are kept.
//!
//! **Other parameters** (not in a linear layer, e.g. a learned `log_noise_sd`): the
//! model reports them in [`KronStructure::other`] with their diagonal GGN
//! (for `log σ` of `N(f, σ²)`: the Fisher information 2 per example); their precision
//! is that diagonal plus δ. Every parameter must be in a layer or in `other`
//! (or outside the configured subset, then fixed at θ*).
//!
//! **Prior precision.** `δ = init_prec_diag` of the [`LaplaceConfig`], or
//! [`KronLaplaceState::with_prior_precision`] at any time (it does not touch the
//! factors), so a state built with δ = 0 can be tuned by the evidence
//! ([`super::marglik`] with `Curvature::Diag(&state.curvature_eigenvalues()?)` and
//! [`KronLaplaceState::theta`]) and then given the optimum. laplace-torch adds δ to the
//! eigenvalues of the Kronecker product (`λ_A λ_G + δ`, its `damping=False` default),
//! as here.
//!
//! **Decomposition.** Each block's precision is `(Q_A ⊗ Q_G) diag(λ_A λ_G / N + δ)
//! (Q_A ⊗ Q_G)ᵀ` from the symmetric eigendecompositions (faer) `A = Q_A Λ_A Q_Aᵀ`,
//! `G = Q_G Λ_G Q_Gᵀ` (rounding negatives clipped to 0). They are computed on first use
//! after an update and cached (not serialised). No `d × d` matrix is ever formed:
//! `(Q_A ⊗ Q_G) vec(X) = vec(Q_A X Q_Gᵀ)` for the row-major block `X`.
//!
//! **Sampling** at temperature T: `θ = θ* + sqrt(T) (Q_A ⊗ Q_G) diag(λ + δ)^{-1/2} ξ`
//! per block (a square root of `T P⁻¹`), parameters outside the subset fixed.
//!
//! Reference: Ritter, Botev & Barber (2018), *A scalable Laplace approximation for
//! neural networks*; Martens & Grosse (2015), *KFAC*; Daxberger et al. (2021),
//! *Laplace redux* (laplace-torch).
#![allow(clippy::needless_range_loop)]

use std::ops::Range;
use std::sync::OnceLock;

use faer::{Mat, Side};
use langevin_core::rng::fill_standard_normal;
use langevin_core::{Error, Params, Result, Transform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_temperature, LaplaceConfig, LaplaceInfo};
use crate::curvature::Subset;

/// A linear layer: the contiguous block `offset .. offset + rows · n_out` of the flat
/// parameters, a row-major `rows × n_out` matrix (`rows = n_in + 1` with a bias: the
/// weight `[n_in, n_out]` followed by the bias `[n_out]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KronLayer {
    /// Flat index of the weight's first entry.
    pub offset: usize,
    /// Input width (without the appended 1).
    pub n_in: usize,
    /// Output width.
    pub n_out: usize,
    /// Whether the bias follows the weight (and `A` has the extra row and column).
    pub bias: bool,
}

impl KronLayer {
    /// Size of the input factor `A`: `n_in + 1` with a bias, `n_in` without.
    pub fn rows(&self) -> usize {
        self.n_in + usize::from(self.bias)
    }

    /// Number of parameters of the layer.
    pub fn len(&self) -> usize {
        self.rows() * self.n_out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The layer's flat indices.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Which parameters a model's KFAC covers: its linear layers and, with a diagonal GGN,
/// the other parameters (flat indices).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KronStructure {
    pub layers: Vec<KronLayer>,
    pub other: Vec<usize>,
}

/// One batch's KFAC contributions (sums over its examples, not means).
#[derive(Debug, Clone, PartialEq)]
pub struct KronBatch {
    /// Examples in the batch.
    pub n: usize,
    /// Per layer (the order of [`KronStructure::layers`]): `Σᵢ ãᵢãᵢᵀ`, row-major `rows × rows`.
    pub a: Vec<Vec<f64>>,
    /// Per layer: `Σᵢ Σ_c gᵢ_c gᵢ_cᵀ`, row-major `n_out × n_out`.
    pub g: Vec<Vec<f64>>,
    /// The diagonal GGN of [`KronStructure::other`], summed over the examples.
    pub other: Vec<f64>,
}

/// A model whose GGN has Kronecker factors per linear layer (see the module docs).
pub trait KronFactors: Send + Sync {
    type Batch: ?Sized;
    /// The layers and other parameters (fixed for the model).
    fn kron_structure(&self) -> KronStructure;
    /// The factors of one batch at `params`.
    fn kron_factors(&self, params: &Params, batch: &Self::Batch) -> Result<KronBatch>;
}

impl<M: KronFactors + ?Sized> KronFactors for &M {
    type Batch = M::Batch;
    fn kron_structure(&self) -> KronStructure {
        (**self).kron_structure()
    }
    fn kron_factors(&self, params: &Params, batch: &Self::Batch) -> Result<KronBatch> {
        (**self).kron_factors(params, batch)
    }
}

/// KFAC-GGN Laplace over a model `M`. `init_prec_diag` is the prior precision δ;
/// `subset` names whole layers (weight and bias) and other parameters to approximate.
pub struct KronLaplace<M> {
    config: LaplaceConfig,
    model: M,
}

impl<M: KronFactors> KronLaplace<M> {
    pub fn new(model: M, config: LaplaceConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, model })
    }

    pub fn config(&self) -> &LaplaceConfig {
        &self.config
    }
}

impl<M: KronFactors> Transform for KronLaplace<M> {
    type State = KronLaplaceState;
    type Info = LaplaceInfo;
    type Batch = M::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<KronLaplaceState> {
        let st = self.model.kron_structure();
        let dim = params.len();
        check_structure(&st, dim)?;
        let wanted: Option<Vec<bool>> = match &self.config.subset {
            None => None,
            Some(names) => {
                let s = Subset::from_names(params.layout(), names)?;
                let mut w = vec![false; dim];
                for &i in s.indices() {
                    w[i] = true;
                }
                Some(w)
            }
        };
        let name_of = |i: usize| -> String {
            let l = params.layout();
            (0..l.specs().len())
                .find(|&k| (l.offset(k)..l.offset(k) + l.specs()[k].numel()).contains(&i))
                .map(|k| l.specs()[k].name.clone())
                .unwrap_or_else(|| format!("#{i}"))
        };
        let mut covered = vec![false; dim];
        let mut blocks = Vec::new();
        for (src, layer) in st.layers.iter().enumerate() {
            let r = layer.range();
            let take = match &wanted {
                None => true,
                Some(w) => {
                    let n = r.clone().filter(|&i| w[i]).count();
                    if n != 0 && n != layer.len() {
                        return Err(Error::config(
                            "subset",
                            format!(
                                "KFAC approximates whole layers: the subset has part of the \
                                 layer of `{}` (name its weight and its bias)",
                                name_of(layer.offset)
                            ),
                        ));
                    }
                    n != 0
                }
            };
            if take {
                r.for_each(|i| covered[i] = true);
                blocks.push(KronBlock {
                    layer: *layer,
                    source: src,
                    a_sum: vec![0.0; layer.rows() * layer.rows()],
                    g_sum: vec![0.0; layer.n_out * layer.n_out],
                });
            }
        }
        let mut other = Vec::new();
        for (src, &i) in st.other.iter().enumerate() {
            if wanted.as_ref().is_none_or(|w| w[i]) {
                covered[i] = true;
                other.push((src, i));
            }
        }
        let missing = |i: usize| match &wanted {
            None => !covered[i],
            Some(w) => w[i] && !covered[i],
        };
        if let Some(i) = (0..dim).find(|&i| missing(i)) {
            return Err(Error::config(
                "subset",
                format!(
                    "the model has no KFAC curvature for `{}` (neither in a linear layer nor a \
                     parameter with a diagonal GGN); leave it out of the subset",
                    name_of(i)
                ),
            ));
        }
        let subset = Subset::from_indices((0..dim).filter(|&i| covered[i]).collect(), dim)?;
        Ok(KronLaplaceState {
            params,
            subset,
            other_diag: vec![0.0; other.len()],
            other,
            blocks,
            n_examples: 0,
            prior_precision: self.config.init_prec_diag,
            step: 0,
            log_posterior: f64::NAN,
            eig: OnceLock::new(),
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut KronLaplaceState,
        batch: &M::Batch,
        _rng: &mut R,
    ) -> Result<LaplaceInfo> {
        state.subset.check_dim(state.params.len())?;
        let kb = self.model.kron_factors(&state.params, batch)?;
        let st_len = |what: &'static str, expected: usize, got: usize| -> Result<()> {
            if expected != got {
                return Err(Error::DimensionMismatch {
                    what,
                    expected,
                    got,
                });
            }
            Ok(())
        };
        for b in &state.blocks {
            let (a, g) = (
                kb.a.get(b.source).map_or(0, Vec::len),
                kb.g.get(b.source).map_or(0, Vec::len),
            );
            st_len("KFAC input factor", b.a_sum.len(), a)?;
            st_len("KFAC output factor", b.g_sum.len(), g)?;
        }
        if let Some(&(src, _)) = state.other.iter().find(|o| o.0 >= kb.other.len()) {
            st_len(
                "KFAC diagonal of the other parameters",
                src + 1,
                kb.other.len(),
            )?;
        }
        let bad =
            kb.a.iter()
                .chain(&kb.g)
                .flatten()
                .chain(&kb.other)
                .filter(|v| !v.is_finite())
                .count();
        if bad > 0 {
            return Err(Error::NonFiniteLogDensity {
                step: state.step,
                value: f64::NAN,
                bad_grad: bad,
            });
        }
        for b in &mut state.blocks {
            add(&mut b.a_sum, &kb.a[b.source]);
            add(&mut b.g_sum, &kb.g[b.source]);
        }
        for ((src, _), d) in state.other.iter().zip(&mut state.other_diag) {
            *d += kb.other[*src];
        }
        state.n_examples += kb.n as u64;
        state.step += 1;
        state.eig = OnceLock::new();
        Ok(LaplaceInfo {
            n_examples: kb.n,
            log_posterior: f64::NAN,
        })
    }
}

fn add(acc: &mut [f64], v: &[f64]) {
    acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
}

fn check_structure(st: &KronStructure, dim: usize) -> Result<()> {
    let mut seen = vec![false; dim];
    let idx = st
        .layers
        .iter()
        .flat_map(|l| l.range())
        .chain(st.other.iter().copied());
    for i in idx {
        if i >= dim {
            return Err(Error::DimensionMismatch {
                what: "KFAC layer or parameter index (parameters)",
                expected: dim,
                got: i + 1,
            });
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::config(
                "kron_structure",
                format!("flat index {i} is in two KFAC blocks"),
            ));
        }
    }
    if st.layers.iter().any(|l| l.is_empty()) {
        return Err(Error::config(
            "kron_structure",
            "a KFAC layer has no parameter",
        ));
    }
    Ok(())
}

/// One approximated layer: its placement and the summed factors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KronBlock {
    pub layer: KronLayer,
    /// Index of the layer in the model's [`KronStructure::layers`].
    pub source: usize,
    /// `Σᵢ ãᵢãᵢᵀ` over the examples accumulated (row-major).
    pub a_sum: Vec<f64>,
    /// `Σᵢ Σ_c gᵢ_c gᵢ_cᵀ` (row-major).
    pub g_sum: Vec<f64>,
}

/// The eigendecomposition of one block's factors: `A/N = Q_A diag(la) Q_Aᵀ`, `G = …`.
#[derive(Debug, Clone)]
struct BlockEig {
    la: Vec<f64>,
    qa: Mat<f64>,
    lg: Vec<f64>,
    qg: Mat<f64>,
}

/// A KFAC Laplace state: mean θ*, the approximated subset, per-layer factors, the
/// diagonal of the other parameters, the prior precision δ. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KronLaplaceState {
    pub params: Params,
    /// The approximated flat indices (ravel order): the vectors of [`Self::sd`],
    /// [`Self::cov_vec`] and [`Self::curvature_eigenvalues`] run over them.
    pub subset: Subset,
    blocks: Vec<KronBlock>,
    /// `(index in KronStructure::other, flat index)`.
    other: Vec<(usize, usize)>,
    other_diag: Vec<f64>,
    n_examples: u64,
    prior_precision: f64,
    pub step: u64,
    /// NaN (the GGN never evaluates the log likelihood) unless the caller stores a value.
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
    #[serde(skip)]
    eig: OnceLock<Vec<BlockEig>>,
}

langevin_core::impl_transform_state!(KronLaplaceState {
    params: params,
    step: step,
    log_density: log_posterior,
});

/// Equal when everything but the cached decomposition is.
impl PartialEq for KronLaplaceState {
    fn eq(&self, o: &Self) -> bool {
        self.params == o.params
            && self.subset == o.subset
            && self.blocks == o.blocks
            && self.other == o.other
            && self.other_diag == o.other_diag
            && self.n_examples == o.n_examples
            && self.prior_precision == o.prior_precision
            && self.step == o.step
            && (self.log_posterior == o.log_posterior
                || (self.log_posterior.is_nan() && o.log_posterior.is_nan()))
    }
}

fn symmetric_eig(a: &[f64], n: usize, scale: f64, what: &str) -> Result<(Vec<f64>, Mat<f64>)> {
    let m = Mat::<f64>::from_fn(n, n, |i, j| 0.5 * scale * (a[i * n + j] + a[j * n + i]));
    let e = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::Numerical(format!("eigendecomposition of the KFAC {what}")))?;
    let s = e.S().column_vector();
    // The factors are sums of outer products: negative eigenvalues are rounding.
    let l = (0..n).map(|i| s[i].max(0.0)).collect();
    Ok((l, e.U().to_owned()))
}

fn to_mat(x: &[f64], r: usize, c: usize) -> Mat<f64> {
    Mat::from_fn(r, c, |i, j| x[i * c + j])
}

fn from_mat(m: &Mat<f64>, out: &mut [f64]) {
    let c = m.ncols();
    for i in 0..m.nrows() {
        for j in 0..c {
            out[i * c + j] = m[(i, j)];
        }
    }
}

impl KronLaplaceState {
    /// A state from given factors (sums over `n_examples` examples) instead of a
    /// model: `blocks` are `(layer, Σ ããᵀ, Σ ggᵀ)`, `other` are `(flat index,
    /// diagonal GGN sum)`. The subset is every index they cover.
    pub fn from_factors(
        params: Params,
        blocks: Vec<(KronLayer, Vec<f64>, Vec<f64>)>,
        other: Vec<(usize, f64)>,
        n_examples: u64,
        prior_precision: f64,
    ) -> Result<Self> {
        let st = KronStructure {
            layers: blocks.iter().map(|b| b.0).collect(),
            other: other.iter().map(|o| o.0).collect(),
        };
        check_structure(&st, params.len())?;
        let mut idx: Vec<usize> = st.layers.iter().flat_map(|l| l.range()).collect();
        idx.extend(&st.other);
        let subset = Subset::from_indices(idx, params.len())?;
        let blocks = blocks
            .into_iter()
            .enumerate()
            .map(|(source, (layer, a_sum, g_sum))| {
                let (r, c) = (layer.rows(), layer.n_out);
                if a_sum.len() != r * r || g_sum.len() != c * c {
                    return Err(Error::DimensionMismatch {
                        what: "KFAC factors (rows² + n_out²)",
                        expected: r * r + c * c,
                        got: a_sum.len() + g_sum.len(),
                    });
                }
                Ok(KronBlock {
                    layer,
                    source,
                    a_sum,
                    g_sum,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let s = Self {
            params,
            subset,
            blocks,
            other: other.iter().enumerate().map(|(k, o)| (k, o.0)).collect(),
            other_diag: other.iter().map(|o| o.1).collect(),
            n_examples,
            prior_precision: 0.0,
            step: 0,
            log_posterior: f64::NAN,
            eig: OnceLock::new(),
        };
        s.with_prior_precision(prior_precision)
    }

    /// The same state with prior precision `delta` (finite, ≥ 0); the factors and
    /// their cached decomposition are kept.
    pub fn with_prior_precision(mut self, delta: f64) -> Result<Self> {
        if !(delta.is_finite() && delta >= 0.0) {
            return Err(Error::config(
                "prior_precision",
                format!("must be finite and >= 0, got {delta}"),
            ));
        }
        self.prior_precision = delta;
        Ok(self)
    }

    /// The prior precision δ added to every eigenvalue.
    pub fn prior_precision(&self) -> f64 {
        self.prior_precision
    }

    /// Examples accumulated (the N of `A / N`).
    pub fn n_examples(&self) -> u64 {
        self.n_examples
    }

    /// The approximated layers with their summed factors.
    pub fn blocks(&self) -> &[KronBlock] {
        &self.blocks
    }

    /// The other approximated parameters: `(flat index, diagonal GGN sum)`.
    pub fn other_diag(&self) -> Vec<(usize, f64)> {
        self.other
            .iter()
            .map(|o| o.1)
            .zip(self.other_diag.iter().copied())
            .collect()
    }

    /// θ* over the subset (for the evidence's `‖θ*‖²`).
    pub fn theta(&self) -> Vec<f64> {
        let mut t = vec![0.0; self.subset.len()];
        self.subset.gather(self.params.values(), &mut t);
        t
    }

    fn inv_n(&self) -> f64 {
        if self.n_examples == 0 {
            0.0
        } else {
            1.0 / self.n_examples as f64
        }
    }

    fn eig(&self) -> Result<&[BlockEig]> {
        if let Some(e) = self.eig.get() {
            return Ok(e);
        }
        let inv_n = self.inv_n();
        let e = self
            .blocks
            .iter()
            .map(|b| {
                let (la, qa) = symmetric_eig(&b.a_sum, b.layer.rows(), inv_n, "input factor")?;
                let (lg, qg) = symmetric_eig(&b.g_sum, b.layer.n_out, 1.0, "output factor")?;
                Ok(BlockEig { la, qa, lg, qg })
            })
            .collect::<Result<Vec<_>>>()?;
        let _ = self.eig.set(e);
        Ok(self.eig.get().expect("just set"))
    }

    /// `λ_A λ_G + δ` of block `b` as a `rows × n_out` matrix, checked positive.
    fn prec_eigs(&self, b: usize, e: &BlockEig) -> Result<Mat<f64>> {
        let d = self.prior_precision;
        let m = Mat::from_fn(e.la.len(), e.lg.len(), |p, q| e.la[p] * e.lg[q] + d);
        for p in 0..m.nrows() {
            for q in 0..m.ncols() {
                let v = m[(p, q)];
                if !(v > 0.0 && v.is_finite()) {
                    return Err(Error::NotPositiveDefinite {
                        context: Some(format!(
                            "KFAC precision of the layer at flat index {}: eigenvalue ({p}, {q}) \
                             is {v} (a zero curvature direction needs a prior precision > 0)",
                            self.blocks[b].layer.offset
                        )),
                    });
                }
            }
        }
        Ok(m)
    }

    fn other_prec(&self) -> Result<Vec<f64>> {
        self.other
            .iter()
            .zip(&self.other_diag)
            .map(|(&(_, i), &g)| {
                let v = g + self.prior_precision;
                if v > 0.0 && v.is_finite() {
                    Ok(v)
                } else {
                    Err(Error::NotPositiveDefinite {
                        context: Some(format!("KFAC precision of flat index {i} is {v}")),
                    })
                }
            })
            .collect()
    }

    fn gather(&self, full: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.subset.len()];
        self.subset.gather(full, &mut out);
        out
    }

    /// The eigenvalues `λ_A λ_G / N` of each layer's Kronecker product (entry `(p, q)`
    /// of a `rows × n_out` block at the flat index of `W̃[p, q]`) and the diagonal GGN
    /// of the other parameters, over the subset in ravel order, without δ: the
    /// curvature for `marglik::Curvature::Diag`.
    pub fn curvature_eigenvalues(&self) -> Result<Vec<f64>> {
        let eig = self.eig()?;
        let mut full = vec![0.0; self.params.len()];
        for (b, e) in self.blocks.iter().zip(eig) {
            let c = b.layer.n_out;
            for p in 0..e.la.len() {
                for q in 0..c {
                    full[b.layer.offset + p * c + q] = e.la[p] * e.lg[q];
                }
            }
        }
        for (&(_, i), &g) in self.other.iter().zip(&self.other_diag) {
            full[i] = g;
        }
        Ok(self.gather(&full))
    }

    /// `ln det P` (P the posterior precision, temperature 1) = `Σ ln(λ + δ)`.
    pub fn log_det(&self) -> Result<f64> {
        let eig = self.eig()?;
        let mut s = 0.0;
        for (b, e) in eig.iter().enumerate() {
            let m = self.prec_eigs(b, e)?;
            for p in 0..m.nrows() {
                for q in 0..m.ncols() {
                    s += m[(p, q)].ln();
                }
            }
        }
        Ok(s + self.other_prec()?.iter().map(|v| v.ln()).sum::<f64>())
    }

    /// Marginal standard deviations `sqrt(diag(T P⁻¹))` over the subset:
    /// per layer `(Q_A∘Q_A) diag(1/(λ+δ)) (Q_G∘Q_G)ᵀ`.
    pub fn sd(&self, temperature: f64) -> Result<Vec<f64>> {
        check_temperature(temperature)?;
        let eig = self.eig()?;
        let mut full = vec![0.0; self.params.len()];
        for (b, e) in eig.iter().enumerate() {
            let lam = self.prec_eigs(b, e)?;
            let inv = Mat::from_fn(lam.nrows(), lam.ncols(), |p, q| 1.0 / lam[(p, q)]);
            let qa2 = Mat::from_fn(e.qa.nrows(), e.qa.ncols(), |i, j| e.qa[(i, j)].powi(2));
            let qg2 = Mat::from_fn(e.qg.nrows(), e.qg.ncols(), |i, j| e.qg[(i, j)].powi(2));
            let var = &qa2 * &inv * qg2.transpose();
            let r = self.blocks[b].layer.range();
            from_mat(&var, &mut full[r]);
        }
        for (&(_, i), v) in self.other.iter().zip(self.other_prec()?) {
            full[i] = 1.0 / v;
        }
        Ok(self
            .gather(&full)
            .into_iter()
            .map(|v| (temperature * v.max(0.0)).sqrt())
            .collect())
    }

    /// `T P⁻¹ v` for `v` over the subset (ravel order), without forming `P⁻¹`: per
    /// layer `Q_A [(Q_Aᵀ V Q_G) ⊘ (λ + δ)] Q_Gᵀ`.
    pub fn cov_vec(&self, v: &[f64], temperature: f64) -> Result<Vec<f64>> {
        check_temperature(temperature)?;
        if v.len() != self.subset.len() {
            return Err(Error::DimensionMismatch {
                what: "KFAC covariance-vector product (subset size)",
                expected: self.subset.len(),
                got: v.len(),
            });
        }
        let eig = self.eig()?;
        let mut full = vec![0.0; self.params.len()];
        for (&i, &x) in self.subset.indices().iter().zip(v) {
            full[i] = x;
        }
        for (b, e) in eig.iter().enumerate() {
            let lam = self.prec_eigs(b, e)?;
            let l = self.blocks[b].layer;
            let r = l.range();
            let x = to_mat(&full[r.clone()], l.rows(), l.n_out);
            let mut y = e.qa.transpose() * &x * &e.qg;
            for p in 0..y.nrows() {
                for q in 0..y.ncols() {
                    y[(p, q)] *= temperature / lam[(p, q)];
                }
            }
            let out = &e.qa * &y * e.qg.transpose();
            from_mat(&out, &mut full[r]);
        }
        for (&(_, i), p) in self.other.iter().zip(self.other_prec()?) {
            full[i] *= temperature / p;
        }
        Ok(self.gather(&full))
    }

    /// `n` draws from `N(θ*, T P⁻¹)` (parameters outside the subset fixed at θ*): per
    /// layer `sqrt(T) Q_A [Ξ ⊘ sqrt(λ + δ)] Q_Gᵀ` with standard normal `Ξ`.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<Vec<Params>> {
        check_temperature(temperature)?;
        let eig = self.eig()?;
        let lams = eig
            .iter()
            .enumerate()
            .map(|(b, e)| self.prec_eigs(b, e))
            .collect::<Result<Vec<_>>>()?;
        let other = self.other_prec()?;
        let scale = temperature.sqrt();
        let mut xi = vec![0.0; self.subset.len()];
        let mut full = vec![0.0; self.params.len()];
        let mut draws = Vec::with_capacity(n);
        for _ in 0..n {
            fill_standard_normal(rng, &mut xi);
            for (&i, &z) in self.subset.indices().iter().zip(&xi) {
                full[i] = z;
            }
            let mut p = self.params.clone();
            let vals = p.values_mut();
            for ((blk, e), lam) in self.blocks.iter().zip(eig).zip(&lams) {
                let l = blk.layer;
                let r = l.range();
                let mut y = to_mat(&full[r.clone()], l.rows(), l.n_out);
                for a in 0..y.nrows() {
                    for b in 0..y.ncols() {
                        y[(a, b)] *= scale / lam[(a, b)].sqrt();
                    }
                }
                let x = &e.qa * &y * e.qg.transpose();
                let c = l.n_out;
                for a in 0..x.nrows() {
                    for b in 0..c {
                        vals[l.offset + a * c + b] += x[(a, b)];
                    }
                }
            }
            for (&(_, i), v) in self.other.iter().zip(&other) {
                vals[i] += scale * full[i] / v.sqrt();
            }
            draws.push(p);
        }
        Ok(draws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::{cholesky, spd_inverse, FnOutputModel, OutputLikelihood};
    use crate::laplace::{DenseGgnLaplace, LaplaceConfig};
    use langevin_core::{chain_rng, ParamLayout};
    use rand::Rng;

    /// `y = x·w + b` with one output and Gaussian noise σ: a batch is its rows of `x`.
    struct LinearGauss {
        sigma: f64,
    }

    impl KronFactors for LinearGauss {
        type Batch = Vec<[f64; 3]>;
        fn kron_structure(&self) -> KronStructure {
            KronStructure {
                layers: vec![KronLayer {
                    offset: 0,
                    n_in: 3,
                    n_out: 1,
                    bias: true,
                }],
                other: vec![],
            }
        }
        fn kron_factors(&self, _p: &Params, xs: &Vec<[f64; 3]>) -> Result<KronBatch> {
            let mut a = vec![0.0; 16];
            for x in xs {
                let xt = [x[0], x[1], x[2], 1.0];
                for i in 0..4 {
                    for j in 0..4 {
                        a[i * 4 + j] += xt[i] * xt[j];
                    }
                }
            }
            Ok(KronBatch {
                n: xs.len(),
                a: vec![a],
                g: vec![vec![xs.len() as f64 / self.sigma.powi(2)]],
                other: vec![],
            })
        }
    }

    fn rows(n: usize, seed: u64) -> Vec<[f64; 3]> {
        let mut rng = chain_rng(seed, 7);
        (0..n)
            .map(|_| {
                [
                    rng.random::<f64>() * 2.0 - 0.5,
                    rng.random::<f64>() - 1.0,
                    rng.random::<f64>() * 3.0,
                ]
            })
            .collect()
    }

    fn rand_psd(n: usize, rank: usize, rng: &mut impl Rng) -> Vec<f64> {
        let r: Vec<f64> = (0..n * rank).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..rank).map(|t| r[i * rank + t] * r[j * rank + t]).sum();
            }
        }
        a
    }

    fn kron(a: &[f64], ra: usize, g: &[f64], rg: usize) -> Vec<f64> {
        let n = ra * rg;
        let mut k = vec![0.0; n * n];
        for i in 0..ra {
            for j in 0..ra {
                for p in 0..rg {
                    for q in 0..rg {
                        k[(i * rg + p) * n + j * rg + q] = a[i * ra + j] * g[p * rg + q];
                    }
                }
            }
        }
        k
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
    }

    /// For one linear layer with a Gaussian likelihood and one output, KFAC is exact
    /// (`A ⊗ G / N = X̃ᵀX̃/σ²`): sds, covariance-vector products and the moments of the
    /// draws equal the dense GGN Laplace's, with the factors accumulated over two batches.
    #[test]
    fn a_gaussian_linear_layer_matches_the_dense_ggn_laplace() {
        let sigma = 0.7;
        let delta = 0.3;
        let data = rows(40, 1);
        let (b1, b2) = (data[..25].to_vec(), data[25..].to_vec());
        let layout = ParamLayout::new([("w", vec![3, 1]), ("b", vec![1])]).unwrap();
        let theta = Params::new(layout, vec![0.4, -1.0, 0.2, 0.8]).unwrap();
        let cfg = LaplaceConfig {
            init_prec_diag: delta,
            subset: None,
        };
        let kf = KronLaplace::new(LinearGauss { sigma }, cfg.clone()).unwrap();
        let dense_model = FnOutputModel::new(
            1,
            OutputLikelihood::Gaussian {
                variance: sigma * sigma,
            },
            |t: &[f64], xs: &Vec<[f64; 3]>| {
                let out = xs
                    .iter()
                    .map(|x| t[0] * x[0] + t[1] * x[1] + t[2] * x[2] + t[3])
                    .collect();
                let jac = xs.iter().flat_map(|x| [x[0], x[1], x[2], 1.0]).collect();
                (out, jac)
            },
        )
        .unwrap();
        let dense = DenseGgnLaplace::new(&dense_model, cfg).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = kf.init(theta.clone(), &mut rng).unwrap();
        let mut t = dense.init(theta.clone(), &mut rng).unwrap();
        for b in [&b1, &b2] {
            kf.step(&mut s, b, &mut rng).unwrap();
            dense.step(&mut t, b, &mut rng).unwrap();
        }
        assert_eq!(s.n_examples(), 40);
        assert_eq!(s.step, 2);
        // The explicit product equals the dense GGN precision (minus the prior).
        let b = &s.blocks()[0];
        let k = kron(&b.a_sum, 4, &b.g_sum, 1);
        for (i, (kv, pv)) in k.iter().zip(&t.prec).enumerate() {
            let pv = pv - if i % 5 == 0 { delta } else { 0.0 };
            assert!(close(kv / 40.0, pv, 1e-12), "{i}: {kv} vs {pv}");
        }
        for temp in [1.0, 0.25] {
            let cov = t.covariance(temp).unwrap();
            let sd = s.sd(temp).unwrap();
            for j in 0..4 {
                assert!(close(sd[j], cov[j * 5].sqrt(), 1e-9), "sd {j}");
                let mut e = vec![0.0; 4];
                e[j] = 1.0;
                let cv = s.cov_vec(&e, temp).unwrap();
                for i in 0..4 {
                    assert!(
                        (cv[i] - cov[i * 4 + j]).abs() <= 1e-9 * cov[j * 5],
                        "cov_vec {i},{j}: {} vs {}",
                        cv[i],
                        cov[i * 4 + j]
                    );
                }
            }
        }
        // Draws: mean within 5 Monte Carlo standard errors, covariance entries within
        // 5 standard errors sqrt((Σ_ii Σ_jj + Σ_ij²)/n) of the dense covariance.
        let temp = 0.5;
        let cov = t.covariance(temp).unwrap();
        let n = 20_000;
        for seed in 0..3 {
            let draws = s.sample(n, temp, &mut chain_rng(seed, 3)).unwrap();
            let mean: Vec<f64> = (0..4)
                .map(|j| draws.iter().map(|p| p.values()[j]).sum::<f64>() / n as f64)
                .collect();
            for j in 0..4 {
                let se = (cov[j * 5] / n as f64).sqrt();
                assert!((mean[j] - theta.values()[j]).abs() < 5.0 * se, "mean {j}");
                for i in 0..4 {
                    let c = draws
                        .iter()
                        .map(|p| (p.values()[i] - mean[i]) * (p.values()[j] - mean[j]))
                        .sum::<f64>()
                        / (n - 1) as f64;
                    let se = ((cov[i * 5] * cov[j * 5] + cov[i * 4 + j].powi(2)) / n as f64).sqrt();
                    assert!(
                        (c - cov[i * 4 + j]).abs() < 5.0 * se,
                        "seed {seed} cov {i},{j}: {c} vs {}",
                        cov[i * 4 + j]
                    );
                }
            }
        }
    }

    /// Two layers (one without bias) and one other parameter from random factors: the
    /// curvature eigenvalues are those of the explicit Kronecker products, and
    /// `log_det`, `sd` and `cov_vec` agree with the explicit `d × d` precision.
    #[test]
    fn eigenvalues_log_det_and_products_match_the_explicit_kronecker_product() {
        let mut rng = chain_rng(5, 0);
        // layer 0: 3 inputs + bias → 2 outputs (8 params), other (1), layer 1: 2 → 3, no bias (6).
        let l0 = KronLayer {
            offset: 0,
            n_in: 3,
            n_out: 2,
            bias: true,
        };
        let l1 = KronLayer {
            offset: 9,
            n_in: 2,
            n_out: 3,
            bias: false,
        };
        let (a0, g0) = (rand_psd(4, 6, &mut rng), rand_psd(2, 2, &mut rng));
        let (a1, g1) = (rand_psd(2, 1, &mut rng), rand_psd(3, 3, &mut rng));
        let n_ex = 12u64;
        let dim = 15;
        let theta: Vec<f64> = (0..dim).map(|i| 0.1 * i as f64 - 0.5).collect();
        let p = Params::from_vec(theta.clone());
        let s0 = KronLaplaceState::from_factors(
            p,
            vec![(l0, a0.clone(), g0.clone()), (l1, a1.clone(), g1.clone())],
            vec![(8, 3.5)],
            n_ex,
            0.0,
        )
        .unwrap();
        assert_eq!(s0.subset.len(), dim);
        // Explicit curvature (without δ).
        let mut h = vec![0.0; dim * dim];
        for (l, a, g) in [(l0, &a0, &g0), (l1, &a1, &g1)] {
            let k = kron(a, l.rows(), g, l.n_out);
            let m = l.len();
            for i in 0..m {
                for j in 0..m {
                    h[(l.offset + i) * dim + l.offset + j] = k[i * m + j] / n_ex as f64;
                }
            }
        }
        h[8 * dim + 8] = 3.5;
        let mut want = crate::laplace::marglik::curvature_eigenvalues(
            crate::laplace::marglik::Curvature::Dense { h: &h, m: dim },
        )
        .unwrap();
        let mut got = s0.curvature_eigenvalues().unwrap();
        // The block of layer 1 has rank 1·3: 3 zero eigenvalues.
        assert_eq!(got.iter().filter(|v| v.abs() < 1e-12).count(), 3);
        want.sort_by(f64::total_cmp);
        got.sort_by(f64::total_cmp);
        let top = want[dim - 1];
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() <= 1e-10 * top, "{a} vs {b}");
        }
        // δ = 0 with zero curvature directions is not positive definite.
        assert!(matches!(s0.sd(1.0), Err(Error::NotPositiveDefinite { .. })));
        assert!(s0.sample(1, 1.0, &mut rng).is_err());
        let delta = 0.8;
        let s = s0.with_prior_precision(delta).unwrap();
        let mut prec = h.clone();
        for i in 0..dim {
            prec[i * dim + i] += delta;
        }
        let l = cholesky(&prec, dim, "test").unwrap();
        let logdet: f64 = (0..dim).map(|i| 2.0 * l[i * dim + i].ln()).sum();
        assert!(close(s.log_det().unwrap(), logdet, 1e-11));
        let temp = 0.3;
        let cov = spd_inverse(&prec, dim, "test").unwrap();
        let sd = s.sd(temp).unwrap();
        let v: Vec<f64> = (0..dim).map(|i| (i as f64).sin()).collect();
        let cv = s.cov_vec(&v, temp).unwrap();
        for i in 0..dim {
            assert!(
                close(sd[i], (temp * cov[i * dim + i]).sqrt(), 1e-10),
                "sd {i}"
            );
            let want: f64 = (0..dim).map(|j| temp * cov[i * dim + j] * v[j]).sum();
            assert!(
                (cv[i] - want).abs() < 1e-10,
                "cov_vec {i}: {} vs {want}",
                cv[i]
            );
        }
        assert_eq!(s.theta(), theta);
        // JSON round trip (the cache is not serialised, the decomposition is redone).
        let js = serde_json::to_string(&s).unwrap();
        let back: KronLaplaceState = serde_json::from_str(&js).unwrap();
        assert_eq!(back, s);
        assert!(back.log_posterior.is_nan());
        assert_eq!(back.sd(temp).unwrap(), sd);
    }

    /// A two-layer toy (batch-independent factors) with a subset: the unnamed layer is
    /// fixed at θ* in the draws, and the rest is the same as the full state's block.
    struct Toy;
    impl KronFactors for Toy {
        type Batch = ();
        fn kron_structure(&self) -> KronStructure {
            KronStructure {
                layers: vec![
                    KronLayer {
                        offset: 0,
                        n_in: 2,
                        n_out: 2,
                        bias: true,
                    },
                    KronLayer {
                        offset: 6,
                        n_in: 2,
                        n_out: 1,
                        bias: true,
                    },
                ],
                other: vec![9],
            }
        }
        fn kron_factors(&self, _p: &Params, _b: &()) -> Result<KronBatch> {
            let mut rng = chain_rng(9, 9);
            Ok(KronBatch {
                n: 4,
                a: vec![rand_psd(3, 3, &mut rng), rand_psd(3, 3, &mut rng)],
                g: vec![rand_psd(2, 2, &mut rng), vec![2.0]],
                other: vec![8.0],
            })
        }
    }

    fn toy_params() -> Params {
        let layout = ParamLayout::new([
            ("l0.weight", vec![2, 2]),
            ("l0.bias", vec![2]),
            ("l1.weight", vec![2, 1]),
            ("l1.bias", vec![1]),
            ("log_noise_sd", vec![]),
        ])
        .unwrap();
        Params::new(layout, (0..10).map(|i| i as f64).collect()).unwrap()
    }

    #[test]
    fn subsets_keep_whole_layers_and_fix_the_rest() {
        let mut rng = chain_rng(1, 1);
        let cfg = |subset: Option<Vec<&str>>| LaplaceConfig {
            init_prec_diag: 0.5,
            subset: subset.map(|s| s.into_iter().map(String::from).collect()),
        };
        let full = KronLaplace::new(Toy, cfg(None)).unwrap();
        let mut sf = full.init(toy_params(), &mut rng).unwrap();
        full.step(&mut sf, &(), &mut rng).unwrap();
        let last = KronLaplace::new(Toy, cfg(Some(vec!["l1.bias", "l1.weight"]))).unwrap();
        let mut sl = last.init(toy_params(), &mut rng).unwrap();
        last.step(&mut sl, &(), &mut rng).unwrap();
        assert_eq!(sl.subset.indices(), &[6, 7, 8]);
        let (sd_f, sd_l) = (sf.sd(1.0).unwrap(), sl.sd(1.0).unwrap());
        assert_eq!(&sd_f[6..9], &sd_l[..]);
        assert!(close(sd_f[9], (1.0f64 / 8.5).sqrt(), 1e-14));
        for d in sl.sample(5, 1.0, &mut rng).unwrap() {
            assert_eq!(&d.values()[..6], &toy_params().values()[..6]);
            assert_eq!(d.values()[9], 9.0);
            assert!(d.values()[6..9] != toy_params().values()[6..9]);
        }
        // Part of a layer, a name that does not exist: errors.
        let bad = KronLaplace::new(Toy, cfg(Some(vec!["l0.weight"]))).unwrap();
        assert!(bad.init(toy_params(), &mut rng).is_err());
        let bad = KronLaplace::new(Toy, cfg(Some(vec!["nope"]))).unwrap();
        assert!(bad.init(toy_params(), &mut rng).is_err());
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        let mut rng = chain_rng(0, 0);
        for d in [-1.0, f64::NAN, f64::INFINITY] {
            let c = LaplaceConfig {
                init_prec_diag: d,
                subset: None,
            };
            assert!(matches!(
                KronLaplace::new(Toy, c),
                Err(Error::InvalidConfig { .. })
            ));
        }
        let t = KronLaplace::new(Toy, LaplaceConfig::default()).unwrap();
        let mut s = t.init(toy_params(), &mut rng).unwrap();
        // No data and no prior: not positive definite.
        assert!(matches!(s.sd(1.0), Err(Error::NotPositiveDefinite { .. })));
        t.step(&mut s, &(), &mut rng).unwrap();
        assert!(s.clone().with_prior_precision(-0.1).is_err());
        assert!(s.clone().with_prior_precision(f64::NAN).is_err());
        let s = s.with_prior_precision(1.0).unwrap();
        assert!(s.sd(-1.0).is_err());
        assert!(s.sample(1, f64::NAN, &mut rng).is_err());
        assert!(s.cov_vec(&[1.0; 3], 1.0).is_err());
        // A parameter neither in a layer nor in `other`; overlapping blocks.
        let p11 = Params::from_vec(vec![0.0; 11]);
        assert!(t.init(p11, &mut rng).is_err());
        let l = KronLayer {
            offset: 0,
            n_in: 1,
            n_out: 2,
            bias: true,
        };
        let over = KronLaplaceState::from_factors(
            Params::from_vec(vec![0.0; 4]),
            vec![(l, vec![1.0; 4], vec![1.0; 4])],
            vec![(3, 1.0)],
            1,
            1.0,
        );
        assert!(over.is_err());
        let short = KronLaplaceState::from_factors(
            Params::from_vec(vec![0.0; 4]),
            vec![(l, vec![1.0; 3], vec![1.0; 4])],
            vec![],
            1,
            1.0,
        );
        assert!(short.is_err());
    }
}
