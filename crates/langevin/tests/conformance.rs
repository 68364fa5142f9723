//! The one conformance suite: every transform of the library (SGMCMC,
//! optimisers, VI, Laplace, EKF) passes the same checks of the
//! [`Transform`] contract, at several dimensions:
//!
//! * the transform is `Send + Sync`; `init` then 50 steps give finite
//!   parameters, a finite recorded log density and a step count of 50;
//! * same seed, same state (every field); a different seed gives a different
//!   state for a transform that draws noise, and the same state for one
//!   that does not;
//! * a state straight from `init` (log density NaN) survives JSON;
//! * a JSON round trip of the state (and of the RNG) gives a bit-identical
//!   next step;
//! * `update` leaves its input untouched and equals `step` on a copy (same
//!   state, same RNG position afterwards);
//! * a non-finite log density value, or a non-finite gradient, is
//!   `NonFiniteLogDensity` at step 0 and leaves the state bit-identical and
//!   usable (a step with a well-behaved density then succeeds);
//! * where the transform is an optimiser (SGMCMC at T = 0, SGD), 3000 steps
//!   bring it 1000 times closer to the mode.
//!
//! Every target has its mode at 0 (a standard normal) except the
//! per-example likelihoods of Laplace and EKF (three observations per
//! coordinate, at 0.5, 1 and 1.7).

mod common;

use common::norm;
use langevin::curvature::{FnPerExample, PerExampleLogLik};
use langevin::ekf::{DenseEkf, DiagEkf, EkfConfig};
use langevin::laplace::{
    DenseFisherLaplace, DenseHessianConfig, DenseHessianLaplace, DiagFisherLaplace, LaplaceConfig,
};
use langevin::optim::{Optim, OptimConfig, Optimizer};
use langevin::sgmcmc::{
    Baoa, BaoaConfig, MomentaInit, Sghmc, SghmcConfig, Sgld, SgldConfig, Sgnht, SgnhtConfig,
};
use langevin::vi::{DenseVi, DenseViConfig, DiagVi, DiagViConfig, Ivon, IvonConfig};
use langevin::{
    chain_rng, ChainRng, Error, FnDensity, LogDensity, Params, Transform, TransformState,
};

/// Where a density misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Nan {
    /// Well-behaved.
    No,
    /// A NaN value (finite gradient).
    Value,
    /// A NaN gradient entry (finite value).
    Gradient,
}

/// log N(x; 0, I), or its misbehaving variant.
fn gaussian(nan: Nan) -> impl LogDensity<Batch = (), Aux = ()> {
    FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
        let mut lp = 0.0;
        for (gj, xj) in g.iter_mut().zip(x) {
            *gj = -xj;
            lp -= 0.5 * xj * xj;
        }
        match nan {
            Nan::No => lp,
            Nan::Value => f64::NAN,
            Nan::Gradient => {
                g[g.len() - 1] = f64::NAN;
                lp
            }
        }
    })
}

/// Three observations per coordinate, at 0.5, 1 and 1.7:
/// `ℓᵢ = −|yᵢ − θ|²/2`, or its misbehaving variant.
fn per_example(nan: Nan) -> impl PerExampleLogLik<Batch = ()> {
    FnPerExample::new(move |t: &[f64], _: &()| {
        let mut vals = Vec::new();
        let mut grads = Vec::new();
        for shift in [0.5, 1.0, 1.7] {
            let mut r: Vec<f64> = t.iter().map(|x| shift - x).collect();
            vals.push(if nan == Nan::Value {
                f64::NAN
            } else {
                -0.5 * r.iter().map(|v| v * v).sum::<f64>()
            });
            if nan == Nan::Gradient {
                r[0] = f64::NAN;
            }
            grads.extend(r);
        }
        (vals, grads)
    })
}

fn assert_send_sync<T: Send + Sync>() {}

fn json<S: serde::Serialize>(s: &S) -> String {
    serde_json::to_string(s).unwrap()
}

fn bits(p: &Params) -> Vec<u64> {
    p.values().iter().map(|v| v.to_bits()).collect()
}

/// Whether a transform draws noise from its RNG.
#[derive(Clone, Copy, PartialEq)]
enum Noise {
    Draws,
    None,
}

