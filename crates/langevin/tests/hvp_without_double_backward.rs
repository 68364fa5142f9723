//! Without `CANDLE_GRAD_DO_NOT_DETACH`, candle detaches gradients: the probe
//! must notice, candle densities must fall back to central differences
//! (rather than return a second backward that silently misses terms), and
//! Jacobian-free GGN-vector products must use one backward pass per output.
//!
//! This file is its own test binary so that no test in it enables double
//! backward; it removes the variable in case the caller's environment set it.

use candle_core::{DType, Device, Tensor};
use langevin::curvature::{
    ggnvp, ggnvp_via_jacobian, hvp_with_method, CandleOutputModel, HvpMethod, OutputLikelihood,
};
use langevin_core::candle_density::{double_backward_available, DOUBLE_BACKWARD_ENV};
use langevin_core::{CandleDensity, LogDensity, ParamLayout, Params};

#[test]
fn detached_gradients_are_detected_and_products_fall_back() {
    std::env::remove_var(DOUBLE_BACKWARD_ENV);
    assert!(!double_backward_available());

    // log p = −Σ x⁴/4: H = diag(−3x²).
    let d = CandleDensity::new(|ts: &[Tensor], _: &()| ts[0].powf(4.0)?.sum_all()? * -0.25)
        .with_dtype(DType::F64);
    let p = Params::from_vec(vec![0.5, -1.0, 2.0]);
    let v = [1.0, 2.0, -1.0];
    let mut out = vec![0.0; 3];
    assert!(!d.hvp_exact(&p, &(), &v, &mut out).unwrap());
    let (hv, how) = hvp_with_method(&d, &p, &(), &v).unwrap();
    assert_eq!(how, HvpMethod::FiniteDifference);
    let exact = [-0.75, -6.0, 12.0];
    for (a, b) in hv.iter().zip(exact) {
        assert!((a - b).abs() < 1e-7 * (1.0 + b.abs()), "{a} vs {b}");
    }

    // GGN-vector product by per-row backward passes, still without J.
    let layout = ParamLayout::new([("w", vec![3, 2]), ("b", vec![2])]).unwrap();
    let theta = Params::new(layout, vec![0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.05, -0.05]).unwrap();
    let x = Tensor::from_vec(
        vec![
            1.0, 0.5, -0.3, 0.2, -1.0, 0.7, 0.0, 0.3, 0.9, -0.4, 0.8, 0.1,
        ],
        (4, 3),
        &Device::Cpu,
    )
    .unwrap();
    let m = CandleOutputModel::new(
        OutputLikelihood::Categorical,
        |ts: &[Tensor], x: &Tensor| x.matmul(&ts[0])?.tanh()?.broadcast_add(&ts[1]),
    )
    .with_dtype(DType::F64);
    let v: Vec<f64> = (0..8).map(|i| (i as f64 * 0.7).sin()).collect();
    let free = ggnvp(&m, &theta, &x, &v).unwrap();
    let full = ggnvp_via_jacobian(&m, &theta, &x, &v).unwrap();
    for (a, b) in free.iter().zip(&full) {
        assert!((a - b).abs() < 1e-13, "{a} vs {b}");
    }
}
