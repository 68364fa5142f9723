//! Laplace approximations on posteriors' reference problem: Linear(10 → 1),
//! 100 points, per-example log posterior
//! `log N(θ; 0, I) + 100 log N(yᵢ | f(xᵢ), 1)`.
//! The accumulated precisions must equal the sums of per-example terms over
//! the whole data set, whatever the minibatch size (20, 2, full batch).

use candle_core::{DType, Device, Tensor};
use langevin::curvature::{CandleOutputModel, CandlePerExample, FnPerExample, OutputLikelihood};
use langevin::laplace::{
    DenseFisherLaplace, DenseGgnLaplace, DenseHessianConfig, DenseHessianLaplace,
    DiagFisherLaplace, DiagGgnLaplace, LaplaceConfig,
};
use langevin::{chain_rng, FnDensity, ParamLayout, Params, Transform};
use rand::Rng;

const N: usize = 100;
const DIN: usize = 10;
const D: usize = DIN + 1;

struct Data {
    x: Vec<[f64; DIN]>,
    y: Vec<f64>,
}

fn data() -> Data {
    let mut rng = chain_rng(42, 0);
    let x: Vec<[f64; DIN]> = (0..N)
        .map(|_| std::array::from_fn(|_| rng.random::<f64>() * 2.0 - 1.0))
        .collect();
    let y = x
        .iter()
        .map(|xi| xi[0] - 0.5 * xi[3] + 0.2 + 0.1 * (rng.random::<f64>() - 0.5))
        .collect();
    Data { x, y }
}

/// nn.Linear(10, 1) layout: weight [1, 10], bias [1].
fn params() -> Params {
    let layout = ParamLayout::new([("weight", vec![1, DIN]), ("bias", vec![1])]).unwrap();
    let mut rng = chain_rng(7, 0);
    Params::new(layout, (0..D).map(|_| rng.random::<f64>() - 0.5).collect()).unwrap()
}

fn features(x: &[f64; DIN]) -> [f64; D] {
    std::array::from_fn(|j| if j < DIN { x[j] } else { 1.0 })
}

/// gᵢ = −θ + 100 (yᵢ − f(xᵢ)) [xᵢ; 1]
fn per_example_grad(t: &[f64], x: &[f64; DIN], y: f64) -> [f64; D] {
    let phi = features(x);
    let f: f64 = phi.iter().zip(t).map(|(a, b)| a * b).sum();
    std::array::from_fn(|j| -t[j] + N as f64 * (y - f) * phi[j])
}

type Batch = [([f64; DIN], f64)];

fn examples(d: &Data) -> Vec<([f64; DIN], f64)> {
    d.x.iter().cloned().zip(d.y.iter().cloned()).collect()
}

fn fn_per_example() -> impl langevin::curvature::PerExampleLogLik<Batch = Batch> {
    FnPerExample::new(|t: &[f64], b: &Batch| {
        let mut vals = Vec::new();
        let mut grads = Vec::new();
        for (x, y) in b {
            let phi = features(x);
            let f: f64 = phi.iter().zip(t).map(|(a, c)| a * c).sum();
            let prior = -0.5 * t.iter().map(|v| v * v).sum::<f64>();
            vals.push(prior - 0.5 * N as f64 * (y - f).powi(2));
            grads.extend(per_example_grad(t, x, *y));
        }
        (vals, grads)
    })
}

fn tensors(b: &Batch) -> (Tensor, Tensor) {
    let xs: Vec<f64> = b.iter().flat_map(|(x, _)| x.iter().cloned()).collect();
    let ys: Vec<f64> = b.iter().map(|(_, y)| *y).collect();
    (
        Tensor::from_vec(xs, (b.len(), DIN), &Device::Cpu).unwrap(),
        Tensor::from_vec(ys, b.len(), &Device::Cpu).unwrap(),
    )
}

fn linear(t: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    // x [n, 10] · weightᵀ [10, 1] + bias
    x.matmul(&t[0].t()?)?.broadcast_add(&t[1])?.squeeze(1)
}

fn expected_fisher(d: &Data, t: &[f64]) -> Vec<f64> {
    let mut f = vec![0.0; D * D];
    for (x, y) in d.x.iter().zip(&d.y) {
        let g = per_example_grad(t, x, *y);
        for a in 0..D {
            for b in 0..D {
                f[a * D + b] += g[a] * g[b];
            }
        }
    }
    f
}

