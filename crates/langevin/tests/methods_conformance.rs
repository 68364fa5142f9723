//! Conformance of the optimiser, VI, Laplace and EKF transforms: Send + Sync,
//! same seed same result, a serde round trip of the state gives a
//! bit-identical next step, `update` leaves its input untouched, and a
//! non-finite density is an error that leaves the state untouched.

use langevin::curvature::{FnPerExample, PerExampleLogLik};
use langevin::ekf::{DenseEkf, DiagEkf, EkfConfig};
use langevin::laplace::{
    DenseFisherLaplace, DenseHessianConfig, DenseHessianLaplace, DiagFisherLaplace, LaplaceConfig,
};
use langevin::optim::{Optim, OptimConfig, Optimizer};
use langevin::vi::{DenseVi, DenseViConfig, DiagVi, DiagViConfig};
use langevin::{chain_rng, Error, FnDensity, LogDensity, Params, Transform, TransformState};

fn assert_send_sync<T: Send + Sync>() {}

/// log N(x; 1, I) with an optional NaN.
fn gaussian(nan: bool) -> impl LogDensity<Batch = (), Aux = ()> {
    FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
        let mut lp = 0.0;
        for (gj, xj) in g.iter_mut().zip(x) {
            *gj = -(xj - 1.0);
            lp -= 0.5 * (xj - 1.0).powi(2);
        }
        if nan {
            f64::NAN
        } else {
            lp
        }
    })
}

/// Three observations around 1 per coordinate: ℓᵢ = −|yᵢ − θ|²/2.
fn per_example(nan: bool) -> impl PerExampleLogLik<Batch = ()> {
    FnPerExample::new(move |t: &[f64], _: &()| {
        let mut vals = Vec::new();
        let mut grads = Vec::new();
        for shift in [0.5, 1.0, 1.7] {
            let r: Vec<f64> = t.iter().map(|x| shift - x).collect();
            vals.push(if nan {
                f64::NAN
            } else {
                -0.5 * r.iter().map(|v| v * v).sum::<f64>()
            });
            grads.extend(r);
        }
        (vals, grads)
    })
}

fn check<T: Transform<Batch = ()>>(name: &str, t: &T, t_nan: &T, dim: usize) {
    let start: Vec<f64> = (0..dim).map(|i| 0.2 * i as f64 - 0.3).collect();
    let run = |seed: u64| {
        let mut rng = chain_rng(seed, 0);
        let mut s = t.init(Params::from_vec(start.clone()), &mut rng).unwrap();
        for _ in 0..10 {
            t.step(&mut s, &(), &mut rng).unwrap();
        }
        s
    };
    let a = run(3);
    let b = run(3);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap(),
        "{name}: same seed, same state"
    );
    assert_eq!(a.step(), 10);
    assert!(a.params().values().iter().all(|v| v.is_finite()));

    let json = serde_json::to_string(&a).unwrap();
    let a2: T::State = serde_json::from_str(&json).unwrap();
    let (n1, _) = t.update(&a, &(), &mut chain_rng(9, 1)).unwrap();
    let (n2, _) = t.update(&a2, &(), &mut chain_rng(9, 1)).unwrap();
    assert_eq!(
        serde_json::to_string(&n1).unwrap(),
        serde_json::to_string(&n2).unwrap(),
        "{name}: serde round trip changed the next step"
    );
    assert_eq!(
        json,
        serde_json::to_string(&a).unwrap(),
        "{name}: update mutated its input"
    );

    let mut rng = chain_rng(0, 0);
    let mut s = t_nan
        .init(Params::from_vec(start.clone()), &mut rng)
        .unwrap();
    let before = serde_json::to_string(&s).unwrap();
    match t_nan.step(&mut s, &(), &mut rng) {
        Err(Error::NonFiniteLogDensity { step: 0, .. }) => {}
        other => panic!("{name}: expected NonFiniteLogDensity, got {other:?}"),
    }
    assert_eq!(
        before,
        serde_json::to_string(&s).unwrap(),
        "{name}: failed step changed the state"
    );
}

#[test]
fn optimisers_conform() {
    for opt in [
        Optimizer::sgd_momentum(0.1, 0.9, true),
        Optimizer::adam(0.1),
        Optimizer::adamw(0.1, 0.01),
    ] {
        let cfg = OptimConfig {
            optimizer: opt,
            ..OptimConfig::default()
        };
        let t = Optim::new(gaussian(false), cfg.clone()).unwrap();
        let tn = Optim::new(gaussian(true), cfg).unwrap();
        assert_send_sync::<Optim<FnDensity<(), fn(&[f64], &(), &mut [f64]) -> f64>>>();
        check("optim", &t, &tn, 5);
    }
}

#[test]
fn vi_conforms() {
    for dim in [1, 6] {
        let t = DiagVi::new(gaussian(false), DiagViConfig::default()).unwrap();
        let tn = DiagVi::new(gaussian(true), DiagViConfig::default()).unwrap();
        check("vi diag", &t, &tn, dim);
        let t = DenseVi::new(gaussian(false), DenseViConfig::default()).unwrap();
        let tn = DenseVi::new(gaussian(true), DenseViConfig::default()).unwrap();
        check("vi dense", &t, &tn, dim);
    }
}

#[test]
fn laplace_and_ekf_conform() {
    for dim in [1, 6] {
        let t = DiagFisherLaplace::new(per_example(false), LaplaceConfig::default()).unwrap();
        let tn = DiagFisherLaplace::new(per_example(true), LaplaceConfig::default()).unwrap();
        check("laplace diag fisher", &t, &tn, dim);
        let t = DenseFisherLaplace::new(per_example(false), LaplaceConfig::default()).unwrap();
        let tn = DenseFisherLaplace::new(per_example(true), LaplaceConfig::default()).unwrap();
        check("laplace dense fisher", &t, &tn, dim);
        let t = DenseHessianLaplace::new(gaussian(false), DenseHessianConfig::default()).unwrap();
        let tn = DenseHessianLaplace::new(gaussian(true), DenseHessianConfig::default()).unwrap();
        check("laplace dense hessian", &t, &tn, dim);
        let cfg = EkfConfig {
            step_size: 0.1.into(),
            transition_sd: 0.01,
            init_sd: 1.0,
        };
        let t = DiagEkf::new(per_example(false), cfg.clone()).unwrap();
        let tn = DiagEkf::new(per_example(true), cfg.clone()).unwrap();
        check("ekf diag", &t, &tn, dim);
        let t = DenseEkf::new(per_example(false), cfg.clone()).unwrap();
        let tn = DenseEkf::new(per_example(true), cfg).unwrap();
        check("ekf dense", &t, &tn, dim);
    }
}
