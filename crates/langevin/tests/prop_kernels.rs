//! Property tests of numerical kernels of `langevin` against naive
//! references, on random inputs.
//!
//! * ESS (`diagnostics::ess_geyer`, `ess_basic`, `ess_bulk`, `ess_tail`) vs a
//!   naive implementation of the documented estimator: direct O(n²)
//!   autocovariances, the multi-chain autocorrelation
//!   `rho_t = 1 - (W - mean_c acov_c(t)) / var_plus`, Geyer's initial positive
//!   sequence and initial monotone sequence written over pairs
//!   `P_k = rho_2k + rho_2k+1` (the library writes them over single lags, as
//!   ArviZ), naive average ranks for the rank normalisation.
//! * Cholesky-based solves: `DenseLaplaceState::covariance` (Cholesky inverse)
//!   vs Gauss-Jordan elimination, `DenseLaplaceState::sample`
//!   (`θ* + √T L⁻ᵀ ξ`) vs a naive Cholesky factor and Gaussian elimination
//!   with the same normal draws, and `curvature::cg` vs Gaussian elimination,
//!   on random symmetric positive definite matrices.

use langevin::curvature::{cg, CgConfig, Subset};
use langevin::diagnostics::{
    ess_basic, ess_bulk, ess_geyer, ess_tail, inverse_normal_cdf, MIN_DRAWS,
};
use langevin::laplace::DenseLaplaceState;
use langevin::Params;
use langevin_core::rng::{chain_rng, fill_standard_normal};
use proptest::prelude::*;
use rand::Rng;

// ---------------------------------------------------------------------------
// Naive ESS
// ---------------------------------------------------------------------------

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// `(1/n) Σ_{i < n-t} (x_i - x̄)(x_{i+t} - x̄)`, by the direct sum.
fn acov_direct(x: &[f64], t: usize) -> f64 {
    let n = x.len();
    let m = mean(x);
    (0..n - t).map(|i| (x[i] - m) * (x[i + t] - m)).sum::<f64>() / n as f64
}

/// Geyer's initial monotone sequence ESS of chains of equal length, as the
/// library documents it (ArviZ `_ess`), written over pairs of lags.
fn naive_ess(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let total = (m * n) as f64;
    let all: Vec<f64> = chains.iter().flatten().copied().collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi - lo < 1e-15 {
        return total;
    }
    let nf = n as f64;
    let w = chains.iter().map(|c| acov_direct(c, 0)).sum::<f64>() / m as f64 * nf / (nf - 1.0);
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let b_over_n = if m > 1 {
        let mm = mean(&means);
        means.iter().map(|x| (x - mm).powi(2)).sum::<f64>() / (m as f64 - 1.0)
    } else {
        0.0
    };
    let var_plus = w * (nf - 1.0) / nf + b_over_n;
    let rho = |t: usize| {
        let a = chains.iter().map(|c| acov_direct(c, t)).sum::<f64>() / m as f64;
        1.0 - (w - a) / var_plus
    };
    // Initial positive sequence over pairs P_k = (rho_2k, rho_2k+1): pair 0 is
    // always kept; pair k >= 1 is computed while 2k + 2 < n and the previous
    // pair's sum is positive, and kept when its own sum is >= 0.
    let mut pairs: Vec<(f64, f64)> = vec![(1.0, rho(1))];
    let mut last = pairs[0];
    let mut computed = 0usize; // K: pairs computed after pair 0
    let mut k = 1;
    while 2 * k + 2 < n && last.0 + last.1 > 0.0 {
        last = (rho(2 * k), rho(2 * k + 1));
        computed = k;
        if last.0 + last.1 >= 0.0 {
            pairs.push(last);
        }
        k += 1;
    }
    // The estimate sums 2 (P_0 + ... + P_{K-1}) plus lag 2K once: lag 2K is
    // the last even autocorrelation if positive, else what pair K stored
    // (nothing, i.e. 0, when it was dropped).
    let kk = computed;
    let tail = if computed == 0 {
        1.0 // lag 0
    } else if last.0 > 0.0 {
        last.0
    } else if pairs.len() > kk {
        pairs[kk].0
    } else {
        0.0
    };
    // Initial monotone sequence: running minimum of the pair sums over the
    // pairs 0..K-1 (a raised pair becomes two equal halves).
    let mut sum = 0.0;
    let mut prev = f64::INFINITY;
    for p in pairs.iter().take(kk) {
        let s = (p.0 + p.1).min(prev);
        sum += s;
        prev = s;
    }
    let tau = (-1.0 + 2.0 * sum + tail).max(1.0 / total.log10());
    total / tau
}

