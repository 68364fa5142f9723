//! `langevin::optim::Lbfgs` takes the same iterates as the L-BFGS the CLI
//! had (`langevin-cli/src/gaussian.rs`, `fn lbfgs`, copied below verbatim
//! as the reference): same points, iteration counts and gradients, bit for
//! bit, on several densities and iteration caps.

use langevin::optim::{Lbfgs, LbfgsConfig};
use langevin::{FnDensity, LogDensity, Params};

struct CliLbfgs {
    theta: Params,
    iterations: usize,
    max_abs_grad: f64,
}

fn cli_lbfgs<Dn: LogDensity<Aux = ()>>(
    density: &Dn,
    start: Params,
    batch: &Dn::Batch,
    max_iters: usize,
    tol: f64,
) -> langevin::core::Result<CliLbfgs> {
    const MEMORY: usize = 10;
    let p = start.len();
    let mut theta = start;
    // Minimise f = −log posterior.
    let eval = |t: &Params, g: &mut [f64]| -> langevin::core::Result<f64> {
        let (v, ()) = density.value_and_grad(t, batch, g)?;
        g.iter_mut().for_each(|x| *x = -*x);
        Ok(-v)
    };
    let mut g = vec![0.0; p];
    let mut f = eval(&theta, &mut g)?;
    langevin::core::check_finite(f, &g, 0)?;
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let max_abs = |g: &[f64]| g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut it = 0;
    let mut g_new = vec![0.0; p];
    while it < max_iters && max_abs(&g) > tol {
        it += 1;
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, y, _)) = hist.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|x| *x *= gamma);
        } else {
            let scale = 1.0 / max_abs(&g).max(1.0);
            q.iter_mut().for_each(|x| *x *= scale);
        }
        for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut d: Vec<f64> = q.iter().map(|x| -x).collect();
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            hist.clear();
            let scale = 1.0 / max_abs(&g).max(1.0);
            d = g.iter().map(|x| -x * scale).collect();
            slope = dot(&g, &d);
        }
        // Backtracking (Armijo).
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let trial: Vec<f64> = theta
                .values()
                .iter()
                .zip(&d)
                .map(|(t, di)| t + step * di)
                .collect();
            let tp = theta.with_values(trial)?;
            match eval(&tp, &mut g_new) {
                Ok(fv) if fv.is_finite() && g_new.iter().all(|x| x.is_finite()) => {
                    if fv <= f + 1e-4 * step * slope {
                        accepted = Some((tp, fv));
                        break;
                    }
                }
                Ok(_) | Err(langevin::core::Error::NonFiniteLogDensity { .. }) => {}
                Err(e) => return Err(e),
            }
            step *= 0.5;
        }
        let Some((tp, fv)) = accepted else {
            // No decrease along d: as converged as rounding allows.
            break;
        };
        let s: Vec<f64> = tp
            .values()
            .iter()
            .zip(theta.values())
            .map(|(a, b)| a - b)
            .collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() && sy > 0.0 {
            if hist.len() == MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, y, 1.0 / sy));
        }
        let done = (f - fv).abs() <= 1e-16 * f.abs().max(1.0) && max_abs(&g_new) <= 1e3 * tol;
        theta = tp;
        f = fv;
        std::mem::swap(&mut g, &mut g_new);
        if done {
            break;
        }
    }
    Ok(CliLbfgs {
        theta,
        iterations: it,
        max_abs_grad: max_abs(&g),
    })
}

fn check<D: LogDensity<Aux = ()>>(name: &str, density: &D, batch: &D::Batch, start: Vec<f64>) {
    for max_iters in [0usize, 1, 3, 10, 200] {
        for tol in [1e-9, 1e-12] {
            let start = Params::from_vec(start.clone());
            let want = cli_lbfgs(density, start.clone(), batch, max_iters, tol).unwrap();
            let got = Lbfgs::new(LbfgsConfig {
                max_iters,
                tol,
                ..LbfgsConfig::default()
            })
            .unwrap()
            .run(density, start, batch)
            .unwrap();
            let bits = |p: &Params| p.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got.params),
                bits(&want.theta),
                "{name}, {max_iters} iterations, tol {tol}"
            );
            assert_eq!(got.iterations, want.iterations, "{name}");
            assert_eq!(
                got.max_abs_grad.to_bits(),
                want.max_abs_grad.to_bits(),
                "{name}"
            );
        }
    }
}

#[test]
fn lbfgs_takes_the_iterates_of_the_cli_copy() {
    let a = [[100.0, 9.9], [9.9, 1.0]];
    let gaussian = FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
        let r = [x[0] - 1.0, x[1] + 2.0];
        let ar = [
            a[0][0] * r[0] + a[0][1] * r[1],
            a[1][0] * r[0] + a[1][1] * r[1],
        ];
        g[0] = -ar[0];
        g[1] = -ar[1];
        -0.5 * (r[0] * ar[0] + r[1] * ar[1])
    });
    check("correlated gaussian", &gaussian, &(), vec![0.0, 0.0]);

    // −Rosenbrock in 6 dimensions (more iterations than the memory of 10).
    let rosenbrock = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
        g.fill(0.0);
        let mut f = 0.0;
        for i in 0..x.len() - 1 {
            let (a, b) = (x[i + 1] - x[i] * x[i], 1.0 - x[i]);
            f += 100.0 * a * a + b * b;
            g[i] -= -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] -= 200.0 * a;
        }
        -f
    });
    check(
        "rosenbrock",
        &rosenbrock,
        &(),
        vec![-1.2, 1.0, -1.2, 1.0, -1.2, 1.0],
    );

    // Logistic regression with a Gaussian prior on 40 points of a batch.
    type Data = (Vec<[f64; 3]>, Vec<f64>);
    let xs: Vec<[f64; 3]> = (0..40)
        .map(|i| {
            let t = i as f64;
            [1.0, (0.37 * t).sin() * 2.0, (0.11 * t).cos()]
        })
        .collect();
    let ys: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| f64::from(x[1] - 0.5 * x[2] + 0.3 * ((i % 3) as f64 - 1.0) > 0.0))
        .collect();
    let logistic = FnDensity::new(|w: &[f64], b: &Data, g: &mut [f64]| {
        let mut lp = 0.0;
        for j in 0..3 {
            g[j] = -w[j] / 4.0;
            lp -= w[j] * w[j] / 8.0;
        }
        for (x, y) in b.0.iter().zip(&b.1) {
            let z: f64 = (0..3).map(|j| w[j] * x[j]).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            lp += y * z - z.max(0.0) - (-z.abs()).exp().ln_1p();
            for j in 0..3 {
                g[j] += (y - p) * x[j];
            }
        }
        lp
    });
    check("logistic", &logistic, &(xs, ys), vec![0.0, 0.0, 0.0]);

    // A NaN hole on the way: the line search backtracks.
    let hole = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
        g[0] = -(x[0] - 2.0);
        if x[0].abs() < 0.1 {
            f64::NAN
        } else {
            -0.5 * (x[0] - 2.0).powi(2)
        }
    });
    check("nan hole", &hole, &(), vec![-1.0]);
}
