//! Data-parallel gradients: the rows of the data split over processes.
//!
//! Every process (a *rank*) holds a shard of the rows and the *whole* state
//! of the chains. At each evaluation every rank computes its shard's part of
//! the batch-averaged log posterior and its gradient, and the parts are
//! summed over the ranks ([`Allreduce::sum`]) in rank order, so that every
//! rank gets the same bits and the chains stay identical on every rank: the
//! noise is drawn from the chain's generator on every rank, the same way, and
//! only the gradient travels.
//!
//! # The decomposition
//!
//! A minibatch `b` of `B` rows (indices into all `N` rows, drawn from the
//! chain's generator exactly as in one process) meets rank `k`'s shard in
//! `b_k` rows (`Σ_k b_k = B`). With the batch-averaged density of DESIGN
//! (`f_b(θ) = mean_{i ∈ b} log p(y_i | θ) + log p(θ)/N`),
//!
//! ```text
//! f_b(θ) = Σ_k (b_k / B) · f_{b ∩ shard_k}(θ)
//! ```
//!
//! because `Σ_k (b_k/B) · log p(θ)/N = log p(θ)/N`: each rank evaluates the
//! model's own density on its `b_k` rows and weights it by `b_k / B`
//! ([`ShardedDensity`]); a rank with no row of the batch adds zero. The
//! minibatches are therefore those of a single process with the same seed,
//! and a run over `K` ranks differs from the single process only by the
//! rounding of the sum (different `K`, same distribution; same `K`, same
//! bits).
//!
//! # Failures
//!
//! A rank whose evaluation fails still takes part in the sum (with a flag),
//! so no rank waits forever: every rank then returns an error for that
//! evaluation, a non-finite value (a divergence, which the run loop skips on
//! every rank alike) when the failure was one, else the failing rank's own
//! error there and [`Error::Remote`] on the others.

use langevin_core::{Error, LogDensity, Params, Result};

/// Element-wise sums over the ranks of a data-parallel run.
pub trait Allreduce: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Replace `buf` on every rank by the element-wise sum of every rank's
    /// `buf`, added in rank order (`((x_0 + x_1) + x_2) + ...`), so that
    /// every rank gets the same bits. Every rank must call it with buffers
    /// of the same length, in the same order of calls.
    fn sum(&self, buf: &mut [f64]) -> Result<()>;
}

impl<R: Allreduce + ?Sized> Allreduce for &R {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn sum(&self, buf: &mut [f64]) -> Result<()> {
        (**self).sum(buf)
    }
}

/// The single process: the sum is the buffer itself.
impl Allreduce for crate::run::Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// Rank `k`'s share of a batch: its rows of the batch (`None` when it has
/// none), how many they are, and the size of the whole batch.
#[derive(Debug, Clone)]
pub struct Shard<B> {
    /// This rank's rows of the batch.
    pub rows: Option<B>,
    /// `b_k`, the number of those rows.
    pub local: usize,
    /// `B`, the number of rows of the batch over every rank.
    pub global: usize,
    /// Why this rank could not make its part of the batch (the rank still
    /// takes part in the sum, and every rank fails the evaluation).
    pub failure: Option<String>,
}

impl<B> Shard<B> {
    /// A rank's rows of a batch of `global` rows.
    pub fn new(rows: Option<B>, local: usize, global: usize) -> Self {
        Self {
            rows,
            local,
            global,
            failure: None,
        }
    }

    /// A rank that failed to make its part of a batch of `global` rows.
    pub fn failed(global: usize, why: impl Into<String>) -> Self {
        Self {
            rows: None,
            local: 0,
            global,
            failure: Some(why.into()),
        }
    }
}

/// The blocks of `n` rows over `size` ranks: rank `k` holds rows
/// `k·n/size .. (k+1)·n/size` (consecutive, sizes differing by at most one).
pub fn rows_of(rank: usize, size: usize, n: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    let at = |r: usize| r * n / size;
    at(rank.min(size))..at((rank + 1).min(size))
}

/// A density over a shard of the rows whose value and gradient are those
/// of the whole batch, summed over the ranks (see the [module docs](self)).
pub struct ShardedDensity<D, R> {
    density: D,
    reduce: R,
}

