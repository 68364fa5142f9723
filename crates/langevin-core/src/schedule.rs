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
}
