//! Step-size and temperature schedules: a constant or any `Fn(step) -> f64`.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

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
}
