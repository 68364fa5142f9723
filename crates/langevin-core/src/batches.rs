//! Where a run's batches come from.
//!
//! A [`BatchSource`] hands each chain its next batch. Its position in the
//! stream is the chain's *cursor*, plain serde data that a checkpoint saves
//! beside the transform state and the generator, so a resumed chain sees the
//! same batches as an uninterrupted one. Randomness (shuffling) comes from the
//! chain's own generator, so the batches depend only on `(seed, chain)`.
//!
//! * [`FullBatch`]: the same batch at every step (full-batch gradients).
//! * [`FnBatches`]: `f(chain, step)`, for batches that are a pure function of
//!   the step (a user's own data pipeline).
//! * [`ShuffledIndices`]: the cursor of epoch-wise reshuffled minibatches of
//!   row indices; a model crate turns the indices into a batch (see
//!   `langevin_models::Minibatches`).

use std::fmt::Debug;
use std::ops::Deref;

use rand::seq::SliceRandom;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::Result;
use crate::rng::ChainRng;

/// A batch handed to a transform: borrowed from the source (a full batch) or
/// made for this step (a minibatch).
pub enum BatchRef<'a, B> {
    Borrowed(&'a B),
    Owned(B),
}

impl<B> Deref for BatchRef<'_, B> {
    type Target = B;
    fn deref(&self) -> &B {
        match self {
            BatchRef::Borrowed(b) => b,
            BatchRef::Owned(b) => b,
        }
    }
}

/// The batches of every chain of a run.
pub trait BatchSource: Sync {
    /// What the log density reads.
    type Batch;
    /// A chain's position in its batch stream (saved in checkpoints).
    type Cursor: Clone + Debug + Send + Serialize + DeserializeOwned;

    /// The cursor of chain `chain` at the start of a run.
    fn cursor(&self, chain: usize) -> Self::Cursor;

    /// The batch of `chain`'s update number `step` (0-based), advancing its
    /// cursor; any randomness comes from the chain's generator `rng`.
    fn next<'a>(
        &'a self,
        chain: usize,
        step: u64,
        cursor: &mut Self::Cursor,
        rng: &mut ChainRng,
    ) -> Result<BatchRef<'a, Self::Batch>>;
}

/// The same batch at every step.
#[derive(Debug, Clone)]
pub struct FullBatch<B>(pub B);

impl<B: Sync> BatchSource for FullBatch<B> {
    type Batch = B;
    type Cursor = ();

    fn cursor(&self, _chain: usize) {}

    fn next<'a>(
        &'a self,
        _chain: usize,
        _step: u64,
        _cursor: &mut (),
        _rng: &mut ChainRng,
    ) -> Result<BatchRef<'a, B>> {
        Ok(BatchRef::Borrowed(&self.0))
    }
}

/// Batches from a function `f(chain, step)`.
#[derive(Debug, Clone)]
pub struct FnBatches<F>(pub F);

impl<B, F> BatchSource for FnBatches<F>
where
    F: Fn(usize, u64) -> B + Sync,
{
    type Batch = B;
    type Cursor = ();

    fn cursor(&self, _chain: usize) {}

    fn next<'a>(
        &'a self,
        chain: usize,
        step: u64,
        _cursor: &mut (),
        _rng: &mut ChainRng,
    ) -> Result<BatchRef<'a, B>> {
        Ok(BatchRef::Owned((self.0)(chain, step)))
    }
}

/// Position in a stream of minibatches of row indices `0..n`, reshuffled
/// with the chain's generator at the start of every epoch (the first
/// minibatch shuffles). A minibatch never straddles two epochs: the rows
/// left at the end of an epoch that do not fill one are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuffledIndices {
    order: Vec<u32>,
    pos: usize,
}

impl ShuffledIndices {
    /// The start of the stream over `n` rows.
    pub fn new(n: usize) -> Self {
        Self {
            order: (0..n as u32).collect(),
            pos: n,
        }
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.order.len()
    }

    /// Whether this cursor is a valid position over `n` rows (a permutation
    /// of `0..n` and a position inside it), for checking a saved cursor.
    pub fn is_valid_for(&self, n: usize) -> bool {
        if self.order.len() != n || self.pos > n {
            return false;
        }
        let mut seen = vec![false; n];
        self.order
            .iter()
            .all(|&i| (i as usize) < n && !std::mem::replace(&mut seen[i as usize], true))
    }

