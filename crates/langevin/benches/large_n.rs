//! Issue 14's large-N scenario: Bayesian logistic regression on N synthetic
//! rows (an intercept and D − 1 = 99 N(0, 1) features, generated here from a
//! seed; prior N(0, 1)), time to accuracy of
//!
//! * adaptive SGHMC (minibatches of 256, per-chain step size and diagonal
//!   metric from the warm-up, until every R-hat <= 1.01 and ESS >= 400),
//! * the same with control variates (SGHMC-CV; the L-BFGS centre is timed as
//!   part of the run, the chains start there),
//! * NUTS (nuts-rs through `langevin::nuts`, full data, diagonal mass).
//!
//! Reference: the Laplace approximation at the MAP with the exact Hessian.
//! At these N the posterior is Gaussian to O(1/√N) (Bernstein–von Mises),
//! so the Laplace moments are far more precise than any feasible MCMC
//! reference; NUTS's agreement with them is printed as a check. Accuracy
//! goal: every mean within 0.1 sd and every sd within 10 %.
//!
//! Run: `cargo bench -p langevin --bench large_n` (N = 10 000, 100 000 and
//! 1 000 000; `LANGEVIN_LARGE_N=1000000` for one size). NUTS warm-up and
//! draws per chain: `LANGEVIN_NUTS_DRAWS` (default 500 up to N = 100 000,
//! 200 above, with 2 chains above 100 000: one full gradient there is 10^8
//! multiply-adds), SGMCMC step cap: `LANGEVIN_SG_MAX_STEPS` (default 2 000 000).
//! Prints one line per run and a Markdown table (BENCHMARKS.md).

use std::sync::Arc;
use std::time::Instant;

use faer::linalg::solvers::DenseSolveCore;

use langevin::adapt::{AdaptConfig, MetricKind};
use langevin::core::{chain_rng, FnDensity, LogDensity, Params, RowBatches};
use langevin::nuts::{MassMatrix, NutsConfig};
use langevin::optim::LbfgsConfig;
use langevin::run::{run_adaptive, Checkpoint, RunConfig, Thinning, Until};
use langevin::samples::Samples;
use langevin::sgmcmc::{ControlVariates, MomentaInit, Sghmc, SghmcConfig};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

const D: usize = 100;
const BATCH: usize = 256;
const CHAINS: usize = 4;

struct Data {
    n: usize,
    x: Vec<f64>,
    y: Vec<f64>,
}

fn data(n: usize) -> Arc<Data> {
    let mut rng = chain_rng(2026, 0);
    let w: Vec<f64> = (0..D)
        .map(|j| {
            if j == 0 {
                0.5
            } else {
                StandardNormal.sample(&mut rng)
            }
        })
        .map(|v: f64| v / (D as f64).sqrt() * 2.0)
        .collect();
    let mut x = vec![0.0; n * D];
    let mut y = vec![0.0; n];
    for i in 0..n {
        x[i * D] = 1.0;
        for j in 1..D {
            x[i * D + j] = StandardNormal.sample(&mut rng);
        }
        let z: f64 = (0..D).map(|j| x[i * D + j] * w[j]).sum();
        y[i] = f64::from(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()));
    }
    Arc::new(Data { n, x, y })
}

type Density = FnDensity<Vec<u32>, Box<dyn Fn(&[f64], &Vec<u32>, &mut [f64]) -> f64 + Send + Sync>>;

/// Batch-averaged log posterior on the rows of a batch (prior N(0, I)).
fn density(data: &Arc<Data>) -> Density {
    let d = Arc::clone(data);
    FnDensity::new(Box::new(
        move |w: &[f64], rows: &Vec<u32>, g: &mut [f64]| {
            let n = d.n as f64;
            let m = rows.len() as f64;
            for (gj, wj) in g.iter_mut().zip(w) {
                *gj = -wj / n;
            }
            let mut lp = -w.iter().map(|v| v * v).sum::<f64>() / (2.0 * n);
            for &r in rows {
                let xi = &d.x[r as usize * D..(r as usize + 1) * D];
                let z: f64 = xi.iter().zip(w).map(|(a, b)| a * b).sum();
                let yi = d.y[r as usize];
                let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
                lp += (yi * z - softplus) / m;
                let r = (yi - 1.0 / (1.0 + (-z).exp())) / m;
                for (gj, xj) in g.iter_mut().zip(xi) {
                    *gj += r * xj;
                }
            }
            lp
        },
    ))
}