/// The suite over one transform. `make(dim)` builds it on a well-behaved
/// target, `make_nan(dim, nan)` on a misbehaving one; `optimiser(dim)`,
/// where given, builds a variant that must approach the mode 0.
fn conform<T, M, N>(
    name: &str,
    dims: &[usize],
    noise: Noise,
    make: M,
    make_nan: N,
    optimiser: Option<&dyn Fn(usize) -> T>,
) where
    T: Transform<Batch = ()>,
    M: Fn(usize) -> T,
    N: Fn(usize, Nan) -> T,
{
    assert_send_sync::<T>();
    for &dim in dims {
        let name = format!("{name} (dim {dim})");
        let name = name.as_str();
        let start: Vec<f64> = (0..dim).map(|i| 1.0 + (i % 7) as f64 * 0.25).collect();
        let init = |t: &T, rng: &mut ChainRng| t.init(Params::from_vec(start.clone()), rng);
        let t = make(dim);

        // init and 50 steps: finite, counted, log density recorded.
        let mut rng = chain_rng(11, 0);
        let mut s = init(&t, &mut rng).unwrap();
        for _ in 0..50 {
            t.step(&mut s, &(), &mut rng).unwrap();
        }
        assert_eq!(s.step(), 50, "{name}: step count");
        assert!(
            s.params().values().iter().all(|v| v.is_finite()),
            "{name}: non-finite parameters"
        );
        assert!(s.log_density().is_finite(), "{name}: log density recorded");

        // Same seed, same state; a different seed, a different state when
        // the transform draws noise, the same one when it does not.
        let run = |seed: u64| {
            let mut rng = chain_rng(seed, 3);
            let mut s = init(&t, &mut rng).unwrap();
            for _ in 0..20 {
                t.step(&mut s, &(), &mut rng).unwrap();
            }
            s
        };
        let a = run(5);
        let b = run(5);
        assert_eq!(json(&a), json(&b), "{name}: same seed, same state");
        assert!(bits(a.params()) == bits(b.params()), "{name}: same seed");
        let c = run(6);
        match noise {
            Noise::Draws => assert!(
                a.params().values() != c.params().values(),
                "{name}: a different seed must give a different chain"
            ),
            Noise::None => assert_eq!(json(&a), json(&c), "{name}: the seed must not matter"),
        }

        // A state straight from init (log density not evaluated yet: NaN)
        // survives JSON too (a checkpoint may be taken before the first step).
        let fresh = init(&t, &mut chain_rng(5, 3)).unwrap();
        let fresh_json = json(&fresh);
        let fresh_back: T::State = serde_json::from_str(&fresh_json)
            .unwrap_or_else(|e| panic!("{name}: fresh state does not reload: {e}"));
        assert_eq!(json(&fresh_back), fresh_json, "{name}: fresh state");

        // JSON round trip of the state and the RNG: the next step is
        // bit-identical.
        let a_json = json(&a);
        let a2: T::State = serde_json::from_str(&a_json).unwrap();
        assert_eq!(json(&a2), a_json, "{name}: state JSON not stable");
        let rng_json = json(&chain_rng(9, 1));
        let mut r1: ChainRng = serde_json::from_str(&rng_json).unwrap();
        let mut r2: ChainRng = serde_json::from_str(&rng_json).unwrap();
        let (n1, _) = t.update(&a, &(), &mut r1).unwrap();
        let (n2, _) = t.update(&a2, &(), &mut r2).unwrap();
        assert!(
            bits(n1.params()) == bits(n2.params()),
            "{name}: serde round trip changed the next step"
        );
        assert_eq!(json(&n1), json(&n2), "{name}: serde round trip");

        // The functional update leaves its input untouched...
        assert_eq!(a_json, json(&a), "{name}: update mutated its input");
        // ... and equals step on a copy, RNG included.
        let mut r3 = chain_rng(9, 1);
        let mut stepped = a.clone();
        t.step(&mut stepped, &(), &mut r3).unwrap();
        assert_eq!(json(&stepped), json(&n1), "{name}: update != step");
        assert_eq!(
            json(&r3),
            json(&r1),
            "{name}: update and step drew differently"
        );

        // A non-finite value or gradient: an error at step 0, and the state
        // is left bit-identical and usable.
        for nan in [Nan::Value, Nan::Gradient] {
            let tn = make_nan(dim, nan);
            let mut rng = chain_rng(2, 0);
            let mut s = init(&tn, &mut rng).unwrap();
            let before = json(&s);
            match tn.step(&mut s, &(), &mut rng) {
                Err(Error::NonFiniteLogDensity { step: 0, .. }) => {}
                other => panic!("{name}: {nan:?}: expected NonFiniteLogDensity, got {other:?}"),
            }
            assert_eq!(
                before,
                json(&s),
                "{name}: {nan:?}: failed step changed the state"
            );
            t.step(&mut s, &(), &mut rng)
                .unwrap_or_else(|e| panic!("{name}: {nan:?}: state unusable after an error: {e}"));
            assert_eq!(s.step(), 1, "{name}: {nan:?}");
        }

        // An optimiser approaches the mode 0.
        if let Some(optimiser) = optimiser {
            let t0 = optimiser(dim);
            let mut rng = chain_rng(1, 0);
            let mut s = init(&t0, &mut rng).unwrap();
            let d0 = norm(s.params().values());
            for _ in 0..3000 {
                t0.step(&mut s, &(), &mut rng).unwrap();
            }
            let d1 = norm(s.params().values());
            assert!(
                d1 < 1e-3 * d0,
                "{name}: as an optimiser the distance to the mode went {d0} -> {d1}"
            );
        }
    }
}