    /// Indices of the next minibatch of `size` rows, or `None` when a
    /// minibatch is every row (then nothing is drawn from `rng`).
    pub fn next(&mut self, size: usize, rng: &mut ChainRng) -> Option<&[u32]> {
        let n = self.order.len();
        if size >= n {
            return None;
        }
        if self.pos + size > n {
            self.order.shuffle(rng);
            self.pos = 0;
        }
        let idx = &self.order[self.pos..self.pos + size];
        self.pos += size;
        Some(idx)
    }
}

/// Minibatches of `size` row indices out of `n` rows (a `Vec<u32>` per
/// step, reshuffled every epoch with the chain's generator, see
/// [`ShuffledIndices`]); every row at every step when `size >= n`. For a
/// [`crate::LogDensity`] whose batch is the rows to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowBatches {
    n: usize,
    size: usize,
}

impl RowBatches {
    /// Minibatches of `size` rows out of `n` (both at least 1).
    pub fn new(n: usize, size: usize) -> crate::Result<Self> {
        if n == 0 || size == 0 {
            return Err(crate::Error::config(
                "batch_size",
                format!(
                    "need at least one row and a batch of at least one (n = {n}, size = {size})"
                ),
            ));
        }
        Ok(Self { n, size })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows per minibatch (at most `n`).
    pub fn size(&self) -> usize {
        self.size.min(self.n)
    }
}

impl BatchSource for RowBatches {
    type Batch = Vec<u32>;
    type Cursor = ShuffledIndices;

    fn cursor(&self, _chain: usize) -> ShuffledIndices {
        ShuffledIndices::new(self.n)
    }

    fn next<'a>(
        &'a self,
        _chain: usize,
        _step: u64,
        cursor: &mut ShuffledIndices,
        rng: &mut ChainRng,
    ) -> Result<BatchRef<'a, Vec<u32>>> {
        Ok(BatchRef::Owned(match cursor.next(self.size, rng) {
            Some(idx) => idx.to_vec(),
            None => (0..self.n as u32).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::chain_rng;

    #[test]
    fn shuffled_indices_round_trip_mid_epoch() {
        let mut rng = chain_rng(1, 0);
        let mut a = ShuffledIndices::new(10);
        let _ = a.next(3, &mut rng);
        let mut rng_b = rng.clone();
        let mut b: ShuffledIndices =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for _ in 0..7 {
            assert_eq!(
                a.next(3, &mut rng).map(|s| s.to_vec()),
                b.next(3, &mut rng_b).map(|s| s.to_vec())
            );
        }
        assert!(a.next(10, &mut rng).is_none());
        assert!(a.is_valid_for(10));
        assert!(!a.is_valid_for(9));
        let dup: ShuffledIndices = serde_json::from_str(r#"{"order":[0,0,2],"pos":0}"#).unwrap();
        assert!(!dup.is_valid_for(3));
    }

    #[test]
    fn row_batches_cover_every_row_per_epoch() {
        let src = RowBatches::new(10, 5).unwrap();
        let mut cur = src.cursor(0);
        let mut rng = chain_rng(3, 0);
        let mut rows: Vec<u32> = (0..2)
            .flat_map(|k| src.next(0, k, &mut cur, &mut rng).unwrap().to_vec())
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..10).collect::<Vec<u32>>());
        let all = RowBatches::new(4, 9).unwrap();
        let mut cur = all.cursor(0);
        assert_eq!(
            all.next(0, 0, &mut cur, &mut rng).unwrap().to_vec(),
            vec![0, 1, 2, 3]
        );
        assert!(RowBatches::new(0, 1).is_err() && RowBatches::new(3, 0).is_err());
    }

    #[test]
    fn every_epoch_visits_each_row_once() {
        let mut rng = chain_rng(7, 3);
        let mut c = ShuffledIndices::new(12);
        for _ in 0..5 {
            let mut rows: Vec<u32> = (0..3)
                .flat_map(|_| c.next(4, &mut rng).unwrap().to_vec())
                .collect();
            rows.sort_unstable();
            assert_eq!(rows, (0..12).collect::<Vec<u32>>());
        }
    }
}
