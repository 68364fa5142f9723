//! Exact (double-backward) against central-difference Hessian-vector
//! products of candle densities, in f32 and f64: relative error
//! `‖Hv − Hv_ref‖₂ / ‖Hv_ref‖₂` and wall time per product.
//!
//! ```text
//! cargo run --release -p langevin --example hvp_accuracy -- [reps]
//! ```
//!
//! * `logistic`: Bayesian logistic regression, 2 000 rows, 100 features
//!   (d = 101); reference: the analytic f64 Hessian `−(1/n) Σ pᵢ(1−pᵢ) x̃ᵢx̃ᵢᵀ − λI`.
//! * `mlp`: regression MLP 20 → 64 (tanh) → 1, 512 rows (d = 1 409);
//!   reference: the f64 model's exact product (itself checked against f64
//!   central differences in `tests/hvp_exact.rs`).
//!
//! * `MlpDensity relu`: the hand-written MLP density (ReLU 20 → 64 → 64 → 3,
//!   categorical, 512 rows, d = 5 699), exact by its R-operator (in f64 for
//!   either dtype); reference: candle's double backward on the same model
//!   in f64.
//!
//! Parameters, data and `v` are f32-representable, so f32 and f64 models
//! see the same inputs. Times are medians over `reps` (default 20) products.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use langevin::curvature::{hvp_finite_difference, hvp_with_method, HvpMethod};
use langevin_core::candle_density::enable_double_backward;
use langevin_core::{CandleDensity, ParamLayout, Params};
use rand::Rng;

const PRIOR_PREC: f64 = 0.01;

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn f32_values(rng: &mut impl Rng, len: usize, s: f64) -> Vec<f64> {
    (0..len)
        .map(|_| f64::from(((rng.random::<f64>() * 2.0 - 1.0) * s) as f32))
        .collect()
}

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

fn mlp(ts: &[Tensor], b: &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
    let h = b.0.matmul(&ts[0])?.broadcast_add(&ts[1])?.tanh()?;
    let f = h.matmul(&ts[2])?.broadcast_add(&ts[3])?.squeeze(1)?;
    let ll = ((f - &b.1)?.sqr()?.mean_all()? * -0.5)?;
    let mut sq = ts[0].sqr()?.sum_all()?;
    for t in &ts[1..] {
        sq = (sq + t.sqr()?.sum_all()?)?;
    }
    ll - (sq * (0.5 * PRIOR_PREC))?
}

type Model = fn(&[Tensor], &(Tensor, Tensor)) -> candle_core::Result<Tensor>;

fn median_secs(reps: usize, mut f: impl FnMut() -> Result<Vec<f64>>) -> Result<(Vec<f64>, f64)> {
    let mut out = f()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        out = f()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    Ok((out, ts[ts.len() / 2]))
}

fn main() -> Result<()> {
    anyhow::ensure!(
        enable_double_backward(),
        "double backward unavailable on the main thread"
    );
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let mut rng = langevin_core::chain_rng(2026, 0);

    // (name, model, layout, n rows, features, analytic reference?)
    let cases: [(&str, Model, ParamLayout, usize, usize); 2] = [
        (
            "logistic",
            logistic,
            ParamLayout::new([("w", vec![100]), ("b", vec![])])?,
            2000,
            100,
        ),
        (
            "mlp",
            mlp,
            ParamLayout::new([
                ("w1", vec![20, 64]),
                ("b1", vec![64]),
                ("w2", vec![64, 1]),
                ("b2", vec![1]),
            ])?,
            512,
            20,
        ),
    ];
    println!("| model | d | dtype | method | rel. error vs f64 reference | ms / HVP |");
    println!("|---|---:|---|---|---:|---:|");
    for (name, f, layout, n, p) in cases {
        let d = layout.len();
        let x = f32_values(&mut rng, n * p, 1.0);
        let y: Vec<f64> = (0..n).map(|i| f64::from(i % 3 == 0)).collect();
        let theta = Params::new(layout, f32_values(&mut rng, d, 0.5))?;
        let v = f32_values(&mut rng, d, 1.0);
        let batch = |dtype: DType| -> Result<(Tensor, Tensor)> {
            Ok((
                Tensor::from_vec(x.clone(), (n, p), &Device::Cpu)?.to_dtype(dtype)?,
                Tensor::from_vec(y.clone(), n, &Device::Cpu)?.to_dtype(dtype)?,
            ))
        };
        let b64 = batch(DType::F64)?;
        let d64 = CandleDensity::new(f).with_dtype(DType::F64);
        let reference = if name == "logistic" {
            logistic_reference(&x, &y, n, p, theta.values(), &v)
        } else {
            let (r, how) = hvp_with_method(&d64, &theta, &b64, &v)?;
            anyhow::ensure!(how == HvpMethod::Exact);
            r
        };
        for dtype in [DType::F32, DType::F64] {
            let b = batch(dtype)?;
            let den = CandleDensity::new(f).with_dtype(dtype);
            let (exact, t_exact) = median_secs(reps, || {
                let (hv, how) = hvp_with_method(&den, &theta, &b, &v)?;
                anyhow::ensure!(how == HvpMethod::Exact);
                Ok(hv)
            })?;
            let (fd, t_fd) =
                median_secs(reps, || Ok(hvp_finite_difference(&den, &theta, &b, &v)?))?;
            for (method, hv, t) in [
                ("exact (double backward)", exact, t_exact),
                ("central differences", fd, t_fd),
            ] {
                println!(
                    "| {name} | {d} | {dtype:?} | {method} | {:.1e} | {:.3} |",
                    rel_err(&hv, &reference),
                    t * 1e3
                );
            }
        }
    }
    mlp_density_rows(reps, &mut rng)?;
    Ok(())
}

