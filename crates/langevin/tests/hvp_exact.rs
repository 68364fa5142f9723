//! Exact Hessian- and GGN-vector products of candle models (double
//! backward), against f64 references.
//!
//! Every test first calls `enable_double_backward()`: candle reads
//! `CANDLE_GRAD_DO_NOT_DETACH` once per thread, on the thread's first
//! backward pass, and the test harness runs each test on a fresh thread.
//!
//! Tolerances come from f32 rounding: inputs (parameters, data, `v`) are
//! f32-representable, so the f32 model differs from the f64 reference only
//! by the rounding of its arithmetic. Unit roundoff is `ε = 6e-8`; a sum
//! over `n` terms and a few layers of products grows it to a few times
//! `√n · ε` in practice, so `1e-5` relative (about 170 ε) is the bound for
//! the exact path. The central-difference path on the same f32 model divides
//! gradient rounding (`ε ‖∇ℓ‖`) by its step `h = 1e-5`: its error is about
//! `1e-3` to `1e-2`, which the tests assert is *above* `1e-5`, i.e. it
//! misses the tolerance the exact path meets.

use candle_core::{DType, Device, Tensor};
use langevin::curvature::{
    ggnvp, ggnvp_via_jacobian, hessian_subset_with_method, hvp_finite_difference, hvp_with_method,
    CandleOutputModel, HvpMethod, OutputLikelihood, Subset,
};
use langevin_core::candle_density::enable_double_backward;
use langevin_core::{CandleDensity, FnDensity, ParamLayout, Params};
use rand::Rng;

const F32_TOL: f64 = 1e-5;

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// `len` values uniform in `[-s, s)`, rounded to f32 (exact in both dtypes).
fn f32_values(rng: &mut impl Rng, len: usize, s: f64) -> Vec<f64> {
    (0..len)
        .map(|_| f64::from(((rng.random::<f64>() * 2.0 - 1.0) * s) as f32))
        .collect()
}

struct Data {
    x: Vec<f64>,
    y: Vec<f64>,
    n: usize,
    p: usize,
}

impl Data {
    fn new(seed: u64, n: usize, p: usize) -> Self {
        let mut rng = langevin_core::chain_rng(seed, 0);
        let x = f32_values(&mut rng, n * p, 1.0);
        let y = (0..n).map(|i| f64::from(i % 2 == 0)).collect();
        Self { x, y, n, p }
    }