const SGMCMC_DIMS: &[usize] = &[1, 10, 1000];
const DIAG_DIMS: &[usize] = &[1, 6, 1000];
const DENSE_DIMS: &[usize] = &[1, 6];

#[test]
fn sgld_conforms() {
    let cfg = |t: f64| SgldConfig {
        step_size: 0.05.into(),
        temperature: t.into(),
        ..Default::default()
    };
    conform(
        "sgld",
        SGMCMC_DIMS,
        Noise::Draws,
        |_| Sgld::new(gaussian(Nan::No), cfg(1.0)).unwrap(),
        |_, nan| Sgld::new(gaussian(nan), cfg(1.0)).unwrap(),
        Some(&|_| Sgld::new(gaussian(Nan::No), cfg(0.0)).unwrap()),
    );
}

#[test]
fn sghmc_conforms() {
    let cfg = |t: f64| SghmcConfig {
        step_size: 0.1.into(),
        temperature: t.into(),
        friction: 1.0,
        ..Default::default()
    };
    conform(
        "sghmc",
        SGMCMC_DIMS,
        Noise::Draws,
        |_| Sghmc::new(gaussian(Nan::No), cfg(1.0)).unwrap(),
        |_, nan| Sghmc::new(gaussian(nan), cfg(1.0)).unwrap(),
        Some(&|_| Sghmc::new(gaussian(Nan::No), cfg(0.0)).unwrap()),
    );
}

#[test]
fn sgnht_conforms() {
    let cfg = |t: f64| SgnhtConfig {
        step_size: 0.1.into(),
        temperature: t.into(),
        friction: 1.0,
        ..Default::default()
    };
    conform(
        "sgnht",
        SGMCMC_DIMS,
        Noise::Draws,
        |_| Sgnht::new(gaussian(Nan::No), cfg(1.0)).unwrap(),
        |_, nan| Sgnht::new(gaussian(nan), cfg(1.0)).unwrap(),
        Some(&|_| Sgnht::new(gaussian(Nan::No), cfg(0.0)).unwrap()),
    );
}

#[test]
fn baoa_conforms() {
    let cfg = |t: f64| BaoaConfig {
        step_size: 0.1.into(),
        temperature: t.into(),
        friction: 1.0,
        ..Default::default()
    };
    conform(
        "baoa",
        SGMCMC_DIMS,
        Noise::Draws,
        |_| Baoa::new(gaussian(Nan::No), cfg(1.0)).unwrap(),
        |_, nan| Baoa::new(gaussian(nan), cfg(1.0)).unwrap(),
        Some(&|_| Baoa::new(gaussian(Nan::No), cfg(0.0)).unwrap()),
    );
}

#[test]
fn optimisers_conform() {
    for (opt, converges) in [
        (Optimizer::sgd_momentum(0.1, 0.9, true), true),
        (Optimizer::adam(0.1), false),
        (Optimizer::adamw(0.1, 0.01), false),
        (Optimizer::rmsprop(0.01), false),
        (Optimizer::adagrad(0.1), false),
    ] {
        let cfg = OptimConfig {
            optimizer: opt.clone(),
            ..OptimConfig::default()
        };
        let make = |_: usize| Optim::new(gaussian(Nan::No), cfg.clone()).unwrap();
        conform(
            &format!("optim {opt:?}"),
            DIAG_DIMS,
            Noise::None,
            make,
            |_, nan| Optim::new(gaussian(nan), cfg.clone()).unwrap(),
            converges.then_some(&make as &dyn Fn(usize) -> _),
        );
    }
}

