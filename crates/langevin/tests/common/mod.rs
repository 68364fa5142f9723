//! Shared test harness: Gaussian targets and the transform conformance suite.
#![allow(dead_code)]

use langevin::{chain_rng, Error, FnDensity, LogDensity, Params, Transform, TransformState};

/// A Gaussian log density `-0.5 (x - mu)^T P (x - mu)` with precision `P` (row-major).
pub struct Gaussian {
    pub mean: Vec<f64>,
    pub precision: Vec<f64>,
}

impl Gaussian {
    /// Isotropic N(mu, s^2 I).
    pub fn isotropic(mean: Vec<f64>, sd: f64) -> Self {
        let d = mean.len();
        let mut precision = vec![0.0; d * d];
        for i in 0..d {
            precision[i * d + i] = 1.0 / (sd * sd);
        }
        Self { mean, precision }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn eval(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let d = self.dim();
        let r: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let mut v = 0.0;
        for i in 0..d {
            let row = &self.precision[i * d..(i + 1) * d];
            let pr: f64 = row.iter().zip(&r).map(|(p, ri)| p * ri).sum();
            g[i] = -pr;
            v += r[i] * pr;
        }
        -0.5 * v
    }
}

impl LogDensity for Gaussian {
    type Batch = ();
    type Aux = ();
    fn value_and_grad(
        &self,
        params: &Params,
        _: &(),
        grad: &mut [f64],
    ) -> langevin::Result<(f64, ())> {
        Ok((self.eval(params.values(), grad), ()))
    }
}

/// A density that is NaN everywhere (to test divergence handling).
pub fn nan_density() -> impl LogDensity<Batch = (), Aux = ()> {
    FnDensity::new(|_: &[f64], _: &(), g: &mut [f64]| {
        g.fill(0.0);
        f64::NAN
    })
}

fn assert_send_sync<T: Send + Sync>() {}

/// The conformance suite every transform must pass.
///
/// `make(dim, temperature)` builds the transform targeting the standard normal
/// in `dim` dimensions (log density `-|x|^2 / 2`, mode 0). `make_nan` builds
/// the same transform over a NaN density.
pub fn conformance<T, F, G>(name: &str, make: F, make_nan: G)
where
    T: Transform<Batch = ()>,
    F: Fn(usize, f64) -> T,
    G: Fn(usize) -> Box<dyn Fn(Params, u64) -> Result<(), Error>>,
{
    assert_send_sync::<T>();
    for &dim in &[1usize, 10, 1000] {
        let start: Vec<f64> = (0..dim).map(|i| 1.0 + (i % 7) as f64 * 0.25).collect();
        let t = make(dim, 1.0);

        // init/update at this dimension, no NaN on a well-posed Gaussian.
        let mut rng = chain_rng(11, 0);
        let mut s = t.init(Params::from_vec(start.clone()), &mut rng).unwrap();
        for _ in 0..50 {
            t.step(&mut s, &(), &mut rng).unwrap();
        }
        assert_eq!(s.step(), 50, "{name}: step count");
        assert!(
            s.params().values().iter().all(|v| v.is_finite()),
            "{name}: non-finite parameters at dim {dim}"
        );
        assert!(s.log_density().is_finite(), "{name}: log density recorded");

        // Same seed, same result; different seed, different result.
        let run = |seed: u64| {
            let mut rng = chain_rng(seed, 3);
            let mut s = t.init(Params::from_vec(start.clone()), &mut rng).unwrap();
            for _ in 0..20 {
                t.step(&mut s, &(), &mut rng).unwrap();
            }
            s
        };
        let a = run(5);
        let b = run(5);
        assert!(
            a.params().values() == b.params().values(),
            "{name}: same seed must give the same result"
        );
        let c = run(6);
        assert!(
            a.params().values() != c.params().values(),
            "{name}: a different seed must give a different chain at T = 1"
        );

        // A state straight from init (log density not evaluated yet: NaN)
        // survives JSON too (a checkpoint may be taken before the first step).
        let fresh = t
            .init(Params::from_vec(start.clone()), &mut chain_rng(5, 3))
            .unwrap();
        let fresh_json = serde_json::to_string(&fresh).unwrap();
        let fresh_back: T::State = serde_json::from_str(&fresh_json)
            .unwrap_or_else(|e| panic!("{name}: fresh state does not reload: {e}"));
        assert_eq!(serde_json::to_string(&fresh_back).unwrap(), fresh_json);

        // Serde round trip: the next step is bit-identical.
        let json = serde_json::to_string(&a).unwrap();
        let a2: T::State = serde_json::from_str(&json).unwrap();
        let rng_json = serde_json::to_string(&chain_rng(9, 1)).unwrap();
        let mut r1: langevin::ChainRng = serde_json::from_str(&rng_json).unwrap();
        let mut r2: langevin::ChainRng = serde_json::from_str(&rng_json).unwrap();
        let (n1, _) = t.update(&a, &(), &mut r1).unwrap();
        let (n2, _) = t.update(&a2, &(), &mut r2).unwrap();
        let bits = |s: &T::State| -> Vec<u64> {
            s.params().values().iter().map(|v| v.to_bits()).collect()
        };
        assert!(
            bits(&n1) == bits(&n2),
            "{name}: serde round trip changed the next step"
        );

        // The functional update leaves its input untouched.
        let before = a.params().values().to_vec();
        let _ = t.update(&a, &(), &mut chain_rng(1, 1)).unwrap();
        assert!(
            before == a.params().values(),
            "{name}: update mutated its input"
        );

        // NaN log density: an error, and the state is left untouched and usable.
        let check_nan = make_nan(dim);
        check_nan(Params::from_vec(start.clone()), 2).unwrap();

        // T = 0 behaves as an optimiser: it approaches the mode 0.
        let t0 = make(dim, 0.0);
        let mut rng = chain_rng(1, 0);
        let mut s = t0.init(Params::from_vec(start.clone()), &mut rng).unwrap();
        let d0 = norm(s.params().values());
        for _ in 0..3000 {
            t0.step(&mut s, &(), &mut rng).unwrap();
        }
        let d1 = norm(s.params().values());
        assert!(
            d1 < 1e-3 * d0,
            "{name}: at T = 0 the distance to the mode went {d0} -> {d1}"
        );
    }
}

/// For `make_nan`: init at `params`, then check one step on the NaN density
/// fails with `NonFiniteLogDensity` and leaves the state bit-identical.
pub fn check_nan_step<T: Transform<Batch = ()>>(
    t: &T,
    params: Params,
    seed: u64,
) -> Result<(), Error> {
    let mut rng = chain_rng(seed, 0);
    let mut s = t.init(params, &mut rng)?;
    let before = serde_json::to_string(&s).unwrap();
    match t.step(&mut s, &(), &mut rng) {
        Err(Error::NonFiniteLogDensity { step: 0, .. }) => {}
        other => panic!("expected NonFiniteLogDensity at step 0, got {other:?}"),
    }
    assert_eq!(
        before,
        serde_json::to_string(&s).unwrap(),
        "state changed by a failed step"
    );
    Ok(())
}

pub fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}
