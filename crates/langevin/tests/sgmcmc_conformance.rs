//! The conformance suite over every SGMCMC transform.

mod common;

use common::{check_nan_step, conformance, nan_density, Gaussian};
use langevin::sgmcmc::{
    Baoa, BaoaConfig, MomentaInit, Sghmc, SghmcConfig, Sgld, SgldConfig, Sgnht, SgnhtConfig,
};

fn std_normal(dim: usize) -> Gaussian {
    Gaussian::isotropic(vec![0.0; dim], 1.0)
}

#[test]
fn sgld_conforms() {
    let cfg = |t: f64| SgldConfig {
        step_size: 0.05.into(),
        temperature: t.into(),
        ..Default::default()
    };
    conformance(
        "sgld",
        |d, t| Sgld::new(std_normal(d), cfg(t)).unwrap(),
        |_| {
            Box::new(move |p, seed| {
                check_nan_step(&Sgld::new(nan_density(), cfg(1.0)).unwrap(), p, seed)
            })
        },
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
    conformance(
        "sghmc",
        |d, t| Sghmc::new(std_normal(d), cfg(t)).unwrap(),
        |_| {
            Box::new(move |p, seed| {
                check_nan_step(&Sghmc::new(nan_density(), cfg(1.0)).unwrap(), p, seed)
            })
        },
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
    conformance(
        "sgnht",
        |d, t| Sgnht::new(std_normal(d), cfg(t)).unwrap(),
        |_| {
            Box::new(move |p, seed| {
                check_nan_step(&Sgnht::new(nan_density(), cfg(1.0)).unwrap(), p, seed)
            })
        },
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
    conformance(
        "baoa",
        |d, t| Baoa::new(std_normal(d), cfg(t)).unwrap(),
        |_| {
            Box::new(move |p, seed| {
                check_nan_step(&Baoa::new(nan_density(), cfg(1.0)).unwrap(), p, seed)
            })
        },
    );
}

#[test]
fn invalid_hyper_parameters_are_rejected_at_construction() {
    let g = || std_normal(2);
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
    // Given momenta of the wrong length are rejected at init.
    let t = Sghmc::new(
        g(),
        SghmcConfig {
            momenta: MomentaInit::Given(vec![0.0; 3]),
            ..Default::default()
        },
    )
    .unwrap();
    use langevin::Transform;
    assert!(t
        .init(
            langevin::Params::from_vec(vec![0.0; 2]),
            &mut langevin::chain_rng(0, 0)
        )
        .is_err());
}
