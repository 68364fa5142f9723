//! Kronecker factors of the GGN (KFLR, exact: the output likelihood's Hessian square
//! roots backpropagated; see [`langevin::laplace::kfac`]) for the models of this crate:
//! the MLP ([`MlpDensity`], every `layer{l}` a KFAC layer) and the single-layer linear,
//! logistic and softmax models (`weights` and `intercept`, one layer).
//!
//! Output likelihoods (as [`crate::curvature::output_model`]): Gaussian with the fixed
//! noise sd, or with `σ = exp(log_noise_sd)` when it is learned, whose own curvature is
//! the diagonal GGN `2` per example (the Fisher information of `N(f, σ²)` in `log σ`, a
//! [`KronStructure::other`] parameter); Bernoulli-logit (`p(1 − p)`);
//! categorical-softmax (`diag p − p pᵀ`, square-root columns `√p_c (e_c − p)`).

use candle_core::DType;
use langevin::laplace::{KronBatch, KronFactors, KronLayer, KronStructure};
use langevin_core::{Error, Params, Result};

use crate::mlp_fast::{MlpDensity, MlpLikelihood};
use crate::model::{Batch, Model, ModelKind, Noise, Task};

/// The output likelihood whose Hessian square root starts the backward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum KronOutput {
    Categorical,
    Bernoulli,
    /// One output with noise sd `exp(log_sd)`; `learned` adds the `log σ` diagonal.
    Gaussian {
        log_sd: f64,
        learned: bool,
    },
}

/// KFLR factors of a ReLU MLP `z_l = h_{l-1} W_l + b_l` (widths `[d, …, k]`, layer `l`'s
/// weight at `w_off[l]` followed by its bias) on `m` rows `x` (row-major `m × d`).
pub(crate) fn kflr(
    widths: &[usize],
    w_off: &[usize],
    theta: &[f64],
    x: Vec<f64>,
    m: usize,
    out: KronOutput,
) -> KronBatch {
    let nl = widths.len() - 1;
    let k = widths[nl];
    // Forward: acts[l] = h_l (acts[0] = x, acts[nl] = z_L).
    let mut acts = vec![x];
    for l in 0..nl {
        let (din, dout) = (widths[l], widths[l + 1]);
        let w = &theta[w_off[l]..w_off[l] + din * dout];
        let b = &theta[w_off[l] + din * dout..w_off[l] + (din + 1) * dout];
        let input = &acts[l];
        let mut z = b.repeat(m);
        for i in 0..m {
            let zi = &mut z[i * dout..(i + 1) * dout];
            for (j, &a) in input[i * din..(i + 1) * din].iter().enumerate() {
                if a != 0.0 {
                    for (zv, &wv) in zi.iter_mut().zip(&w[j * dout..(j + 1) * dout]) {
                        *zv += a * wv;
                    }
                }
            }
        }
        if l + 1 < nl {
            // As the gradient: NaN stays (and is reported), negatives become 0.
            z.iter_mut()
                .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
        }
        acts.push(z);
    }
    // Square roots of the output Hessians: `c` columns per example, stored as rows
    // (i·c + col) of an (m·c) × k matrix.
    let z = &acts[nl];
    let (c, mut s) = match out {
        KronOutput::Categorical => {
            let mut s = vec![0.0; m * k * k];
            for i in 0..m {
                let zi = &z[i * k..(i + 1) * k];
                let mx = zi.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f64> = zi.iter().map(|v| (v - mx).exp()).collect();
                let tot: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|v| v / tot).collect();
                for col in 0..k {
                    let sq = p[col].sqrt();
                    let row = &mut s[(i * k + col) * k..(i * k + col + 1) * k];
                    for (o, (r, pv)) in row.iter_mut().zip(p.iter()).enumerate() {
                        *r = sq * (f64::from(u8::from(o == col)) - pv);
                    }
                }
            }
            (k, s)
        }
        KronOutput::Bernoulli => {
            let s = z
                .iter()
                .map(|&f| {
                    let p = 1.0 / (1.0 + (-f).exp());
                    (p * (1.0 - p)).sqrt()
                })
                .collect();
            (1, s)
        }
        KronOutput::Gaussian { log_sd, .. } => (1, vec![(-log_sd).exp(); m]),
    };
    // Backward: per layer G = Sᵀ S, A = Σ ããᵀ; then S ← (S W_lᵀ) ⊙ [h_{l-1} > 0].
    let mut a_out = vec![Vec::new(); nl];
    let mut g_out = vec![Vec::new(); nl];
    for l in (0..nl).rev() {
        let (din, dout) = (widths[l], widths[l + 1]);
        let mut g = vec![0.0; dout * dout];
        for row in s.chunks_exact(dout) {
            for (p, &rp) in row.iter().enumerate() {
                if rp != 0.0 {
                    for (gv, &rq) in g[p * dout..(p + 1) * dout].iter_mut().zip(row) {
                        *gv += rp * rq;
                    }
                }
            }
        }
        let r = din + 1;
        let mut a = vec![0.0; r * r];
        for row in acts[l].chunks_exact(din) {
            for (p, &hp) in row.iter().chain(std::iter::once(&1.0)).enumerate() {
                if hp != 0.0 {
                    for (av, &hq) in a[p * r..(p + 1) * r]
                        .iter_mut()
                        .zip(row.iter().chain(std::iter::once(&1.0)))
                    {
                        *av += hp * hq;
                    }
                }
            }
        }
        a_out[l] = a;
        g_out[l] = g;
        if l > 0 {
            let w = &theta[w_off[l]..w_off[l] + din * dout];
            let h = &acts[l];
            let mut prev = vec![0.0; m * c * din];
            for (rr, (srow, prow)) in s
                .chunks_exact(dout)
                .zip(prev.chunks_exact_mut(din))
                .enumerate()
            {
                let hi = &h[(rr / c) * din..(rr / c + 1) * din];
                for (j, pv) in prow.iter_mut().enumerate() {
                    if hi[j] > 0.0 {
                        *pv = srow
                            .iter()
                            .zip(&w[j * dout..(j + 1) * dout])
                            .map(|(a, b)| a * b)
                            .sum();
                    }
                }
            }
            s = prev;
        }
    }
    let other = match out {
        KronOutput::Gaussian { learned: true, .. } => vec![2.0 * m as f64],
        _ => vec![],
    };
    KronBatch {
        n: m,
        a: a_out,
        g: g_out,
        other,
    }
}

