//! Step-size and temperature schedules: a constant or any `Fn(step) -> f64`.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The floor of [`Schedule::cyclical`], as a fraction of its base.
pub const CYCLICAL_FLOOR: f64 = 1e-3;

/// A value that may depend on the step count (0-based: the step about to be taken).
#[derive(Clone)]
pub enum Schedule {
    Constant(f64),
    Fn(Arc<dyn Fn(u64) -> f64 + Send + Sync>),
}

impl Schedule {
    /// A schedule from any function of the step.
    pub fn from_fn(f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Self {
        Schedule::Fn(Arc::new(f))
    }

    /// Polynomial decay `a (b + step)^(-gamma)` (Welling and Teh's SGLD schedule).
    pub fn polynomial(a: f64, b: f64, gamma: f64) -> Self {
        Self::from_fn(move |t| a * (b + t as f64).powf(-gamma))
    }

    /// Half-cosine decay from `start` at step 0 to `end` at step `steps`,
    /// constant at `end` afterwards (`steps = 0` counts as 1):
    ///
    /// ```text
    /// x = min(step / steps, 1),   value = end + (start − end) (1 + cos(π x)) / 2
    /// ```
    ///
    /// The usual learning-rate decay of an optimiser (`end = start / 100`, say).
    /// The values are checked where the schedule is used, as for any
    /// function ([`at_checked`](Self::at_checked)).
    pub fn cosine(start: f64, end: f64, steps: u64) -> Self {
        let steps = steps.max(1) as f64;
        Self::from_fn(move |t| {
            let x = (t as f64 / steps).min(1.0);
            end + 0.5 * (start - end) * (1.0 + (std::f64::consts::PI * x).cos())
        })
    }

    /// The cyclical step size of cSG-MCMC (Zhang, Li, Zhang, Chen and
    /// Wilson, 2020, *Cyclical stochastic gradient MCMC for Bayesian deep
    /// learning*): `cycles` = M cosine cycles over `total_steps` = K steps,
    /// each of length L = ⌈K / M⌉,
    ///
    /// ```text
    /// ε_k = max(base / 2 · (cos(π · mod(k, L) / L) + 1),  base · 1e-3)
    /// ```
    ///
    /// so every cycle starts at `base` and decays towards 0 (steps after K
    /// go on cycling). The floor `base · 1e-3` ([`CYCLICAL_FLOOR`] × base)
    /// keeps the schedule strictly positive, as a step size must be (without
    /// it the last step of a long cycle is `base · O(1/L²)`, and a
    /// sampler's injected noise with it): it only touches the last
    /// ≈ 2 % of each cycle (where `cos + 1 < 2e-3`).
    ///
    /// Refused with [`Error::InvalidConfig`]: `base` not finite or not > 0,
    /// `cycles` = 0, `total_steps < cycles`.
    pub fn cyclical(base: f64, cycles: u64, total_steps: u64) -> Result<Self> {
        if !(base.is_finite() && base > 0.0) {
            return Err(Error::config(
                "step_size",
                format!("the base of a cyclical schedule must be finite and > 0, got {base}"),
            ));
        }
        if cycles == 0 {
            return Err(Error::config("cycles", "must be >= 1, got 0"));
        }
        if total_steps < cycles {
            return Err(Error::config(
                "cycles",
                format!("{cycles} cycles do not fit in {total_steps} steps (at most one cycle per step)"),
            ));
        }
        let len = total_steps.div_ceil(cycles);
        let floor = base * CYCLICAL_FLOOR;
        Ok(Self::from_fn(move |k| {
            let x = (k % len) as f64 / len as f64;
            (0.5 * base * ((std::f64::consts::PI * x).cos() + 1.0)).max(floor)
        }))
    }

    /// Value at `step`.
    #[inline]
    pub fn at(&self, step: u64) -> f64 {
        match self {
            Schedule::Constant(c) => *c,
            Schedule::Fn(f) => f(step),
        }
    }

    /// Validate a constant at construction; a function is validated at each use.
    pub(crate) fn check(&self, field: &'static str, positive: bool) -> Result<()> {
        if let Schedule::Constant(c) = self {
            check_value(field, *c, positive)?;
        }
        Ok(())
    }

    /// Value at `step`, validated (functions may return anything).
    pub fn at_checked(&self, field: &'static str, step: u64, positive: bool) -> Result<f64> {
        let v = self.at(step);
        check_value(field, v, positive)?;
        Ok(v)
    }

    /// Validate as a strictly positive schedule (step sizes).
    pub fn validate_positive(&self, field: &'static str) -> Result<()> {
        self.check(field, true)
    }

    /// Validate as a non-negative schedule (temperatures).
    pub fn validate_non_negative(&self, field: &'static str) -> Result<()> {
        self.check(field, false)
    }
}

fn check_value(field: &'static str, v: f64, positive: bool) -> Result<()> {
    if !v.is_finite() {
        return Err(Error::config(field, format!("must be finite, got {v}")));
    }
    if positive && v <= 0.0 {
        return Err(Error::config(field, format!("must be > 0, got {v}")));
    }
    if !positive && v < 0.0 {
        return Err(Error::config(field, format!("must be >= 0, got {v}")));
    }
    Ok(())
}

impl From<f64> for Schedule {
    fn from(v: f64) -> Self {
        Schedule::Constant(v)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant(c) => write!(f, "Constant({c})"),
            Schedule::Fn(_) => write!(f, "Fn(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_fn() {
        let s: Schedule = 0.5.into();
        assert_eq!(s.at(10), 0.5);
        let s = Schedule::from_fn(|t| 1.0 / (1.0 + t as f64));
        assert_eq!(s.at(1), 0.5);
        assert!(Schedule::from(-1.0).validate_positive("step_size").is_err());
        assert!(Schedule::from(0.0)
            .validate_non_negative("temperature")
            .is_ok());
        assert!(Schedule::from(f64::NAN)
            .validate_non_negative("temperature")
            .is_err());
        assert!(Schedule::from_fn(|_| -1.0)
            .at_checked("t", 0, false)
            .is_err());
    }

    #[test]
    fn cosine_schedule_ends_at_its_floor() {
        let s = Schedule::cosine(1e-2, 1e-4, 100);
        assert!((s.at(0) - 1e-2).abs() < 1e-15);
        assert!((s.at(100) - 1e-4).abs() < 1e-15);
        assert_eq!(s.at(1000), s.at(100));
        assert!(s.at(50) < 1e-2 && s.at(50) > 1e-4);
        // Monotone between the ends; the middle is the mean of the ends.
        assert!((1..=100).all(|t| s.at(t) <= s.at(t - 1)));
        assert!((s.at(50) - 0.5 * (1e-2 + 1e-4)).abs() < 1e-15);
        // steps = 0 counts as one step.
        assert_eq!(Schedule::cosine(1.0, 0.5, 0).at(1), 0.5);
    }

    /// The values are bit for bit those of the formula the CLI used
    /// (`langevin-cli`'s `cosine(lr, end, steps)` before it moved here).
    #[test]
    fn cosine_schedule_is_bit_identical_to_the_formula() {
        let reference = |lr: f64, end: f64, steps: u64, t: u64| -> f64 {
            let steps = steps.max(1) as f64;
            let x = (t as f64 / steps).min(1.0);
            end + 0.5 * (lr - end) * (1.0 + (std::f64::consts::PI * x).cos())
        };
        for (lr, end, steps) in [(1e-2, 1e-4, 100), (0.3, 0.003, 7), (1.0, 0.0, 0)] {
            let s = Schedule::cosine(lr, end, steps);
            for t in 0..(steps + 5) {
                assert_eq!(s.at(t).to_bits(), reference(lr, end, steps, t).to_bits());
            }
        }
    }

    #[test]
    fn cyclical_schedule_values() {
        // K = 100, M = 4: cycles of L = 25 steps.
        let s = Schedule::cyclical(0.2, 4, 100).unwrap();
        for c in 0..6u64 {
            // Every cycle (and those after K) starts at the base ...
            assert_eq!(s.at(25 * c), 0.2);
            // ... is half-way at a quarter turn of the cosine: base / 2 at L / 2 ...
            assert!(
                (s.at(25 * c + 12) - 0.1 * ((std::f64::consts::PI * 12.0 / 25.0).cos() + 1.0))
                    .abs()
                    < 1e-15
            );
            // ... and decreases to its end.
            assert!((25 * c + 1..25 * c + 25).all(|k| s.at(k) < s.at(k - 1)));
            let end = 0.1 * ((std::f64::consts::PI * 24.0 / 25.0).cos() + 1.0);
            assert!((s.at(25 * c + 24) - end).abs() < 1e-15);
        }
        // ⌈K / M⌉: K = 10, M = 3 gives cycles of 4 steps.
        let s = Schedule::cyclical(1.0, 3, 10).unwrap();
        assert_eq!((s.at(4), s.at(8)), (1.0, 1.0));
        assert!((s.at(2) - 0.5).abs() < 1e-15);
        // One cycle per step: the base throughout.
        let s = Schedule::cyclical(0.5, 7, 7).unwrap();
        assert!((0..20).all(|k| s.at(k) == 0.5));
    }

    #[test]
    fn cyclical_schedule_is_strictly_positive_and_validated() {
        // A long cycle would end at base · O(1/L²): the floor base · 1e-3 holds.
        let s = Schedule::cyclical(1e-2, 1, 1_000_000).unwrap();
        assert_eq!(s.at(999_999), 1e-2 * CYCLICAL_FLOOR);
        assert!((0..1_000_000)
            .step_by(997)
            .all(|k| s.at(k) >= 1e-5 && s.at(k) <= 1e-2));
        assert!(s.validate_positive("step_size").is_ok());
        assert!((0..2000).all(|k| s.at_checked("step_size", k, true).is_ok()));
        for (base, m, k) in [
            (0.0, 1, 10),
            (-1.0, 1, 10),
            (f64::NAN, 1, 10),
            (f64::INFINITY, 1, 10),
            (1.0, 0, 10),
            (1.0, 11, 10),
            (1.0, 1, 0),
        ] {
            assert!(
                matches!(
                    Schedule::cyclical(base, m, k),
                    Err(Error::InvalidConfig { .. })
                ),
                "{base} {m} {k}"
            );
        }
    }
}
