//! `langevin fit --method analog`: the simulated analog (thermodynamic) sampler on the
//! user's data.
//!
//! Targets and tolerances:
//! * linear regression with a known noise sd (diabetes, `--noise-sd 0.7`, every row):
//!   the posterior is Gaussian and known in closed form ([`conjugate_posterior`]); the
//!   circuit is simulated exactly. 4 chains × 250 draws read out every `1/λ_min`: the
//!   slowest mode's lag-1 autocorrelation is `e^{-1}`, so the effective sample size is at
//!   least `1000 (1 − e^{-1}) / (1 + e^{-1}) ≈ 460`; a mean is then within
//!   `4.5 / √460 = 0.21` posterior sd and an sd within `4.5 / √(2·460) = 15%` except with
//!   probability ~1e-5 per parameter (the burn-in ends at KL 0.01 nats: a bias of at most
//!   0.14 sd in the first draw, decaying by e^{-1} per draw, 0.01 sd over the run). Three
//!   seeds.
//! * logistic regression (the default data set): the reference is NUTS in the same test;
//!   the Euler-Maruyama bias is at most 1% of a variance (step 0.02/λ_max); tolerances as
//!   above plus NUTS's own Monte Carlo error (its ESS is reported, ≥ 400 by default).

mod common;

use common::{conjugate_posterior, draws, expect, fit, floats, json, mean_sd, tempdir};

#[test]
fn linear_circuit_samples_the_conjugate_posterior() {
    let tmp = tempdir();
    for seed in ["1", "2", "3"] {
        let dir = tmp.path().join(seed);
        let s = fit(
            &dir,
            &[
                "--data",
                "diabetes",
                "--model",
                "linear",
                "--noise-sd",
                "0.7",
                "--test-fraction",
                "0",
                "--method",
                "analog",
                "--seed",
                seed,
                "--no-plots",
                "--quiet",
            ],
        );
        let run = json(&dir.join("run.json"));
        let (mu, cov) = conjugate_posterior(&run, 0.7, 1.0);
        let p = mu.len();
        let (cols, chains) = draws(&dir);
        assert_eq!((chains, cols.len()), (4, p));
        assert_eq!(cols[0].len(), 4 * 250, "4 chains x 250 draws");
        for (j, col) in cols.iter().enumerate() {
            let (m, sd) = mean_sd(col);
            let sd_exact = cov[j * p + j].sqrt();
            assert!(
                (m - mu[j]).abs() < 0.21 * sd_exact,
                "seed {seed} mean {j}: {m} vs {} (sd {sd_exact})",
                mu[j]
            );
            assert!(
                (sd / sd_exact - 1.0).abs() < 0.15,
                "seed {seed} sd {j}: {sd} vs {sd_exact}"
            );
        }
        let a = &s["analog"];
        let (secs, power, energy) = (
            a["analog_seconds"].as_f64().unwrap(),
            a["power_watts"].as_f64().unwrap(),
            a["energy_joules"].as_f64().unwrap(),
        );
        assert!(secs > 0.0 && power > 0.0);
        assert!((energy / (power * secs) - 1.0).abs() < 1e-9);
        // 4 chains of burn-in + 250 read-outs each, in units of τ = 1 µs.
        let per_chain = a["analog_time_per_chain_tau"].as_f64().unwrap();
        let expect_chain = a["burn_in_tau"].as_f64().unwrap()
            + 250.0 * a["readout_interval_tau"].as_f64().unwrap();
        assert!((per_chain / expect_chain - 1.0).abs() < 1e-9);
        assert!((secs / (4.0 * per_chain * 1e-6) - 1.0).abs() < 1e-9);
        assert_eq!(s["converged"], true, "{}", s["convergence"]);
    }
}

#[test]
fn logistic_circuit_agrees_with_nuts_on_the_default_data() {
    let tmp = tempdir();
    let nuts = tmp.path().join("nuts");
    // Every row in training (the split depends on --seed).
    fit(
        &nuts,
        &[
            "--method",
            "nuts",
            "--test-fraction",
            "0",
            "--no-plots",
            "--quiet",
        ],
    );
    let (reference, _) = draws(&nuts);
    for seed in ["1", "2"] {
        let dir = tmp.path().join(seed);
        let s = fit(
            &dir,
            &[
                "--method",
                "analog",
                "--test-fraction",
                "0",
                "--seed",
                seed,
                "--no-plots",
                "--quiet",
            ],
        );
        let (cols, _) = draws(&dir);
        assert_eq!(cols.len(), reference.len());
        for (j, col) in cols.iter().enumerate() {
            let (m, sd) = mean_sd(col);
            let (mr, sdr) = mean_sd(&reference[j]);
            // Both Monte Carlo errors (ESS ≥ 400 each) in quadrature, 4.5 sigma.
            assert!(
                (m - mr).abs() < 4.5 * sdr * (1.0 / 460.0 + 1.0 / 400.0f64).sqrt(),
                "seed {seed} mean {j}: analog {m} NUTS {mr} (sd {sdr})"
            );
            assert!(
                (sd / sdr - 1.0).abs() < 4.5 * (1.0 / 920.0 + 1.0 / 800.0f64).sqrt() + 0.01,
                "seed {seed} sd {j}: analog {sd} NUTS {sdr}"
            );
        }
        let a = &s["analog"];
        assert!(a["energy_joules"].as_f64().unwrap() > 0.0);
        assert!(a["em_step_tau"].as_f64().unwrap() > 0.0);
        let map = floats(&a["map"]);
        assert_eq!(map.len(), reference.len());
    }
}

#[test]
fn models_and_options_the_circuits_do_not_cover_are_refused() {
    let tmp = tempdir();
    let out = tmp.path().join("x");
    let o = out.to_str().unwrap();
    expect(
        &[
            "fit", "--method", "analog", "--data", "diabetes", "--out", o,
        ],
        2,
        &["--noise-sd"],
    );
    expect(
        &["fit", "--method", "analog", "--data", "iris", "--out", o],
        2,
        &["linear and logistic regression only", "softmax"],
    );
    expect(
        &["fit", "--method", "analog", "--steps", "100", "--out", o],
        2,
        &["--steps does not apply to --method analog"],
    );
}