/// The layers of `widths` starting at flat index 0 (weight then bias per layer).
pub(crate) fn layers(widths: &[usize]) -> Vec<KronLayer> {
    let mut off = 0;
    widths
        .windows(2)
        .map(|w| {
            let l = KronLayer {
                offset: off,
                n_in: w[0],
                n_out: w[1],
                bias: true,
            };
            off += l.len();
            l
        })
        .collect()
}

/// A batch's features as f64 rows of width `d`; returns `(x, rows)`.
pub(crate) fn features(batch: &Batch, d: usize) -> Result<(Vec<f64>, usize)> {
    let (m, cols) = batch.x.dims2()?;
    if cols != d {
        return Err(Error::DimensionMismatch {
            what: "batch features (columns)",
            expected: d,
            got: cols,
        });
    }
    if m == 0 {
        return Err(Error::Data("empty batch".into()));
    }
    let x = batch
        .x
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok((x, m))
}

/// Kronecker factors of any model of this crate (see the module docs).
pub enum ModelKron {
    Mlp(MlpDensity),
    /// A single linear layer `[d, k]` (linear, logistic, softmax).
    Glm {
        widths: [usize; 2],
        out: GlmOutput,
        /// Flat index of `log_noise_sd` when learned.
        log_noise: Option<usize>,
    },
}

/// The output of a single-layer model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GlmOutput {
    Gaussian { sd: f64 },
    Bernoulli,
    Categorical,
}

/// The KFAC view of `model` (f64).
pub fn kron_model(model: &Model) -> crate::Result<ModelKron> {
    let spec = model.spec();
    if spec.kind == ModelKind::Mlp {
        return Ok(ModelKron::Mlp(MlpDensity::for_model(model, DType::F64)?));
    }
    let d = spec.feature_names.len();
    let log_noise = model.layout().range("log_noise_sd").map(|r| r.start);
    let out = match (spec.kind, spec.task) {
        (_, Task::Regression) => GlmOutput::Gaussian {
            sd: match spec.noise {
                Noise::Fixed(s) => s,
                Noise::Learned => 1.0,
            },
        },
        (ModelKind::Logistic, _) => GlmOutput::Bernoulli,
        _ => GlmOutput::Categorical,
    };
    let k = match spec.kind {
        ModelKind::Softmax => model.n_outputs(),
        _ => 1,
    };
    let l = KronLayer {
        offset: 0,
        n_in: d,
        n_out: k,
        bias: true,
    };
    if model.layout().len() != l.len() + usize::from(log_noise.is_some()) {
        return Err(Error::DimensionMismatch {
            what: "single-layer model parameters",
            expected: l.len() + usize::from(log_noise.is_some()),
            got: model.layout().len(),
        }
        .into());
    }
    Ok(ModelKron::Glm {
        widths: [d, k],
        out,
        log_noise,
    })
}