fn expected_ggn(d: &Data) -> Vec<f64> {
    let mut f = vec![0.0; D * D];
    for x in &d.x {
        let phi = features(x);
        for a in 0..D {
            for b in 0..D {
                f[a * D + b] += phi[a] * phi[b];
            }
        }
    }
    f
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "entry {i}: {x} vs {y}"
        );
    }
}

fn diag(m: &[f64]) -> Vec<f64> {
    (0..D).map(|j| m[j * D + j]).collect()
}

#[test]
fn fisher_precisions_are_sums_of_per_example_terms_for_any_minibatch() {
    let d = data();
    let ex = examples(&d);
    let p = params();
    let expected = expected_fisher(&d, p.values());
    let candle_model = CandlePerExample::new(|t: &[Tensor], b: &(Tensor, Tensor)| {
        let f = linear(t, &b.0)?;
        let prior = (t[0].sqr()?.sum_all()? + t[1].sqr()?.sum_all()?)? * -0.5;
        let lik = ((&b.1 - f)?.sqr()? * (-0.5 * N as f64))?;
        lik.broadcast_add(&prior?)
    })
    .with_dtype(DType::F64);
    for bs in [20, 2, N] {
        let mut rng = chain_rng(0, 0);
        let diag_t = DiagFisherLaplace::new(fn_per_example(), LaplaceConfig::default()).unwrap();
        let dense_t = DenseFisherLaplace::new(fn_per_example(), LaplaceConfig::default()).unwrap();
        let dense_c = DenseFisherLaplace::new(&candle_model, LaplaceConfig::default()).unwrap();
        let mut sd = diag_t.init(p.clone(), &mut rng).unwrap();
        let mut sf = dense_t.init(p.clone(), &mut rng).unwrap();
        let mut sc = dense_c.init(p.clone(), &mut rng).unwrap();
        for chunk in ex.chunks(bs) {
            diag_t.step(&mut sd, chunk, &mut rng).unwrap();
            dense_t.step(&mut sf, chunk, &mut rng).unwrap();
            dense_c.step(&mut sc, &tensors(chunk), &mut rng).unwrap();
        }
        close(&sd.prec_diag, &diag(&expected), 1e-10);
        close(&sf.prec, &expected, 1e-10);
        // candle in f64: same sums up to rounding (1e-5 as in posteriors' test).
        close(&sc.prec, &expected, 1e-5);
        assert_eq!(sd.params, p, "the mean is never moved");
    }
}

#[test]
fn ggn_precisions_are_sums_of_jtj_and_subsets_select_blocks() {
    let d = data();
    let ex = examples(&d);
    let p = params();
    let expected = expected_ggn(&d);
    let model = CandleOutputModel::new(
        OutputLikelihood::Gaussian { variance: 1.0 },
        |t: &[Tensor], b: &(Tensor, Tensor)| linear(t, &b.0),
    )
    .with_dtype(DType::F64);
    for bs in [20, 2, N] {
        let mut rng = chain_rng(0, 0);
        let dg = DiagGgnLaplace::new(&model, LaplaceConfig::default()).unwrap();
        let dn = DenseGgnLaplace::new(&model, LaplaceConfig::default()).unwrap();
        let last = DenseGgnLaplace::new(
            &model,
            LaplaceConfig {
                init_prec_diag: 1.0,
                subset: Some(vec!["bias".into()]),
            },
        )
        .unwrap();
        let mut s1 = dg.init(p.clone(), &mut rng).unwrap();
        let mut s2 = dn.init(p.clone(), &mut rng).unwrap();
        let mut s3 = last.init(p.clone(), &mut rng).unwrap();
        for chunk in ex.chunks(bs) {
            let b = tensors(chunk);
            dg.step(&mut s1, &b, &mut rng).unwrap();
            dn.step(&mut s2, &b, &mut rng).unwrap();
            last.step(&mut s3, &b, &mut rng).unwrap();
        }
        close(&s1.prec_diag, &diag(&expected), 1e-10);
        close(&s2.prec, &expected, 1e-10);
        // bias only: Σᵢ 1 plus the prior precision.
        close(&s3.prec, &[N as f64 + 1.0], 1e-12);
        // Samples from the subset state move only the bias.
        let draws = s3.sample(3, 1.0, &mut rng).unwrap();
        for dr in &draws {
            assert_eq!(dr.get("weight"), p.get("weight"));
            assert_ne!(dr.get("bias"), p.get("bias"));
        }
    }
}