/// Laplace moments: MAP by L-BFGS, covariance the inverse of the exact
/// Hessian of the (summed) negative log posterior.
fn laplace(data: &Arc<Data>, dens: &Density, all: &Vec<u32>) -> (Vec<f64>, Vec<f64>) {
    let (cv, _) = ControlVariates::at_mode(
        dens,
        Params::from_vec(vec![0.0; D]),
        all,
        &LbfgsConfig {
            max_iters: 1000,
            ..LbfgsConfig::default()
        },
    )
    .expect("MAP");
    let w = cv.centre().values().to_vec();
    let mut h = vec![0.0; D * D];
    for i in 0..data.n {
        let xi = &data.x[i * D..(i + 1) * D];
        let z: f64 = xi.iter().zip(&w).map(|(a, b)| a * b).sum();
        let p = 1.0 / (1.0 + (-z).exp());
        let s = p * (1.0 - p);
        for a in 0..D {
            let sa = s * xi[a];
            for b in 0..=a {
                h[a * D + b] += sa * xi[b];
            }
        }
    }
    let hm = faer::Mat::<f64>::from_fn(D, D, |a, b| {
        let v = if a >= b { h[a * D + b] } else { h[b * D + a] };
        v + if a == b { 1.0 } else { 0.0 }
    });
    let cov = hm
        .llt(faer::Side::Lower)
        .expect("positive definite Hessian")
        .inverse();
    let sd = (0..D).map(|j| cov[(j, j)].sqrt()).collect();
    (w, sd)
}

struct Outcome {
    name: String,
    seconds: f64,
    steps: u64,
    gradients_rows: f64,
    converged: Option<bool>,
    min_ess: f64,
    dm: f64,
    ds: f64,
}

fn moments(s: &Samples) -> (Vec<f64>, Vec<f64>) {
    let p = s.names.len();
    let mut m = vec![0.0; p];
    let mut v = vec![0.0; p];
    let mut k = 0.0;
    for c in &s.chains {
        for i in 0..c.n_draws() {
            let d = c.draw(i);
            k += 1.0;
            for j in 0..p {
                let delta = d[j] - m[j];
                m[j] += delta / k;
                v[j] += delta * (d[j] - m[j]);
            }
        }
    }
    (m, v.iter().map(|v| (v / (k - 1.0)).sqrt()).collect())
}

fn accuracy(s: &Samples, mean: &[f64], sd: &[f64]) -> (f64, f64) {
    let (m, s) = moments(s);
    let dm = (0..D)
        .map(|j| (m[j] - mean[j]).abs() / sd[j])
        .fold(0.0, f64::max);
    let ds = (0..D)
        .map(|j| (s[j] / sd[j] - 1.0).abs())
        .fold(0.0, f64::max);
    (dm, ds)
}

fn min_ess(s: &Samples) -> f64 {
    langevin::run::Verdict::of(s, 400.0, 1.01, 4)
        .map(|v| v.min_ess_bulk.min(v.min_ess_tail))
        .unwrap_or(f64::NAN)
}

#[allow(clippy::too_many_arguments)]
fn sghmc_run<L: LogDensity<Batch = Vec<u32>> + Sync>(
    name: &str,
    dens: &L,
    n: usize,
    start: impl Fn(&mut langevin::core::ChainRng) -> Params,
    max_steps: u64,
    t0: Instant,
    setup_rows: f64,
    rows_per_step: f64,
    reference: (&[f64], &[f64]),
) -> Outcome {
    let t = Sghmc::new(
        dens,
        SghmcConfig {
            step_size: 0.1.into(),
            temperature: (1.0 / n as f64).into(),
            friction: 1.0,
            beta: 0.0,
            sigma: 1.0,
            momenta: MomentaInit::Normal,
        },
    )
    .unwrap();
    let batches = RowBatches::new(n, BATCH).unwrap();
    let burn_in = 20_000;
    let config = RunConfig {
        steps: max_steps,
        thinning: Thinning { burn_in, thin: 1 },
        round: None,
        max_divergences: 100,
        threads: None,
        until: Some(Until {
            target_ess: 400.0,
            max_rhat: 1.01,
            max_draws: 1000,
            min_draws: 100,
        }),
    };
    let adapt = AdaptConfig {
        metric: MetricKind::Diagonal,
        step_size: true,
        ..AdaptConfig::default()
    };
    let ck = Checkpoint::start(&t, &batches, 1, CHAINS, |_, rng| Ok(start(rng))).unwrap();
    let out = run_adaptive(&t, &batches, &config, &adapt, ck, None, &mut ()).unwrap();
    let seconds = t0.elapsed().as_secs_f64();
    let (dm, ds) = accuracy(&out.samples, reference.0, reference.1);
    Outcome {
        name: name.into(),
        seconds,
        steps: out.steps_done,
        gradients_rows: setup_rows + rows_per_step * (out.steps_done * CHAINS as u64) as f64,
        converged: out.verdict.as_ref().map(|v| v.converged),
        min_ess: min_ess(&out.samples),
        dm,
        ds,
    }
}