impl KronFactors for ModelKron {
    type Batch = Batch;

    fn kron_structure(&self) -> KronStructure {
        match self {
            ModelKron::Mlp(m) => m.kron_structure(),
            ModelKron::Glm {
                widths, log_noise, ..
            } => KronStructure {
                layers: layers(widths),
                other: log_noise.iter().copied().collect(),
            },
        }
    }

    fn kron_factors(&self, params: &Params, batch: &Batch) -> Result<KronBatch> {
        match self {
            ModelKron::Mlp(m) => m.kron_factors(params, batch),
            ModelKron::Glm {
                widths,
                out,
                log_noise,
            } => {
                let theta = params.values();
                let want = widths[1] * (widths[0] + 1) + usize::from(log_noise.is_some());
                if theta.len() != want {
                    return Err(Error::DimensionMismatch {
                        what: "single-layer model parameters",
                        expected: want,
                        got: theta.len(),
                    });
                }
                let (x, m) = features(batch, widths[0])?;
                let o = match (*out, log_noise) {
                    (GlmOutput::Gaussian { .. }, Some(i)) => KronOutput::Gaussian {
                        log_sd: theta[*i],
                        learned: true,
                    },
                    (GlmOutput::Gaussian { sd }, None) => KronOutput::Gaussian {
                        log_sd: sd.ln(),
                        learned: false,
                    },
                    (GlmOutput::Bernoulli, _) => KronOutput::Bernoulli,
                    (GlmOutput::Categorical, _) => KronOutput::Categorical,
                };
                Ok(kflr(widths, &[0], theta, x, m, o))
            }
        }
    }
}

impl KronFactors for MlpDensity {
    type Batch = Batch;

    /// Every `layer{l}` (weight `[in, out]` then bias) is a layer; a learned
    /// `log_noise_sd` is an other parameter (diagonal GGN 2 per example).
    fn kron_structure(&self) -> KronStructure {
        KronStructure {
            layers: layers(self.widths()),
            other: match self.likelihood() {
                MlpLikelihood::GaussianLearned => vec![self.layout().len() - 1],
                _ => vec![],
            },
        }
    }