    fn tensors(&self, dtype: DType) -> (Tensor, Tensor) {
        let x = Tensor::from_vec(self.x.clone(), (self.n, self.p), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let y = Tensor::from_vec(self.y.clone(), self.n, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        (x, y)
    }
}

const PRIOR_PREC: f64 = 0.01; // 1 / (σ² N)

/// Bayesian logistic regression, batch-averaged:
/// `mean_i [yᵢ fᵢ − log(1 + e^{fᵢ})] − PRIOR_PREC ‖θ‖² / 2`, `f = X w + b`.
fn logistic(ts: &[Tensor], b: &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
    let f =
        b.0.matmul(&ts[0].unsqueeze(1)?)?
            .squeeze(1)?
            .broadcast_add(&ts[1])?;
    let softplus = (f.exp()? + 1.0)?.log()?;
    let ll = ((&b.1 * &f)? - softplus)?.mean_all()?;
    let prior = ((ts[0].sqr()?.sum_all()? + ts[1].sqr()?.sum_all()?)? * (0.5 * PRIOR_PREC))?;
    ll - prior
}

/// The analytic Hessian of [`logistic`] in f64:
/// `−(1/n) Σᵢ pᵢ(1 − pᵢ) x̃ᵢ x̃ᵢᵀ − PRIOR_PREC I`, `x̃ = (x, 1)`.
fn logistic_hessian(data: &Data, theta: &[f64]) -> Vec<f64> {
    let d = data.p + 1;
    let mut h = vec![0.0; d * d];
    for i in 0..data.n {
        let xi: Vec<f64> = data.x[i * data.p..(i + 1) * data.p]
            .iter()
            .copied()
            .chain([1.0])
            .collect();
        let f: f64 = xi.iter().zip(theta).map(|(a, b)| a * b).sum();
        let p = 1.0 / (1.0 + (-f).exp());
        let w = p * (1.0 - p) / data.n as f64;
        for a in 0..d {
            for c in 0..d {
                h[a * d + c] -= w * xi[a] * xi[c];
            }
        }
    }
    for a in 0..d {
        h[a * d + a] -= PRIOR_PREC;
    }
    h
}

fn matvec(h: &[f64], v: &[f64]) -> Vec<f64> {
    let d = v.len();
    (0..d)
        .map(|a| (0..d).map(|c| h[a * d + c] * v[c]).sum())
        .collect()
}

fn logistic_setup(seed: u64) -> (Data, Params, Vec<f64>) {
    let (n, p) = (200, 20);
    let data = Data::new(seed, n, p);
    let layout = ParamLayout::new([("w", vec![p]), ("b", vec![])]).unwrap();
    let mut rng = langevin_core::chain_rng(seed, 1);
    let theta = Params::new(layout, f32_values(&mut rng, p + 1, 0.5)).unwrap();
    let v = f32_values(&mut rng, p + 1, 1.0);
    (data, theta, v)
}

/// f32 logistic regression: the exact HVP is within 1e-5 of the analytic
/// f64 Hessian times `v`; central differences on the same f32 model are not
/// (see the module doc). The f64 model's exact HVP is within 1e-12.
#[test]
fn f32_logistic_hvp_is_exact_to_f32_rounding_and_finite_differences_are_not() {
    assert!(
        enable_double_backward(),
        "double backward must be available"
    );
    for seed in 0..3 {
        let (data, theta, v) = logistic_setup(seed);
        let reference = matvec(&logistic_hessian(&data, theta.values()), &v);

        let b32 = data.tensors(DType::F32);
        let d32 = CandleDensity::new(logistic);
        let (hv32, how) = hvp_with_method(&d32, &theta, &b32, &v).unwrap();
        assert_eq!(how, HvpMethod::Exact);
        let e_exact = rel_err(&hv32, &reference);
        assert!(e_exact < F32_TOL, "seed {seed}: f32 exact {e_exact:e}");

        let fd32 = hvp_finite_difference(&d32, &theta, &b32, &v).unwrap();
        let e_fd = rel_err(&fd32, &reference);
        assert!(
            e_fd > F32_TOL,
            "seed {seed}: f32 finite differences unexpectedly met 1e-5: {e_fd:e}"
        );

        let b64 = data.tensors(DType::F64);
        let d64 = CandleDensity::new(logistic).with_dtype(DType::F64);
        let (hv64, how) = hvp_with_method(&d64, &theta, &b64, &v).unwrap();
        assert_eq!(how, HvpMethod::Exact);
        let e64 = rel_err(&hv64, &reference);
        assert!(e64 < 1e-12, "seed {seed}: f64 exact {e64:e}");
    }
}

struct Mlp {
    din: usize,
    hidden: usize,
}

impl Mlp {
    fn layout(&self) -> ParamLayout {
        ParamLayout::new([
            ("w1", vec![self.din, self.hidden]),
            ("b1", vec![self.hidden]),
            ("w2", vec![self.hidden, 1]),
            ("b2", vec![1]),
        ])
        .unwrap()
    }
}

/// Regression MLP `din → hidden (tanh) → 1`, Gaussian likelihood with unit
/// variance and a Gaussian prior, batch-averaged.
fn mlp_log_post(ts: &[Tensor], b: &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
    let h = b.0.matmul(&ts[0])?.broadcast_add(&ts[1])?.tanh()?;
    let f = h.matmul(&ts[2])?.broadcast_add(&ts[3])?.squeeze(1)?;
    let ll = ((f - &b.1)?.sqr()?.mean_all()? * -0.5)?;
    let mut sq = ts[0].sqr()?.sum_all()?;
    for t in &ts[1..] {
        sq = (sq + t.sqr()?.sum_all()?)?;
    }
    ll - (sq * (0.5 * PRIOR_PREC))?
}

/// A tanh MLP (the Hessian has third-derivative terms the logistic model
/// lacks): f64 exact HVP against central differences of the f64 gradient
/// (1e-6: the difference's own error), then the f32 model's exact HVP
/// against the f64 exact one (1e-5), and the f32 central difference missing
/// 1e-5. Also the whole dense Hessian by exact columns is symmetric to
/// rounding before symmetrisation, which a wrong second backward is not.
#[test]
fn f32_mlp_hvp_matches_the_f64_model() {
    assert!(enable_double_backward());
    let mlp = Mlp { din: 6, hidden: 16 };
    let layout = mlp.layout();
    let data = Data::new(7, 64, mlp.din);
    let mut rng = langevin_core::chain_rng(3, 0);
    let theta = Params::new(layout.clone(), f32_values(&mut rng, layout.len(), 0.6)).unwrap();
    let v = f32_values(&mut rng, layout.len(), 1.0);

    let b64 = data.tensors(DType::F64);
    let d64 = CandleDensity::new(mlp_log_post).with_dtype(DType::F64);
    let (hv64, how) = hvp_with_method(&d64, &theta, &b64, &v).unwrap();
    assert_eq!(how, HvpMethod::Exact);
    let fd64 = hvp_finite_difference(&d64, &theta, &b64, &v).unwrap();
    let e = rel_err(&fd64, &hv64);
    assert!(e < 1e-6, "f64 exact vs f64 central differences: {e:e}");

    let b32 = data.tensors(DType::F32);
    let d32 = CandleDensity::new(mlp_log_post);
    let (hv32, how) = hvp_with_method(&d32, &theta, &b32, &v).unwrap();
    assert_eq!(how, HvpMethod::Exact);
    let e32 = rel_err(&hv32, &hv64);
    assert!(e32 < F32_TOL, "f32 exact vs f64: {e32:e}");
    let fd32 = hvp_finite_difference(&d32, &theta, &b32, &v).unwrap();
    let efd = rel_err(&fd32, &hv64);
    assert!(efd > F32_TOL, "f32 central differences met 1e-5: {efd:e}");

    // Columns of the exact Hessian: H e_j, compared before symmetrising.
    let d = layout.len();
    let sub = Subset::from_names(&layout, &["w2", "b2", "b1"]).unwrap();
    let (h, how) = hessian_subset_with_method(&d64, &theta, &b64, &sub).unwrap();
    assert_eq!(how, HvpMethod::Exact);
    let m = sub.len();
    let mut e_j = vec![0.0; d];
    for (c, &j) in sub.indices().iter().enumerate() {
        e_j[j] = 1.0;
        let (col, _) = hvp_with_method(&d64, &theta, &b64, &e_j).unwrap();
        e_j[j] = 0.0;
        for (r, &i) in sub.indices().iter().enumerate() {
            assert!((col[i] - h[r * m + c]).abs() < 1e-12 * (1.0 + col[i].abs()));
        }
    }
}

/// Densities without an exact product (closures) still go through central
/// differences, and say so.
#[test]
fn closures_fall_back_to_finite_differences() {
    assert!(enable_double_backward());
    let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
        g[0] = -x[0].powi(3);
        -x[0].powi(4) / 4.0
    });
    let p = Params::from_vec(vec![0.5]);
    let (hv, how) = hvp_with_method(&d, &p, &(), &[1.0]).unwrap();
    assert_eq!(how, HvpMethod::FiniteDifference);
    assert!((hv[0] + 0.75).abs() < 1e-8, "{}", hv[0]);
}

