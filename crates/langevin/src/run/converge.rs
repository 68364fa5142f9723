//! Runs until converged: the rule and its verdict.

use serde::{Deserialize, Serialize};

use langevin_core::{Error, Result};

use crate::samples::Samples;

/// Run until every parameter's chains agree and enough independent draws
/// were kept: after the warm-up, after every round, the run stops when every
/// rank-normalised split R-hat is at most `max_rhat` and every bulk and tail
/// ESS is at least `target_ess` (or at [`super::RunConfig::steps`], the
/// maximum).
///
/// The number of steps is not known in advance, so neither is the right
/// thinning: the run keeps every `thinning.thin`-th state and, whenever a
/// chain holds more than `max_draws` draws, keeps every second one and
/// doubles the interval ([`super::Observer::on_thinned`]). Each chain then
/// holds between `max_draws / 2` and `max_draws` draws, spread over the
/// whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Until {
    /// Smallest bulk and tail ESS of every parameter.
    pub target_ess: f64,
    /// Largest R-hat of every parameter.
    pub max_rhat: f64,
    /// Most draws a chain keeps (>= 2 × `min_draws`).
    pub max_draws: usize,
    /// A verdict needs at least this many draws per chain.
    pub min_draws: usize,
}

impl Default for Until {
    fn default() -> Self {
        Self {
            target_ess: 400.0,
            max_rhat: 1.01,
            max_draws: 1000,
            min_draws: 100,
        }
    }
}

impl Until {
    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.target_ess.is_finite() && self.target_ess > 0.0) {
            return Err(Error::config(
                "target_ess",
                format!("must be finite and > 0, got {}", self.target_ess),
            ));
        }
        if !(self.max_rhat.is_finite() && self.max_rhat > 1.0) {
            return Err(Error::config(
                "max_rhat",
                format!("must be finite and > 1, got {}", self.max_rhat),
            ));
        }
        if self.min_draws < crate::diagnostics::MIN_DRAWS {
            return Err(Error::config(
                "min_draws",
                format!("must be >= {}", crate::diagnostics::MIN_DRAWS),
            ));
        }
        if self.max_draws < 2 * self.min_draws {
            return Err(Error::config(
                "max_draws",
                format!(
                    "must be at least twice min_draws ({}), got {}",
                    self.min_draws, self.max_draws
                ),
            ));
        }
        Ok(())
    }
}

/// Whether a set of draws has converged, and why (or why not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every R-hat ≤ the maximum and every bulk and tail ESS ≥ the target.
    pub converged: bool,
    /// The rule applied.
    pub target_ess: f64,
    pub max_rhat: f64,
    /// The largest R-hat and its parameter (`NaN` when not computable).
    #[serde(with = "nan_null")]
    pub worst_rhat: f64,
    pub worst_rhat_param: String,
    /// The smallest bulk ESS and its parameter.
    #[serde(with = "nan_null")]
    pub min_ess_bulk: f64,
    pub min_ess_bulk_param: String,
    /// The smallest tail ESS and its parameter.
    #[serde(with = "nan_null")]
    pub min_ess_tail: f64,
    pub min_ess_tail_param: String,
    /// Draws per chain the verdict is based on.
    pub draws_per_chain: usize,
    /// One sentence: the verdict and its reason.
    pub reason: String,
}

mod nan_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_some(v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl Verdict {
    /// The verdict on `samples` under `target_ess` and `max_rhat`, from
    /// [`Samples::summary`] (the first `min_draws()` draws of each chain).
    /// Needs at least `min_draws` draws per chain to say "converged".
    pub fn of(samples: &Samples, target_ess: f64, max_rhat: f64, min_draws: usize) -> Result<Self> {
        let n = samples.min_draws();
        let summary = samples.summary()?;
        let mut v = Verdict {
            converged: false,
            target_ess,
            max_rhat,
            worst_rhat: f64::NEG_INFINITY,
            worst_rhat_param: String::new(),
            min_ess_bulk: f64::INFINITY,
            min_ess_bulk_param: String::new(),
            min_ess_tail: f64::INFINITY,
            min_ess_tail_param: String::new(),
            draws_per_chain: n,
            reason: String::new(),
        };
        let mut not_computable = None;
        for p in &summary {
            let s = &p.summary;
            if !(s.rhat.is_finite() && s.ess_bulk.is_finite() && s.ess_tail.is_finite()) {
                not_computable.get_or_insert(p.name.clone());
                continue;
            }
            if s.rhat > v.worst_rhat {
                v.worst_rhat = s.rhat;
                v.worst_rhat_param = p.name.clone();
            }
            if s.ess_bulk < v.min_ess_bulk {
                v.min_ess_bulk = s.ess_bulk;
                v.min_ess_bulk_param = p.name.clone();
            }
            if s.ess_tail < v.min_ess_tail {
                v.min_ess_tail = s.ess_tail;
                v.min_ess_tail_param = p.name.clone();
            }
        }
        let rule = format!("every R-hat <= {max_rhat} and every bulk and tail ESS >= {target_ess}");
        if let Some(name) = not_computable {
            for x in [&mut v.worst_rhat, &mut v.min_ess_bulk, &mut v.min_ess_tail] {
                if !x.is_finite() {
                    *x = f64::NAN;
                }
            }
            v.reason = format!(
                "not converged: the diagnostics of `{name}` cannot be computed \
                 ({n} draws per chain; constant or non-finite draws?)"
            );
            return Ok(v);
        }
        let mut why = Vec::new();
        if v.worst_rhat > max_rhat {
            why.push(format!(
                "R-hat of `{}` is {:.3} (> {max_rhat})",
                v.worst_rhat_param, v.worst_rhat
            ));
        }
        if v.min_ess_bulk < target_ess {
            why.push(format!(
                "bulk ESS of `{}` is {:.0} (< {target_ess})",
                v.min_ess_bulk_param, v.min_ess_bulk
            ));
        }
        if v.min_ess_tail < target_ess {
            why.push(format!(
                "tail ESS of `{}` is {:.0} (< {target_ess})",
                v.min_ess_tail_param, v.min_ess_tail
            ));
        }
        if n < min_draws {
            why.push(format!("{n} draws per chain (< {min_draws})"));
        }
        v.converged = why.is_empty();
        v.reason = if v.converged {
            format!("converged: {rule}")
        } else {
            format!("not converged: {}", why.join("; "))
        };
        Ok(v)
    }
}