    /// KFLR in f64 whatever the density's dtype (the categorical output Hessian is
    /// `diag p − p pᵀ`, as [`crate::curvature::output_model`]'s; the targets are not read).
    fn kron_factors(&self, params: &Params, batch: &Batch) -> Result<KronBatch> {
        let theta = params.values();
        if theta.len() != self.layout().len() {
            return Err(Error::DimensionMismatch {
                what: "MLP parameter vector",
                expected: self.layout().len(),
                got: theta.len(),
            });
        }
        let widths = self.widths();
        let (x, m) = features(batch, widths[0])?;
        let out = match self.likelihood() {
            MlpLikelihood::Categorical { .. } => KronOutput::Categorical,
            MlpLikelihood::GaussianFixed { sd } => KronOutput::Gaussian {
                log_sd: sd.ln(),
                learned: false,
            },
            MlpLikelihood::GaussianLearned => KronOutput::Gaussian {
                log_sd: theta[theta.len() - 1],
                learned: true,
            },
        };
        let offs: Vec<usize> = layers(widths).iter().map(|l| l.offset).collect();
        Ok(kflr(widths, &offs, theta, x, m, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::output_model;
    use crate::model::ModelSpec;
    use candle_core::Device;
    use langevin::curvature::{ggn, OutputModel};
    use rand::Rng;

    fn model(kind: ModelKind, hidden: &[usize], task: Task, noise: Noise) -> Model {
        Model::new(ModelSpec {
            kind,
            task,
            feature_names: (0..3).map(|i| format!("f{i}")).collect(),
            hidden: hidden.to_vec(),
            prior_sd: 1.3,
            noise,
            n_train: 50,
        })
        .unwrap()
    }

    /// Random rows, targets and parameters (every parameter perturbed off 0).
    fn data(m: &Model, rows: usize, seed: u64) -> (Batch, Params) {
        let mut rng = langevin_core::chain_rng(seed, 3);
        let mut x = vec![0.0; rows * 3];
        langevin_core::rng::fill_standard_normal(&mut rng, &mut x);
        let y: Vec<f64> = (0..rows)
            .map(|_| match m.spec().task {
                Task::Classification { n_classes } => rng.random_range(0..n_classes) as f64,
                Task::Regression => rng.random_range(-2.0..2.0),
            })
            .collect();
        let mut p = m.init(&mut rng);
        for v in p.values_mut().iter_mut() {
            *v += 0.3 * rng.random_range(-1.0..1.0);
        }
        (m.batch(&x, &y, DType::F64, &Device::Cpu).unwrap(), p)
    }

    fn assert_close(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-300f64, |a, v| a.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-10 * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// Brute force from the candle per-example Jacobians `Jᵢ` (k × dim) and output
    /// Hessians `Hᵢ` of [`output_model`]: for layer `l` (weight `w`, bias `b`) with
    /// inputs `inputs[i]`, `A = Σ ããᵀ` and `G = Σ Jᵢ[b]ᵀ Hᵢ Jᵢ[b]` (∂f/∂b = ∂f/∂z), and
    /// the weight block of `Jᵢ` must be `aᵢ ⊗ Jᵢ[b]` (the structure KFAC relies on).
    fn brute(
        m: &Model,
        p: &Params,
        b: &Batch,
        (w, bias): (&str, &str),
        inputs: &[Vec<f64>],
    ) -> (Vec<f64>, Vec<f64>) {
        let om = output_model(m);
        let jac = om.forward_jacobian(p, b).unwrap();
        let h = om.output_hessians(&jac, b).unwrap();
        let (k, dim) = (jac.k, jac.dim);
        let (wr, br) = (
            m.layout().range(w).unwrap(),
            m.layout().range(bias).unwrap(),
        );
        let (din, dout) = (wr.len() / br.len(), br.len());
        let r = din + 1;
        let (mut a, mut g) = (vec![0.0; r * r], vec![0.0; dout * dout]);
        for (i, ai) in inputs.iter().enumerate() {
            let blk = jac.block(i);
            let jb = |c: usize, o: usize| blk[c * dim + br.start + o];
            for c in 0..k {
                for j in 0..din {
                    for o in 0..dout {
                        let jw = blk[c * dim + wr.start + j * dout + o];
                        assert!((jw - ai[j] * jb(c, o)).abs() < 1e-10, "weight Jacobian");
                    }
                }
            }
            let at: Vec<f64> = ai.iter().copied().chain([1.0]).collect();
            for p in 0..r {
                for q in 0..r {
                    a[p * r + q] += at[p] * at[q];
                }
            }
            let hi = &h[i * k * k..(i + 1) * k * k];
            for p in 0..dout {
                for q in 0..dout {
                    for c in 0..k {
                        for e in 0..k {
                            g[p * dout + q] += jb(c, p) * hi[c * k + e] * jb(e, q);
                        }
                    }
                }
            }
        }
        (a, g)
    }

    fn rows_of(t: &candle_core::Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
    }

    /// One-hidden-layer MLPs (3 → 4 → k), a Gaussian regression with one output and a
    /// 3-class classifier: the KFLR factors equal the brute-force sums over per-example
    /// Jacobians (candle autograd), to 1e-10 relative. The hidden activations are read
    /// off the output layer's weight Jacobian (`∂f₀/∂W₁[j, 0] = hⱼ`).
    #[test]
    fn mlp_factors_equal_brute_force_sums_over_per_example_jacobians() {
        for task in [Task::Regression, Task::Classification { n_classes: 3 }] {
            let m = model(ModelKind::Mlp, &[4], task, Noise::Fixed(0.6));
            let (b, p) = data(&m, 7, 1);
            let km = kron_model(&m).unwrap();
            let st = km.kron_structure();
            assert_eq!(st.layers.len(), 2);
            assert!(st.other.is_empty());
            let kb = km.kron_factors(&p, &b).unwrap();
            assert_eq!(kb.n, 7);
            let x = rows_of(&b.x);
            let (a0, g0) = brute(&m, &p, &b, ("layer0.weight", "layer0.bias"), &x);
            let jac = output_model(&m).forward_jacobian(&p, &b).unwrap();
            let w1 = m.layout().range("layer1.weight").unwrap();
            let k = jac.k;
            let h: Vec<Vec<f64>> = (0..7)
                .map(|i| (0..4).map(|j| jac.block(i)[w1.start + j * k]).collect())
                .collect();
            assert!(h.iter().flatten().any(|&v| v > 0.0));
            let (a1, g1) = brute(&m, &p, &b, ("layer1.weight", "layer1.bias"), &h);
            assert_close(&kb.a[0], &a0, "A0");
            assert_close(&kb.g[0], &g0, "G0");
            assert_close(&kb.a[1], &a1, "A1");
            assert_close(&kb.g[1], &g1, "G1");
        }
    }

    /// A learned noise sd: `log_noise_sd` is the other parameter with the diagonal GGN
    /// 2 per example (the output model's), and the output factor uses σ = exp(θ_last).
    #[test]
    fn learned_noise_is_a_diagonal_parameter() {
        let m = model(ModelKind::Mlp, &[4], Task::Regression, Noise::Learned);
        let (b, p) = data(&m, 5, 2);
        let km = kron_model(&m).unwrap();
        let last = m.n_params() - 1;
        assert_eq!(km.kron_structure().other, vec![last]);
        let kb = km.kron_factors(&p, &b).unwrap();
        let diag = langevin::curvature::diag_ggn(&output_model(&m), &p, &b).unwrap();
        assert_close(&kb.other, &[diag[last]], "log_noise_sd");
        assert_close(&kb.other, &[10.0], "log_noise_sd");
        let s2 = (2.0 * p.values()[last]).exp();
        assert_close(&kb.g[1], &[5.0 / s2], "G1");
    }

    /// The single-layer models: the brute force of the MLP test, and for linear regression
    /// (one output, Gaussian) KFAC is the exact GGN: `A ⊗ G / N = X̃ᵀX̃/σ²`.
    #[test]
    fn single_layer_models_and_the_exact_linear_gaussian_case() {
        for (kind, task) in [
            (ModelKind::Linear, Task::Regression),
            (ModelKind::Logistic, Task::Classification { n_classes: 2 }),
            (ModelKind::Softmax, Task::Classification { n_classes: 3 }),
        ] {
            let m = model(kind, &[], task, Noise::Fixed(0.6));
            let (b, p) = data(&m, 9, 4);
            let km = kron_model(&m).unwrap();
            let kb = km.kron_factors(&p, &b).unwrap();
            let (a, g) = brute(&m, &p, &b, ("weights", "intercept"), &rows_of(&b.x));
            assert_close(&kb.a[0], &a, "A");
            assert_close(&kb.g[0], &g, "G");
            if kind == ModelKind::Linear {
                let exact = ggn(&output_model(&m), &p, &b).unwrap();
                let d = m.n_params();
                let kr: Vec<f64> = (0..d * d)
                    .map(|ij| kb.a[0][ij] * kb.g[0][0] / 9.0)
                    .collect();
                assert_close(&kr, &exact, "A ⊗ G / N vs GGN");
            }
        }
        // A learned noise sd of a linear regression is the other parameter.
        let m = model(ModelKind::Linear, &[], Task::Regression, Noise::Learned);
        let km = kron_model(&m).unwrap();
        assert_eq!(km.kron_structure().other, vec![4]);
        assert_eq!(km.kron_structure().layers[0].len(), 4);
    }

    #[test]
    fn bad_batches_are_errors() {
        let m = model(ModelKind::Mlp, &[4], Task::Regression, Noise::Fixed(1.0));
        let (b, p) = data(&m, 3, 0);
        let km = kron_model(&m).unwrap();
        assert!(km
            .kron_factors(&Params::from_vec(vec![0.0; 3]), &b)
            .is_err());
        let narrow = Batch {
            x: b.x.narrow(1, 0, 2).unwrap(),
            y: b.y.clone(),
        };
        assert!(km.kron_factors(&p, &narrow).is_err());
    }
}