fn softmax_mlp(ts: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let h = x.matmul(&ts[0])?.broadcast_add(&ts[1])?.tanh()?;
    h.matmul(&ts[2])?.broadcast_add(&ts[3])
}

/// GGN-vector products of a candle output model without the Jacobian
/// (double-vjp `J v`) agree with the Jacobian path: to 1e-12 in f64, and
/// the f32 model's to 1e-5 of the f64 one.
#[test]
fn jacobian_free_ggnvp_matches_the_jacobian_path() {
    assert!(enable_double_backward());
    let (din, hidden, k, n) = (5, 12, 3, 40);
    let layout = ParamLayout::new([
        ("w1", vec![din, hidden]),
        ("b1", vec![hidden]),
        ("w2", vec![hidden, k]),
        ("b2", vec![k]),
    ])
    .unwrap();
    let mut rng = langevin_core::chain_rng(11, 0);
    let theta = Params::new(layout.clone(), f32_values(&mut rng, layout.len(), 0.7)).unwrap();
    let v = f32_values(&mut rng, layout.len(), 1.0);
    let xs = f32_values(&mut rng, n * din, 1.0);
    let x64 = Tensor::from_vec(xs, (n, din), &Device::Cpu).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap();
    for lik in [
        OutputLikelihood::Categorical,
        OutputLikelihood::Gaussian { variance: 0.5 },
    ] {
        let m64 = CandleOutputModel::new(lik, softmax_mlp).with_dtype(DType::F64);
        let free = ggnvp(&m64, &theta, &x64, &v).unwrap();
        let full = ggnvp_via_jacobian(&m64, &theta, &x64, &v).unwrap();
        let e = rel_err(&free, &full);
        assert!(e < 1e-12, "{lik:?}: f64 Jacobian-free vs Jacobian {e:e}");
        let m32 = CandleOutputModel::new(lik, softmax_mlp);
        let free32 = ggnvp(&m32, &theta, &x32, &v).unwrap();
        let e32 = rel_err(&free32, &full);
        assert!(e32 < F32_TOL, "{lik:?}: f32 Jacobian-free vs f64 {e32:e}");
    }
}