#[test]
fn dense_hessian_with_rescale_is_the_posterior_precision() {
    let d = data();
    let ex = examples(&d);
    let p = params();
    // Batch-averaged log posterior: mean_i log N(yᵢ | f, 1) + log N(θ; 0, I) / N.
    let density = FnDensity::new(|t: &[f64], b: &Batch, g: &mut [f64]| {
        let inv_b = 1.0 / b.len() as f64;
        let mut lp = -0.5 * t.iter().map(|v| v * v).sum::<f64>() / N as f64;
        for (gj, tj) in g.iter_mut().zip(t) {
            *gj = -tj / N as f64;
        }
        for (x, y) in b {
            let phi = features(x);
            let r = y - phi.iter().zip(t).map(|(a, c)| a * c).sum::<f64>();
            lp -= 0.5 * r * r * inv_b;
            for (gj, ph) in g.iter_mut().zip(&phi) {
                *gj += r * ph * inv_b;
            }
        }
        lp
    });
    let mut expected = expected_ggn(&d);
    for j in 0..D {
        expected[j * D + j] += 1.0;
    }
    for bs in [20, 2, N] {
        let cfg = DenseHessianConfig {
            rescale: bs as f64,
            ..DenseHessianConfig::default()
        };
        let t = DenseHessianLaplace::new(&density, cfg).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(p.clone(), &mut rng).unwrap();
        for chunk in ex.chunks(bs) {
            t.step(&mut s, chunk, &mut rng).unwrap();
        }
        close(&s.prec, &expected, 1e-6);
    }
    // Jitter adds to the diagonal once per update.
    let t = DenseHessianLaplace::new(
        &density,
        DenseHessianConfig {
            rescale: N as f64,
            jitter: 0.5,
            ..DenseHessianConfig::default()
        },
    )
    .unwrap();
    let mut rng = chain_rng(0, 0);
    let mut s = t.init(p.clone(), &mut rng).unwrap();
    t.step(&mut s, &ex[..], &mut rng).unwrap();
    assert!((s.prec[0] - expected[0] - 0.5).abs() < 1e-6 * expected[0]);
    assert!(DenseHessianLaplace::new(
        &density,
        DenseHessianConfig {
            rescale: 0.0,
            ..DenseHessianConfig::default()
        }
    )
    .is_err());
}

#[test]
fn laplace_samples_have_the_state_moments() {
    let d = data();
    let ex = examples(&d);
    let p = params();
    let t = DenseFisherLaplace::new(fn_per_example(), LaplaceConfig::default()).unwrap();
    let td = DiagFisherLaplace::new(fn_per_example(), LaplaceConfig::default()).unwrap();
    let mut rng = chain_rng(1, 0);
    let mut s = t.init(p.clone(), &mut rng).unwrap();
    let mut sd = td.init(p.clone(), &mut rng).unwrap();
    t.step(&mut s, &ex[..], &mut rng).unwrap();
    td.step(&mut sd, &ex[..], &mut rng).unwrap();
    // Temperature scales the covariance; pick T so sds are O(0.1..1).
    let temp = 1e4;
    let cov = s.covariance(temp).unwrap();
    let sds = sd.sd(temp).unwrap();
    for seed in 0..3 {
        let draws = s.sample(10_000, temp, &mut chain_rng(seed, 5)).unwrap();
        let draws_d = sd.sample(10_000, temp, &mut chain_rng(seed, 6)).unwrap();
        for j in 0..D {
            for (ds, sd_true) in [(&draws, cov[j * D + j].sqrt()), (&draws_d, sds[j])] {
                let xs: Vec<f64> = ds.iter().map(|q| q.values()[j]).collect();
                let m = xs.iter().sum::<f64>() / xs.len() as f64;
                let s_hat = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>()
                    / (xs.len() - 1) as f64)
                    .sqrt();
                assert!((m - p.values()[j]).abs() < (5.0 * sd_true / 100.0).min(0.1));
                assert!((s_hat - sd_true).abs() < (5.0 * sd_true / 141.0).min(0.1));
            }
        }
    }
}
