//! End-to-end runs of `langevin fit --method laplace-kfac` (Kronecker-factored GGN
//! Laplace per linear layer).

mod common;

use common::{fit, floats, tempdir};

/// The MLP on the bundled digits (64 features, 10 classes, one hidden layer of 32:
/// 2410 parameters, above the dense methods' limit of 2000): a finite, non-empty
/// Kronecker Gaussian whose draws predict the test rows far better than chance (0.1).
#[test]
fn kfac_laplace_fits_an_mlp_above_the_dense_limit() {
    let tmp = tempdir();
    let dir = tmp.path().join("kfac");
    let s = fit(
        &dir,
        &[
            "--data",
            "digits",
            "--model",
            "mlp",
            "--hidden",
            "32",
            "--method",
            "laplace-kfac",
            "--steps",
            "1500",
            "--step-size",
            "0.003",
            "--chains",
            "1",
            "--seed",
            "2",
            "--no-plots",
        ],
    );
    let g = &s["gaussian"];
    assert_eq!(g["kind"], "kron");
    assert_eq!(g["method"], "laplace-kfac");
    assert!(g["curvature"].as_str().unwrap().contains("KFAC-GGN"), "{g}");
    assert_eq!(g["kfac_layers"].as_array().unwrap().len(), 2);
    let (mu, sd) = (floats(&g["mean"]), floats(&g["sd"]));
    assert_eq!(mu.len(), 2410);
    assert_eq!(sd.len(), 2410);
    assert!(mu.iter().all(|v| v.is_finite()));
    assert!(sd.iter().all(|&v| v > 0.0 && v.is_finite()), "{sd:?}");
    assert!(g["log_det_precision"].as_f64().unwrap().is_finite());
    let m = &s["metrics"];
    let acc = m["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "test accuracy {acc}: {m}");
    assert!(m["test_nll"].as_f64().unwrap().is_finite(), "{m}");
}

/// Linear regression with a known noise sd (one output, Gaussian): KFAC is the exact
/// GGN, so `laplace-kfac` gives the sds of `laplace-dense-ggn` (the exact posterior);
/// and `--marglik` tunes the prior precision from the Kronecker eigenvalues to the
/// dense GGN's optimum.
#[test]
fn kfac_equals_the_dense_ggn_for_linear_regression_and_takes_marglik() {
    let tmp = tempdir();
    let base = [
        "--data",
        "diabetes",
        "--model",
        "linear",
        "--noise-sd",
        "0.7",
        "--chains",
        "1",
        "--seed",
        "1",
        "--no-plots",
    ];
    let run = |name: &str, extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        fit(&tmp.path().join(name), &args)
    };
    let k = run("kfac", &["--method", "laplace-kfac"]);
    let d = run("dense", &["--method", "laplace-dense-ggn"]);
    let (sk, sd) = (floats(&k["gaussian"]["sd"]), floats(&d["gaussian"]["sd"]));
    assert_eq!(sk.len(), sd.len());
    for (a, b) in sk.iter().zip(&sd) {
        assert!((a - b).abs() <= 1e-8 * b, "{a} vs {b}");
    }
    assert_eq!(
        floats(&k["gaussian"]["mean"]),
        floats(&d["gaussian"]["mean"])
    );
    let km = run("kfac-marglik", &["--method", "laplace-kfac", "--marglik"]);
    let dm = run(
        "dense-marglik",
        &["--method", "laplace-dense-ggn", "--marglik"],
    );
    let (pk, pd) = (
        km["gaussian"]["marglik"]["prior_precision"]
            .as_f64()
            .unwrap(),
        dm["gaussian"]["marglik"]["prior_precision"]
            .as_f64()
            .unwrap(),
    );
    assert!((pk - pd).abs() <= 1e-6 * pd, "{pk} vs {pd}");
}

/// `--last-layer` with the MLP (iris, 4 → 8 → 3): only the output layer's 27
/// parameters have an sd, the first layer's 40 are fixed at the MAP.
#[test]
fn kfac_last_layer_approximates_the_output_layer_only() {
    let tmp = tempdir();
    let s = fit(
        &tmp.path().join("ll"),
        &[
            "--data",
            "iris",
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--method",
            "laplace-kfac",
            "--last-layer",
            "--steps",
            "500",
            "--chains",
            "1",
            "--no-plots",
        ],
    );
    let g = &s["gaussian"];
    let sd = floats(&g["sd"]);
    assert_eq!(sd.len(), 67);
    assert!(sd[..40].iter().all(|&v| v == 0.0), "{sd:?}");
    assert!(sd[40..].iter().all(|&v| v > 0.0 && v.is_finite()), "{sd:?}");
    assert_eq!(g["kfac_layers"].as_array().unwrap().len(), 1);
}