fn split(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains[0].len();
    let h = n / 2;
    let mut out: Vec<Vec<f64>> = chains.iter().map(|c| c[..h].to_vec()).collect();
    out.extend(chains.iter().map(|c| c[n - h..].to_vec()));
    out
}

/// Rank normalisation with naive average ranks over all draws.
fn rank_normalise(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let all: Vec<f64> = chains.iter().flatten().copied().collect();
    let s = all.len() as f64;
    chains
        .iter()
        .map(|c| {
            c.iter()
                .map(|&v| {
                    let less = all.iter().filter(|&&u| u < v).count() as f64;
                    let equal = all.iter().filter(|&&u| u == v).count() as f64;
                    let rank = less + (equal + 1.0) / 2.0;
                    inverse_normal_cdf((rank - 0.375) / (s + 0.25))
                })
                .collect()
        })
        .collect()
}

/// Quantile by linear interpolation (type 7).
fn quantile(all: &[f64], p: f64) -> f64 {
    let mut s = all.to_vec();
    s.sort_by(f64::total_cmp);
    let h = (s.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    s[lo] + (h - lo as f64) * (s[hi] - s[lo])
}

fn naive_ess_tail(chains: &[Vec<f64>]) -> f64 {
    let all: Vec<f64> = chains.iter().flatten().copied().collect();
    let ess_q = |p: f64| {
        let q = quantile(&all, p);
        let ind: Vec<Vec<f64>> = chains
            .iter()
            .map(|c| c.iter().map(|&v| if v <= q { 1.0 } else { 0.0 }).collect())
            .collect();
        naive_ess(&split(&ind))
    };
    ess_q(0.05).min(ess_q(0.95))
}

/// Random chains: AR(1) with coefficient `phi`, per-chain offsets, and
/// optionally rounded to a grid (ties).
#[derive(Debug, Clone)]
struct Chains {
    m: usize,
    n: usize,
    phi: f64,
    offset: f64,
    round: Option<f64>,
    seed: u64,
}

fn chains_strategy() -> impl Strategy<Value = Chains> {
    (
        1usize..5,
        MIN_DRAWS..300,
        prop_oneof![Just(0.0), -0.9f64..0.99],
        prop_oneof![Just(0.0), 0.0f64..2.0],
        prop_oneof![3 => Just(None), 1 => prop::sample::select(vec![0.5, 1.0, 4.0]).prop_map(Some)],
        any::<u64>(),
    )
        .prop_map(|(m, n, phi, offset, round, seed)| Chains {
            m,
            n,
            phi,
            offset,
            round,
            seed,
        })
}

fn draw_chains(c: &Chains) -> Vec<Vec<f64>> {
    let mut rng = chain_rng(c.seed, 0);
    (0..c.m)
        .map(|k| {
            let mut z = vec![0.0; c.n];
            fill_standard_normal(&mut rng, &mut z);
            let mut x = 0.0;
            z.iter()
                .map(|&e| {
                    x = c.phi * x + e;
                    let v = x + c.offset * k as f64;
                    match c.round {
                        Some(g) => (v * g).round() / g,
                        None => v,
                    }
                })
                .collect()
        })
        .collect()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got.is_nan() && want.is_nan()) || (got - want).abs() <= rel * want.abs().max(1.0)
}

// ---------------------------------------------------------------------------
// Naive dense linear algebra (row-major)
// ---------------------------------------------------------------------------

