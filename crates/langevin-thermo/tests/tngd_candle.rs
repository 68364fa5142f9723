//! TNGD (`langevin_thermo::tngd::Tngd`) on a user-defined candle model (a tanh
//! MLP from `candle_nn::Linear` on a slice of the bundled digits, wrapped as a
//! `CandleDensity` and a `CandleOutputModel`): its GGN-vector products are finite
//! and equal the dense GGN's, and a few TNGD steps lower the loss (and beat Adam
//! at its default rate over the same minibatches).

mod support;

use langevin::curvature::{ggn, ggnvp};
use langevin_thermo::tngd::Dataset;
use support::candle_mlp::{
    density, loss, output_model, train_adam, train_tngd, CandleBatch, Net, TngdRun,
};

fn digits(rows: usize) -> Dataset {
    let data = Dataset::bundled("digits", 1.0 / 16.0).unwrap();
    Dataset::new(
        data.x[..rows * data.d].to_vec(),
        data.y[..rows].to_vec(),
        data.d,
        data.k,
    )
    .unwrap()
}

#[test]
fn candle_ggn_vector_products_are_finite_and_match_the_dense_ggn() {
    langevin_core::candle_density::enable_double_backward();
    let data = digits(12);
    let net = Net {
        d: data.d,
        hidden: 3,
        k: data.k,
    };
    let theta = net.init(1);
    let p = theta.len();
    let b = CandleBatch::new(&data, &(0..data.n).collect::<Vec<_>>()).unwrap();
    let om = output_model();
    let v: Vec<f64> = (0..p).map(|i| ((i * 7 % 13) as f64 - 6.0) / 6.0).collect();
    let gv = ggnvp(&om, &theta, &b, &v).unwrap();
    assert!(gv.iter().all(|x| x.is_finite()));
    assert!(gv.iter().any(|x| *x != 0.0));
    let g = ggn(&om, &theta, &b).unwrap();
    for i in 0..p {
        let dense: f64 = (0..p).map(|j| g[i * p + j] * v[j]).sum();
        assert!(
            (dense - gv[i]).abs() <= 1e-8 * (1.0 + dense.abs()),
            "row {i}: {dense} vs {}",
            gv[i]
        );
    }
    // Positive semi-definite: vᵀ G v ≥ 0.
    let vgv: f64 = v.iter().zip(&gv).map(|(a, b)| a * b).sum();
    assert!(vgv >= -1e-10, "{vgv}");
}

#[test]
fn tngd_lowers_the_loss_of_a_candle_model() {
    langevin_core::candle_density::enable_double_backward();
    let data = digits(200);
    let net = Net {
        d: data.d,
        hidden: 8,
        k: data.k,
    };
    let order: Vec<usize> = (0..data.n).collect();
    let cfg = TngdRun {
        steps: 8,
        batch: 50,
        lr: 0.5,
        damping: 0.1,
        time: 10.0,
        prior_sd: 1.0,
        seed: 3,
    };
    let full = CandleBatch::new(&data, &order).unwrap();
    let dens = density(cfg.prior_sd, data.n);
    let start = loss(&dens, &net.init(cfg.seed), &full);
    let run = train_tngd(&data, net, &order, cfg).unwrap();
    let end = loss(&dens, &run.theta, &full);
    assert!(run.losses.iter().all(|l| l.is_finite()));
    assert!(run.products > 0);
    assert!((run.analog_seconds - 8.0 * 10.0 * 1e-6).abs() < 1e-15);
    assert!(end < 0.8 * start, "TNGD: {start} -> {end}");
    let adam = train_adam(&data, net, &order, cfg, 1e-3).unwrap();
    let end_adam = loss(&dens, &adam.theta, &full);
    eprintln!("loss {start:.4} -> TNGD {end:.4}, Adam (lr 1e-3) {end_adam:.4}");
    assert!(end < end_adam, "TNGD {end} vs Adam (lr 1e-3) {end_adam}");
}