fn spec_model(
    d: usize,
    hidden: &[usize],
    task: langevin_models::Task,
    noise: langevin_models::Noise,
) -> langevin_models::Model {
    langevin_models::Model::new(langevin_models::ModelSpec {
        kind: langevin_models::ModelKind::Mlp,
        task,
        feature_names: (0..d).map(|i| format!("f{i}")).collect(),
        hidden: hidden.to_vec(),
        prior_sd: 1.3,
        noise,
        n_train: 100,
    })
    .unwrap()
}

/// The hand-written MLP density's R-operator (the `ModelDensity` the CLI's
/// `laplace-hessian` uses for MLPs) equals candle's double backward on the
/// same model in f64 (1e-10, both exact), for the categorical, fixed-noise
/// and learned-noise Gaussian likelihoods, and reports itself as exact.
/// Against f64 central differences it agrees to 1e-6 (their own error).
#[test]
fn mlp_density_r_operator_matches_candle_double_backward() {
    use langevin_models::mlp_fast::ModelDensity;
    use langevin_models::{Noise, Task};
    assert!(enable_double_backward());
    let cases = [
        spec_model(
            5,
            &[7, 6],
            Task::Classification { n_classes: 3 },
            Noise::Learned,
        ),
        spec_model(4, &[6, 5], Task::Regression, Noise::Learned),
        spec_model(3, &[8], Task::Regression, Noise::Fixed(0.7)),
    ];
    for (c, m) in cases.iter().enumerate() {
        let rows = 23;
        let d = m.spec().feature_names.len();
        let mut rng = langevin_core::chain_rng(c as u64, 5);
        let x = f32_values(&mut rng, rows * d, 1.5);
        let y: Vec<f64> = (0..rows)
            .map(|i| match m.spec().task {
                Task::Classification { n_classes } => (i % n_classes) as f64,
                Task::Regression => rng.random_range(-2.0..2.0),
            })
            .collect();
        let mut p = m.init(&mut rng);
        for v in p.values_mut().iter_mut() {
            *v += 0.1 * rng.random_range(-1.0..1.0);
        }
        let v = f32_values(&mut rng, p.len(), 1.0);
        let b = m.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
        let fast = m.density(DType::F64, &Device::Cpu);
        assert!(matches!(fast, ModelDensity::Mlp(_)));
        let (hv, how) = hvp_with_method(&fast, &p, &b, &v).unwrap();
        assert_eq!(how, HvpMethod::Exact);
        let candle = m.candle_density(DType::F64, &Device::Cpu);
        let (hc, how) = hvp_with_method(&candle, &p, &b, &v).unwrap();
        assert_eq!(how, HvpMethod::Exact);
        let e = rel_err(&hv, &hc);
        assert!(e < 1e-10, "case {c}: R-op vs candle double backward {e:e}");
        let fd = hvp_finite_difference(&fast, &p, &b, &v).unwrap();
        let e = rel_err(&fd, &hv);
        assert!(e < 1e-6, "case {c}: R-op vs central differences {e:e}");
        // An f32 MlpDensity still gives the f64 model's Hessian.
        let fast32 = m.mlp_density(DType::F32).unwrap();
        let (h32, _) = hvp_with_method(&fast32, &p, &b, &v).unwrap();
        assert!(rel_err(&h32, &hv) < 1e-12);
    }
}