/// The hand-written `MlpDensity` (ReLU 20 → 64 → 64 → 3, categorical, 512
/// rows): its R-operator and central differences, in f32 and f64, against
/// candle's double backward on the same model in f64.
fn mlp_density_rows(reps: usize, rng: &mut langevin_core::ChainRng) -> Result<()> {
    use langevin_models::{Model, ModelKind, ModelSpec, Noise, Task};
    let (d, n) = (20, 512);
    let m = Model::new(ModelSpec {
        kind: ModelKind::Mlp,
        task: Task::Classification { n_classes: 3 },
        feature_names: (0..d).map(|i| format!("f{i}")).collect(),
        hidden: vec![64, 64],
        prior_sd: 1.0,
        noise: Noise::Learned,
        n_train: 10_000,
    })?;
    let x = f32_values(rng, n * d, 1.5);
    let y: Vec<f64> = (0..n).map(|i| (i % 3) as f64).collect();
    let mut theta = m.init(rng);
    for t in theta.values_mut() {
        *t = f64::from(*t as f32);
    }
    let v = f32_values(rng, theta.len(), 1.0);
    let b64 = m.batch(&x, &y, DType::F64, &Device::Cpu)?;
    let (reference, how) = hvp_with_method(
        &m.candle_density(DType::F64, &Device::Cpu),
        &theta,
        &b64,
        &v,
    )?;
    anyhow::ensure!(how == HvpMethod::Exact);
    for dtype in [DType::F32, DType::F64] {
        let b = m.batch(&x, &y, dtype, &Device::Cpu)?;
        let den = m.mlp_density(dtype)?;
        let (exact, t_exact) = median_secs(reps, || {
            let (hv, how) = hvp_with_method(&den, &theta, &b, &v)?;
            anyhow::ensure!(how == HvpMethod::Exact);
            Ok(hv)
        })?;
        let (fd, t_fd) = median_secs(reps, || Ok(hvp_finite_difference(&den, &theta, &b, &v)?))?;
        for (method, hv, t) in [
            ("exact (R-operator, f64)", exact, t_exact),
            ("central differences", fd, t_fd),
        ] {
            println!(
                "| MlpDensity relu | {} | {dtype:?} | {method} | {:.1e} | {:.3} |",
                theta.len(),
                rel_err(&hv, &reference),
                t * 1e3
            );
        }
    }
    Ok(())
}

fn logistic_reference(
    x: &[f64],
    y: &[f64],
    n: usize,
    p: usize,
    theta: &[f64],
    v: &[f64],
) -> Vec<f64> {
    let _ = y;
    // H v = −(1/n) Σᵢ wᵢ x̃ᵢ (x̃ᵢ · v) − λ v, in f64.
    let mut out: Vec<f64> = v.iter().map(|vi| -PRIOR_PREC * vi).collect();
    for i in 0..n {
        let xi = &x[i * p..(i + 1) * p];
        let f: f64 = xi.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>() + theta[p];
        let pr = 1.0 / (1.0 + (-f).exp());
        let w = pr * (1.0 - pr) / n as f64;
        let xv: f64 = xi.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() + v[p];
        for (o, a) in out.iter_mut().zip(xi.iter().chain([&1.0])) {
            *o -= w * a * xv;
        }
    }
    out
}