#[test]
fn vi_conforms() {
    conform(
        "vi diag",
        DIAG_DIMS,
        Noise::Draws,
        |_| DiagVi::new(gaussian(Nan::No), DiagViConfig::default()).unwrap(),
        |_, nan| DiagVi::new(gaussian(nan), DiagViConfig::default()).unwrap(),
        None,
    );
    let ivon = || IvonConfig {
        ess: 10.0,
        ..IvonConfig::default()
    };
    conform(
        "ivon",
        DIAG_DIMS,
        Noise::Draws,
        |_| Ivon::new(gaussian(Nan::No), ivon()).unwrap(),
        |_, nan| Ivon::new(gaussian(nan), ivon()).unwrap(),
        None,
    );
    conform(
        "vi dense",
        DENSE_DIMS,
        Noise::Draws,
        |_| DenseVi::new(gaussian(Nan::No), DenseViConfig::default()).unwrap(),
        |_, nan| DenseVi::new(gaussian(nan), DenseViConfig::default()).unwrap(),
        None,
    );
}

#[test]
fn laplace_conforms() {
    conform(
        "laplace diag fisher",
        DIAG_DIMS,
        Noise::None,
        |_| DiagFisherLaplace::new(per_example(Nan::No), LaplaceConfig::default()).unwrap(),
        |_, nan| DiagFisherLaplace::new(per_example(nan), LaplaceConfig::default()).unwrap(),
        None,
    );
    conform(
        "laplace dense fisher",
        DENSE_DIMS,
        Noise::None,
        |_| DenseFisherLaplace::new(per_example(Nan::No), LaplaceConfig::default()).unwrap(),
        |_, nan| DenseFisherLaplace::new(per_example(nan), LaplaceConfig::default()).unwrap(),
        None,
    );
    conform(
        "laplace dense hessian",
        DENSE_DIMS,
        Noise::None,
        |_| DenseHessianLaplace::new(gaussian(Nan::No), DenseHessianConfig::default()).unwrap(),
        |_, nan| DenseHessianLaplace::new(gaussian(nan), DenseHessianConfig::default()).unwrap(),
        None,
    );
}

#[test]
fn ekf_conforms() {
    let cfg = EkfConfig {
        step_size: 0.1.into(),
        transition_sd: 0.01,
        init_sd: 1.0,
    };
    conform(
        "ekf diag",
        DIAG_DIMS,
        Noise::None,
        |_| DiagEkf::new(per_example(Nan::No), cfg.clone()).unwrap(),
        |_, nan| DiagEkf::new(per_example(nan), cfg.clone()).unwrap(),
        None,
    );
    conform(
        "ekf dense",
        DENSE_DIMS,
        Noise::None,
        |_| DenseEkf::new(per_example(Nan::No), cfg.clone()).unwrap(),
        |_, nan| DenseEkf::new(per_example(nan), cfg.clone()).unwrap(),
        None,
    );
}

#[test]
fn invalid_hyper_parameters_are_rejected_at_construction() {
    let g = || gaussian(Nan::No);
    assert!(Sgld::new(
        g(),
        SgldConfig {
            step_size: 0.0.into(),
            ..Default::default()
        }
    )
    .is_err());
    assert!(Sgld::new(
        g(),
        SgldConfig {
            step_size: f64::NAN.into(),
            ..Default::default()
        }
    )
    .is_err());
    assert!(Sgld::new(
        g(),
        SgldConfig {
            temperature: (-1.0).into(),
            ..Default::default()
        }
    )
    .is_err());
    assert!(Sghmc::new(
        g(),
        SghmcConfig {
            sigma: 0.0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Sghmc::new(
        g(),
        SghmcConfig {
            friction: -1.0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Sghmc::new(
        g(),
        SghmcConfig {
            beta: f64::INFINITY,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Sgnht::new(
        g(),
        SgnhtConfig {
            thermostat: Some(f64::NAN),
            ..Default::default()
        }
    )
    .is_err());
    assert!(Baoa::new(
        g(),
        BaoaConfig {
            sigma: -2.0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Optim::new(
        g(),
        OptimConfig {
            optimizer: Optimizer::sgd(-1.0),
            ..OptimConfig::default()
        }
    )
    .is_err());
    assert!(DiagVi::new(
        g(),
        DiagViConfig {
            n_samples: 0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(DenseVi::new(
        g(),
        DenseViConfig {
            temperature: (-1.0).into(),
            ..Default::default()
        }
    )
    .is_err());
    assert!(DiagFisherLaplace::new(
        per_example(Nan::No),
        LaplaceConfig {
            init_prec_diag: -1.0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(DiagEkf::new(
        per_example(Nan::No),
        EkfConfig {
            transition_sd: f64::NAN,
            ..Default::default()
        }
    )
    .is_err());
    // Given momenta of the wrong length are rejected at init.
    let t = Sghmc::new(
        g(),
        SghmcConfig {
            momenta: MomentaInit::Given(vec![0.0; 3]),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(t
        .init(Params::from_vec(vec![0.0; 2]), &mut chain_rng(0, 0))
        .is_err());
}