fn scenario(n: usize) -> Vec<Outcome> {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let max_steps = env("LANGEVIN_SG_MAX_STEPS").unwrap_or(2_000_000);
    let t = Instant::now();
    let data = data(n);
    let dens = density(&data);
    let all: Vec<u32> = (0..n as u32).collect();
    let (mean, sd) = laplace(&data, &dens, &all);
    eprintln!(
        "N = {n}: data and Laplace reference in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let init = |rng: &mut langevin::core::ChainRng| {
        Params::from_vec((0..D).map(|_| rng.random_range(-0.5..0.5)).collect())
    };
    let mut out = Vec::new();

    // NUTS.
    let big = n > 100_000;
    let draws = env("LANGEVIN_NUTS_DRAWS").unwrap_or(if big { 200 } else { 500 });
    let chains = if big { 2 } else { CHAINS };
    let cfg = NutsConfig {
        warmup: draws,
        draws,
        temperature: 1.0 / n as f64,
        mass: MassMatrix::Diag,
        ..NutsConfig::default()
    };
    let t0 = Instant::now();
    let nuts = langevin::nuts::sample(
        &dens,
        &all,
        &cfg,
        1,
        chains,
        |_, rng| Ok(init(rng)),
        None,
        &(),
    )
    .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let ess = min_ess(&nuts.samples);
    let (dm, ds) = accuracy(&nuts.samples, &mean, &sd);
    let grads: u64 = nuts.gradient_evaluations.iter().sum();
    let warm = nuts.warmup_seconds.iter().cloned().fold(0.0, f64::max);
    let samp = nuts.sampling_seconds.iter().cloned().fold(0.0, f64::max);
    // Time to ESS 400: the warm-up, then sampling scaled to ESS 400 (ESS
    // grows linearly with draws), on the same threads.
    let to_400 = warm + samp * 400.0 / ess;
    eprintln!(
        "  nuts: {chains} chains x ({draws} warm-up + {draws} draws), {wall:.1} s (warm-up {warm:.1}, sampling {samp:.1}), \
         {:.1} gradients per draw, min ESS {ess:.0}, |Δmean|/sd {dm:.3}, |sd ratio - 1| {ds:.3}; time to ESS 400 ≈ {to_400:.1} s",
        nuts.gradients_per_draw()
    );
    out.push(Outcome {
        name: format!("nuts ({chains} chains, time to ESS 400 ≈ {to_400:.0} s)"),
        seconds: wall,
        steps: 2 * draws,
        gradients_rows: grads as f64 * n as f64,
        converged: None,
        min_ess: ess,
        dm,
        ds,
    });

    // Adaptive SGHMC on minibatches.
    let t0 = Instant::now();
    let o = sghmc_run(
        "sghmc, batch 256",
        &dens,
        n,
        init,
        max_steps,
        t0,
        0.0,
        BATCH as f64,
        (&mean, &sd),
    );
    eprintln!(
        "  {}: {:.1} s, {} steps, converged {:?}, min ESS {:.0}, |Δmean|/sd {:.3}, |sd ratio - 1| {:.3}",
        o.name, o.seconds, o.steps, o.converged, o.min_ess, o.dm, o.ds
    );
    out.push(o);

    // Adaptive SGHMC-CV: the centre is part of the cost.
    let t0 = Instant::now();
    let (cv, search) = ControlVariates::at_mode(
        &dens,
        Params::from_vec(vec![0.0; D]),
        &all,
        &LbfgsConfig::default(),
    )
    .unwrap();
    let centre = cv.centre().clone();
    let o = sghmc_run(
        "sghmc-cv, batch 256",
        &cv,
        n,
        |_| centre.clone(),
        max_steps,
        t0,
        search.full_evaluations as f64 * n as f64,
        2.0 * BATCH as f64,
        (&mean, &sd),
    );
    eprintln!(
        "  {}: {:.1} s ({} full gradients for the centre), {} steps, converged {:?}, min ESS {:.0}, |Δmean|/sd {:.3}, |sd ratio - 1| {:.3}",
        o.name, o.seconds, search.full_evaluations, o.steps, o.converged, o.min_ess, o.dm, o.ds
    );
    out.push(o);
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("LANGEVIN_LARGE_N")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let mut table = Vec::new();
    for n in sizes {
        for o in scenario(n) {
            table.push((n, o));
        }
    }
    println!("| N | method | seconds | steps per chain | rows of gradient work | converged | min ESS | worst |Δmean|/sd | worst |sd ratio − 1| | goal |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (n, o) in table {
        println!(
            "| {n} | {} | {:.1} | {} | {:.2e} | {} | {:.0} | {:.3} | {:.3} | {} |",
            o.name,
            o.seconds,
            o.steps,
            o.gradients_rows,
            o.converged.map_or("-".to_string(), |c| c.to_string()),
            o.min_ess,
            o.dm,
            o.ds,
            if o.dm < 0.1 && o.ds < 0.1 {
                "yes"
            } else {
                "no"
            }
        );
    }
}