/// Gaussian elimination with partial pivoting for `a x = b`, `k` right-hand
/// sides as the columns of row-major `b` (`n × k`).
fn gauss_solve(n: usize, a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        for j in 0..n {
            a.swap(c * n + j, p * n + j);
        }
        for j in 0..k {
            b.swap(c * k + j, p * k + j);
        }
        for i in c + 1..n {
            let f = a[i * n + c] / a[c * n + c];
            for j in c..n {
                a[i * n + j] -= f * a[c * n + j];
            }
            for j in 0..k {
                b[i * k + j] -= f * b[c * k + j];
            }
        }
    }
    let mut x = vec![0.0; n * k];
    for j in 0..k {
        for i in (0..n).rev() {
            let s = b[i * k + j] - (i + 1..n).map(|l| a[i * n + l] * x[l * k + j]).sum::<f64>();
            x[i * k + j] = s / a[i * n + i];
        }
    }
    x
}

/// Cholesky-Banachiewicz, row by row: `a = L Lᵀ`.
fn naive_cholesky(n: usize, a: &[f64]) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j {
                (a[i * n + i] - s).sqrt()
            } else {
                (a[i * n + j] - s) / l[j * n + j]
            };
        }
    }
    l
}

/// A random symmetric positive definite `B Bᵀ / n + μ I` (eigenvalues in
/// about `[μ, μ + 4]`).
fn spd() -> impl Strategy<Value = (usize, Vec<f64>)> {
    (1usize..13).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec(-1.0f64..1.0, n * n),
            0.05f64..2.0,
        )
            .prop_map(|(n, b, mu)| {
                let mut a = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..n {
                        a[i * n + j] =
                            (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>() / n as f64;
                    }
                    a[i * n + i] += mu;
                }
                (n, a)
            })
    })
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn ess_matches_naive_geyer(c in chains_strategy()) {
        let chains = draw_chains(&c);
        let refs: Vec<&[f64]> = chains.iter().map(|v| v.as_slice()).collect();
        let got = ess_geyer(&refs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = naive_ess(&chains);
        prop_assert!(close(got, want, 1e-8), "ess_geyer {got} vs naive {want} ({c:?})");
        let total = (c.m * c.n) as f64;
        prop_assert!(got > 0.0 && got <= total * total.log10().max(1.0) + 1e-9, "{got}");

        let got = ess_basic(&refs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = naive_ess(&split(&chains));
        prop_assert!(close(got, want, 1e-8), "ess_basic {got} vs naive {want} ({c:?})");

        let got = ess_bulk(&refs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = naive_ess(&rank_normalise(&split(&chains)));
        prop_assert!(close(got, want, 1e-8), "ess_bulk {got} vs naive {want} ({c:?})");

        let got = ess_tail(&refs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = naive_ess_tail(&chains);
        prop_assert!(close(got, want, 1e-8), "ess_tail {got} vs naive {want} ({c:?})");
    }

    #[test]
    fn laplace_covariance_is_the_inverse((n, p) in spd(), t in 0.01f64..3.0) {
        let state = DenseLaplaceState {
            params: Params::from_vec(vec![0.0; n]),
            subset: Subset::all(n),
            prec: p.clone(),
            step: 0,
            log_posterior: f64::NAN,
        };
        let got = state.covariance(t).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let id: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
        let want: Vec<f64> = gauss_solve(n, &p, &id, n).iter().map(|v| t * v).collect();
        prop_assert!(max_diff(&got, &want) <= 1e-10 * max_abs(&want), "{got:?}\nwant {want:?}");
    }

    #[test]
    fn laplace_samples_solve_the_cholesky_system(
        (m, p) in spd(),
        extra in 0usize..4,
        t in 0.01f64..3.0,
        seed in any::<u64>(),
    ) {
        // The precision covers the last m of m + extra parameters.
        let dim = m + extra;
        let theta: Vec<f64> = (0..dim).map(|i| 0.5 * i as f64 - 1.0).collect();
        let subset = Subset::from_indices((extra..dim).collect(), dim)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let state = DenseLaplaceState {
            params: Params::from_vec(theta.clone()),
            subset,
            prec: p.clone(),
            step: 0,
            log_posterior: f64::NAN,
        };
        let draws = state
            .sample(3, t, &mut chain_rng(seed, 0))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Same normals; y = L⁻ᵀ ξ solves P y = L ξ.
        let l = naive_cholesky(m, &p);
        let mut rng = chain_rng(seed, 0);
        let mut xi = vec![0.0; m];
        for d in &draws {
            fill_standard_normal(&mut rng, &mut xi);
            let lxi: Vec<f64> = (0..m)
                .map(|i| (0..=i).map(|k| l[i * m + k] * xi[k]).sum())
                .collect();
            let y = gauss_solve(m, &p, &lxi, 1);
            let v = d.values();
            prop_assert_eq!(&v[..extra], &theta[..extra]);
            let want: Vec<f64> = (0..m).map(|i| theta[extra + i] + t.sqrt() * y[i]).collect();
            prop_assert!(max_diff(&v[extra..], &want) <= 1e-9 * max_abs(&want).max(1.0),
                "{:?}\nwant {want:?}", &v[extra..]);
        }
    }

    #[test]
    fn cg_matches_gaussian_elimination(
        (n, a) in spd(),
        b in prop::collection::vec(-2.0f64..2.0, 12),
        damping in prop_oneof![Just(0.0), 0.0f64..1.0],
        jacobi in any::<bool>(),
    ) {
        let b = &b[..n];
        let mut ad = a.clone();
        for i in 0..n {
            ad[i * n + i] += damping;
        }
        let want = gauss_solve(n, &ad, b, 1);
        let matvec = |v: &[f64], out: &mut [f64]| -> langevin::Result<()> {
            for i in 0..n {
                out[i] = (0..n).map(|j| a[i * n + j] * v[j]).sum();
            }
            Ok(())
        };
        let diag: Vec<f64> = (0..n).map(|i| ad[i * n + i]).collect();
        let precond = |r: &[f64], z: &mut [f64]| -> langevin::Result<()> {
            for i in 0..n {
                z[i] = r[i] / diag[i];
            }
            Ok(())
        };
        let cfg = CgConfig { max_iters: Some(20 * n), tol: 1e-13, atol: 0.0, damping };
        let res = cg(matvec, b, None, jacobi.then_some(precond), &cfg)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(res.converged, "{res:?}");
        prop_assert!(max_diff(&res.x, &want) <= 1e-8 * max_abs(&want).max(1e-3),
            "{:?}\nwant {want:?}", res.x);
        // The reported residual is the true one (to round-off).
        let mut r = b.to_vec();
        for i in 0..n {
            r[i] -= (0..n).map(|j| ad[i * n + j] * res.x[j]).sum::<f64>();
        }
        let true_res = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        prop_assert!((true_res - res.residual).abs() <= 1e-10 * (1.0 + max_abs(b)));
    }
}

/// The naive references on closed forms: iid-like draws give an ESS near the
/// number of draws, a strongly positively correlated AR(1) far fewer; the
/// naive Cholesky and elimination invert a 2x2 exactly.
#[test]
fn references_behave() {
    let mut rng = chain_rng(7, 0);
    let iid: Vec<Vec<f64>> = (0..4)
        .map(|_| (0..1000).map(|_| rng.random::<f64>()).collect())
        .collect();
    let e = naive_ess(&iid);
    assert!((e / 4000.0 - 1.0).abs() < 0.15, "{e}");
    let ar = draw_chains(&Chains {
        m: 4,
        n: 1000,
        phi: 0.9,
        offset: 0.0,
        round: None,
        seed: 3,
    });
    // tau = (1 + phi) / (1 - phi) = 19.
    let e = naive_ess(&ar);
    assert!(e > 4000.0 / 19.0 / 2.0 && e < 4000.0 / 19.0 * 2.0, "{e}");
    let l = naive_cholesky(2, &[4.0, 2.0, 2.0, 5.0]);
    assert_eq!(l, vec![2.0, 0.0, 1.0, 2.0]);
    let x = gauss_solve(2, &[4.0, 2.0, 2.0, 5.0], &[6.0, 7.0], 1);
    assert!(max_diff(&x, &[1.0, 1.0]) < 1e-15);
}