impl<D, R: Allreduce> ShardedDensity<D, R> {
    /// `density` evaluated on this rank's rows, summed with `reduce`.
    pub fn new(density: D, reduce: R) -> Self {
        Self { density, reduce }
    }

    /// The summing ranks.
    pub fn reduce(&self) -> &R {
        &self.reduce
    }

    /// The density of one shard.
    pub fn inner(&self) -> &D {
        &self.density
    }
}

/// Slots after the value and the gradient: failed ranks, the sum of their
/// ranks, and how many failed otherwise than with a non-finite value.
const FLAGS: usize = 3;

impl<D, R> LogDensity for ShardedDensity<D, R>
where
    D: LogDensity<Aux = ()>,
    D::Batch: Sized,
    R: Allreduce,
{
    type Batch = Shard<D::Batch>;
    type Aux = ();

    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Shard<D::Batch>,
        grad: &mut [f64],
    ) -> Result<(f64, ())> {
        let d = params.len();
        if grad.len() != d {
            return Err(Error::DimensionMismatch {
                what: "gradient buffer",
                expected: d,
                got: grad.len(),
            });
        }
        if batch.global == 0 || batch.local > batch.global {
            return Err(Error::config(
                "batch",
                format!(
                    "a shard of {} rows of a batch of {}",
                    batch.local, batch.global
                ),
            ));
        }
        // [value, gradient..., failed, sum of failed ranks, hard failures]
        let mut buf = vec![0.0; d + 1 + FLAGS];
        let mut own_err = None;
        let result = match (&batch.failure, &batch.rows) {
            (Some(why), _) => Some(Err(Error::Data(why.clone()))),
            (None, Some(rows)) if batch.local > 0 => {
                Some(self.density.value_and_grad(params, rows, &mut buf[1..=d]))
            }
            _ => None,
        };
        if let Some(result) = result {
            let (head, rest) = buf.split_at_mut(1);
            match result {
                Ok((v, ())) => {
                    let w = batch.local as f64 / batch.global as f64;
                    head[0] = w * v;
                    for g in &mut rest[..d] {
                        *g *= w;
                    }
                }
                Err(e) => {
                    let rank = self.reduce.rank() as f64;
                    buf[..=d].fill(0.0);
                    buf[d + 1] = 1.0;
                    buf[d + 2] = rank;
                    buf[d + 3] = if e.is_recoverable() { 0.0 } else { 1.0 };
                    own_err = Some(e);
                }
            }
        }
        self.reduce.sum(&mut buf)?;
        let failed = buf[d + 1];
        if failed > 0.0 {
            if let Some(e) = own_err {
                if self.reduce.size() == 1 {
                    return Err(e);
                }
                // The failing rank fails as the others do (the same error,
                // so every rank ends the run alike).
            }
            if buf[d + 3] == 0.0 {
                // Every failure was a non-finite value: a divergence here too.
                return Err(Error::NonFiniteLogDensity {
                    step: 0,
                    value: f64::NAN,
                    bad_grad: d,
                });
            }
            return Err(Error::Remote {
                rank: if failed == 1.0 {
                    buf[d + 2] as usize
                } else {
                    0
                },
                message: if failed == 1.0 {
                    "the gradient of its shard of the rows failed".into()
                } else {
                    format!("the gradient failed on {failed} ranks")
                },
                bad_input: false,
            });
        }
        grad.copy_from_slice(&buf[1..=d]);
        Ok((buf[0], ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Solo;
    use langevin_core::FnDensity;
    use std::sync::Mutex;

    /// Ranks simulated in one process: each "rank" adds its buffer to a
    /// shared accumulator; the test calls the ranks in order, then reads.
    #[test]
    fn shards_sum_to_the_whole_batch() {
        // f_b(θ) = mean_{i∈b} -(θ - x_i)²/2 + (-θ²/2)/N on rows x.
        let x: Vec<f64> = (0..10).map(|i| i as f64 * 0.3 - 1.0).collect();
        let n = x.len();
        let dens = FnDensity::new(move |t: &[f64], rows: &Vec<f64>, g: &mut [f64]| {
            let m = rows.len() as f64;
            let v = rows
                .iter()
                .map(|xi| -0.5 * (t[0] - xi).powi(2))
                .sum::<f64>()
                / m
                - 0.5 * t[0] * t[0] / n as f64;
            g[0] = rows.iter().map(|xi| -(t[0] - xi)).sum::<f64>() / m - t[0] / n as f64;
            v
        });
        let p = Params::from_vec(vec![0.7]);
        let batch: Vec<f64> = vec![x[1], x[4], x[5], x[9]];
        let mut g_whole = vec![0.0];
        let (v_whole, ()) = dens.value_and_grad(&p, &batch, &mut g_whole).unwrap();

        struct Parts(Mutex<Vec<Vec<f64>>>, usize);
        impl Allreduce for Parts {
            fn rank(&self) -> usize {
                self.1
            }
            fn size(&self) -> usize {
                2
            }
            fn sum(&self, buf: &mut [f64]) -> Result<()> {
                self.0.lock().unwrap().push(buf.to_vec());
                Ok(())
            }
        }
        // Shards: rows 0..5 and 5..10; the batch meets them in 2 and 2 rows.
        let mut parts = Vec::new();
        for (rank, rows) in [(0, vec![x[1], x[4]]), (1, vec![x[5], x[9]])] {
            let sd = ShardedDensity::new(&dens, Parts(Mutex::new(Vec::new()), rank));
            let mut g = vec![0.0];
            sd.value_and_grad(&p, &Shard::new(Some(rows), 2, 4), &mut g)
                .unwrap();
            parts.push(sd.reduce.0.lock().unwrap()[0].clone());
        }
        let v: f64 = parts.iter().map(|b| b[0]).sum();
        let g: f64 = parts.iter().map(|b| b[1]).sum();
        assert!((v - v_whole).abs() < 1e-14, "{v} vs {v_whole}");
        assert!((g - g_whole[0]).abs() < 1e-14);

        // One process with every row: the density itself, bit for bit.
        let solo = ShardedDensity::new(&dens, Solo);
        let mut g1 = vec![0.0];
        let (v1, ()) = solo
            .value_and_grad(&p, &Shard::new(Some(batch.clone()), 4, 4), &mut g1)
            .unwrap();
        assert_eq!((v1, g1[0]), (v_whole, g_whole[0]));
    }

    #[test]
    fn a_failing_shard_is_reported_and_a_divergence_stays_one() {
        let nan = FnDensity::new(|_: &[f64], _: &(), g: &mut [f64]| {
            g[0] = 0.0;
            f64::NAN
        });
        // A closure density does not check finiteness itself; a failing one:
        struct Fails;
        impl LogDensity for Fails {
            type Batch = ();
            type Aux = ();
            fn value_and_grad(&self, _: &Params, _: &(), _: &mut [f64]) -> Result<(f64, ())> {
                Err(Error::Data("shard 3 is unreadable".into()))
            }
        }
        let p = Params::from_vec(vec![0.0]);
        let b = Shard::new(Some(()), 1, 2);
        let mut g = vec![0.0];
        // A NaN value passes through the sum as a NaN (the transform's check
        // sees it), not as a failure.
        let (v, ()) = ShardedDensity::new(&nan, Solo)
            .value_and_grad(&p, &b, &mut g)
            .unwrap();
        assert!(v.is_nan());
        let e = ShardedDensity::new(Fails, Solo)
            .value_and_grad(&p, &b, &mut g)
            .unwrap_err();
        assert!(e.to_string().contains("shard 3 is unreadable"), "{e}");
        // A batch that claims more local rows than it has in all is refused.
        let bad = Shard::new(Some(()), 3, 2);
        assert!(ShardedDensity::new(&nan, Solo)
            .value_and_grad(&p, &bad, &mut g)
            .is_err());
    }

    #[test]
    fn row_blocks_cover_every_row_once() {
        for n in [0, 1, 7, 100] {
            for size in 1..6 {
                let mut next = 0;
                for r in 0..size {
                    let b = rows_of(r, size, n);
                    assert_eq!(b.start, next);
                    next = b.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
